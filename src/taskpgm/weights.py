"""The weights stage: a relations artifact in, ``weights.json`` out.

It holds TaskPGM's exact weights (and the budgeted variant when a budget is
set), the baselines under the same caps, and TaskPGM's weights along a range of
rho. Only tasks whose expert learned (:func:`learned`) steer the solve; the
others are excluded, held at the uniform share, or kept (``mrf.untrusted``; the
math is :func:`taskpgm.core.mrf.solve_trusted`). Every parameter enters the
fingerprint, so nothing here can go stale; changing ``mrf.rho`` recomputes only
this stage and what follows. See docs/design.md, "Untrusted experts".
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from taskpgm import artifacts
from taskpgm.bootstrap import example_draws, weight_intervals
from taskpgm.config import AnchorConfig, MrfConfig
from taskpgm.core.convex import entropic_minimum, kl_divergence
from taskpgm.core.mixmin import gold_probability, mixmin_solve, task_mean_weights
from taskpgm.core.mixture import baseline_weights
from taskpgm.core.mrf import energy as energy_of
from taskpgm.core.mrf import solve_trusted, utility
from taskpgm.core.reference import REFERENCE_RHO, projected_solve, reference_affinity
from taskpgm.core.split import gain_model_terms, in_self_gain_units, split_terms
from taskpgm.core.stats import wilson_interval
from taskpgm.errors import InvalidInputError
from taskpgm.progress import say
from taskpgm.readers import WEIGHTS_FILE, Relations, open_weights

FloatArrayList = list[np.ndarray]
STAGE = "weights"
VERSION = 3  # 2: untrusted tasks leave the solve; 3: energies, the reference rows
# (mrf.anchor and mrf.energy: mixmin are new settings: a default anchor stays out of the
# fingerprint, so version 3's artifacts stay valid)


_LINEAR = {"split": "benefit", "gain-model": "gain-model benefit",
           "reference": "representativeness", "mixmin": "none"}
_KERNEL: dict[str, Callable[[Relations], str]] = {
    "affinity": lambda rel: f"affinity ({rel.info.get('config', {}).get('kernel', '?')} "
                            f"kernel, {rel.info.get('config', {}).get('pmi_form', '?')} PMI)",
    "split": lambda rel: "redundancy exp(-JSD/sigma)",
    "gain-model": lambda rel: "redundancy A diag|f''| A^T",
    "reference": lambda rel: "reference pairwise PMI + |lambda_min| I",
    "mixmin": lambda rel: "none (MixMin: the experts' ensemble loss)",
}


def learned(relations: Relations) -> tuple[np.ndarray, np.ndarray]:
    """Whether each task's expert beat the base model on its own probe examples.

    learned_i  <=>  lower end of the Wilson 95% interval of expert i's accuracy on
    probe(i) > the base model's accuracy on probe(i). Returns (learned, the (T, 2)
    intervals).
    """
    acc = relations.arrays["accuracy"]
    n = relations.arrays["probe_n"].astype(int)
    intervals = np.array([wilson_interval(round(acc[i + 1, i] * n[i]), int(n[i]))
                          for i in range(len(relations.tasks))])
    return intervals[:, 0] > acc[0], intervals


ENERGIES = ("affinity", "split", "gain-model", "reference")  # quadratic; mixmin is not one


def energy_terms(relations: Relations, energy: str, utility_kind: str
                 ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``F -> (quadratic matrix, linear term)`` of ``energy`` computed on the tasks F.

    * ``affinity``: S_FF and the utility ``utility_kind`` on F (:func:`taskpgm.core.mrf.utility`);
    * ``split``: R_FF = exp(−JSD/σ) and t_F, the signed benefit (:mod:`taskpgm.core.split`);
    * ``gain-model``: the second-order gain expansion on F (:mod:`taskpgm.core.split`);
    * ``reference``: the paper's S on F (:mod:`taskpgm.core.reference`) with u = S 1.
    """
    arrays = relations.arrays
    if energy not in ENERGIES:
        raise InvalidInputError(f"unknown mrf.energy {energy!r}; choose {', '.join(ENERGIES)}")

    def terms(free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        quad, lin = base_terms(free)
        if "target_pmi" in arrays and energy != "reference":  # target mode: what helps the target
            lin = target_benefit(arrays["target_pmi"][free], arrays["pmi"][np.ix_(free, free)])
        return quad, lin

    def base_terms(free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ix = np.ix_(free, free)
        if energy == "split":
            rows = np.concatenate(([0], free + 1))
            return split_terms(arrays["jsd"][np.ix_(rows, rows)], arrays["pmi"][ix])
        if energy == "gain-model":
            return gain_model_terms(arrays["pmi"][ix], arrays["accuracy"][0][free])
        if energy == "reference":
            s_ref, _ = reference_affinity(arrays["pmi_sequence"][ix])
            return s_ref, s_ref.sum(axis=1)
        s = relations.affinity[ix]
        return s, utility(utility_kind, s, arrays["pmi"][ix])  # type: ignore[arg-type]

    return terms


def target_benefit(target_pmi: np.ndarray, pmi: np.ndarray) -> np.ndarray:
    """τ_i = mean over targets k of PMI_i,target_k / ḡ, ḡ the mean self-gain (as in t)."""
    raw = np.asarray(target_pmi, dtype=np.float64).mean(axis=1)
    return in_self_gain_units(raw, pmi)[0]


def solve(
    relations: Relations, rho: float, *, budget: int | None, utility_kind: str,
    caps: np.ndarray | None, untrusted: str = "exclude", energy: str = "affinity",
    anchor: float = 0.0, prior: np.ndarray | None = None,
    example_weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit TaskPGM on the relations; the result as plain data (weights.json's shape).

    Tasks whose expert did not learn (:func:`learned`) do not steer the solve:
    ``untrusted="exclude"`` gives them 0, ``"uniform"`` holds them at min(1/T, cap),
    ``"keep"`` trusts them anyway (:func:`taskpgm.core.mrf.solve_trusted`). With a
    budget, untrusted tasks are never selected. When no expert learned there is
    nothing to go on: the uniform mixture (with a budget, an error).

    ``anchor`` λ > 0 adds λ KL(p ‖ ``prior``) (default uniform) to the energy
    (:func:`taskpgm.core.mrf.solve_trusted`). ``energy="mixmin"`` solves MixMin's loss
    instead (:func:`solve_mixmin`; ``example_weights`` replaces its probe items' weights,
    for a bootstrap draw).
    """
    if energy == "mixmin":
        return solve_mixmin(relations, caps=caps, untrusted=untrusted, anchor=anchor,
                            prior=prior, example_weights=example_weights)
    tasks = relations.tasks
    t = len(tasks)
    cap = np.full(t, np.inf) if caps is None else np.asarray(caps, dtype=np.float64)
    trusted = (np.ones(t, dtype=bool) if untrusted == "keep" else learned(relations)[0])
    hold = untrusted == "uniform"
    mass = 1.0 - (float(np.minimum(1.0 / t, cap[~trusted]).sum())
                  if hold and budget is None else 0.0)
    out: dict[str, Any] = {
        "method": "taskpgm" if budget is None else f"taskpgm-k{budget}",
        "rho": rho, "budget": budget, "energy_form": energy,
        "utility": ("target transfer" if "target_pmi" in relations.arrays and energy != "reference"
                    else utility_kind if energy == "affinity" else _LINEAR[energy]),
        "kernel": _KERNEL[energy](relations), "untrusted": untrusted,
        "target": list(relations.info.get("targets", [])) if energy != "reference" else [],
        "untrusted_tasks": [tasks[i] for i in np.flatnonzero(~trusted)],
    }
    terms = energy_terms(relations, energy, utility_kind)
    if not trusted.any() and budget is None:  # nothing learned, nothing to go on: uniform
        w = baseline_weights("uniform", [1] * t, caps=cap)
        s_all, u_all = terms(np.arange(t))
        return {**out, "energy": energy_of(w, s_all, rho, u_all),
                "kkt_residual": 0.0, "certificate": {},
                "weights": {name: float(v) for name, v in zip(tasks, w, strict=True)}}
    if not trusted.any():
        raise InvalidInputError(
            f"no expert beat the base model on its own task, so {out['method']} has no "
            "trusted relations to choose tasks by; train the experts longer (experts.steps, "
            "experts.lr) or set mrf.untrusted: keep to choose by them anyway")
    if float(cap[trusted].sum()) < mass - 1e-12:
        raise InvalidInputError(
            f"the {int(trusted.sum())} tasks whose experts beat the base model cannot hold "
            f"weight {mass:.3f} under their caps; train the experts longer (experts.steps), "
            "raise mrf.max_repeat, lower mixture.token_budget, or set mrf.untrusted: keep")
    sol = solve_trusted(rho, trusted, terms, caps=cap, budget=budget, hold_uniform=hold,
                        anchor=anchor, prior=prior)
    out.update(energy=sol.energy, kkt_residual=sol.kkt_residual,
               certificate=sol.certificate,
               weights={name: float(w) for name, w in zip(tasks, sol.weights, strict=True)})
    if anchor > 0:
        out.update(anchor=anchor, kl=sol.kl, objective=sol.energy + anchor * sol.kl)
    if budget is not None:
        out["selected"] = [tasks[i] for i in sol.selected or []]
        out["greedy_gains"] = sol.greedy_gains
    return out


def mixmin_inputs(relations: Relations) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, N) each expert's P(gold | x) on every probe example, (N,) the examples' tasks
    (targets after the pool's T) and (N,) MixMin's example weights: the mean over the pool's
    tasks, or over the targets in target mode, of the mean over each task's items."""
    arrays = relations.arrays
    if "probe_loglik" not in arrays:
        raise InvalidInputError(
            f"the relations artifact {relations.path} predates MixMin (no probe_loglik); "
            "rerun the relations stage (`taskpgm run` recomputes it from the signals)")
    gold = gold_probability(arrays["probe_loglik"][1:], arrays["probe_tokens"])
    task_of = arrays["probe_task"].astype(np.int64)
    t = len(relations.tasks)
    k = len(relations.info.get("targets", []))
    aims = range(t, t + k) if k else range(t)
    return gold, task_of, task_mean_weights(task_of, list(aims))


def solve_mixmin(relations: Relations, *, caps: np.ndarray | None, untrusted: str,
                 anchor: float = 0.0, prior: np.ndarray | None = None,
                 example_weights: np.ndarray | None = None) -> dict[str, Any]:
    """MixMin's weights (:mod:`taskpgm.core.mixmin`) as :func:`solve` returns them: untrusted
    experts excluded, held at the uniform share, or kept, as for the energies."""
    tasks = relations.tasks
    t = len(tasks)
    cap = np.full(t, np.inf) if caps is None else np.asarray(caps, dtype=np.float64)
    trusted = np.ones(t, dtype=bool) if untrusted == "keep" else learned(relations)[0]
    gold, _, w = mixmin_inputs(relations)
    if example_weights is not None:
        w = example_weights
    out: dict[str, Any] = {
        "method": "taskpgm", "rho": None, "budget": None, "energy_form": "mixmin",
        "utility": "none", "kernel": _KERNEL["mixmin"](relations), "untrusted": untrusted,
        "target": list(relations.info.get("targets", [])),
        "untrusted_tasks": [tasks[i] for i in np.flatnonzero(~trusted)],
    }
    if not trusted.any():
        uniform = baseline_weights("uniform", [1] * t, caps=cap)
        return {**out, "energy": float(-(w @ np.log(uniform @ gold))), "kkt_residual": 0.0,
                "certificate": {}, "weights": dict(zip(tasks, map(float, uniform), strict=True))}
    held = np.minimum(1.0 / t, cap) if untrusted == "uniform" else np.zeros(t)
    got = mixmin_solve(gold, w, caps=cap, free=trusted, held=held, strength=anchor,
                       prior=prior)
    out.update(energy=got.value, kkt_residual=max(got.certificate.values()),
               certificate=dict(got.certificate),
               weights={name: float(v) for name, v in zip(tasks, got.p, strict=True)})
    if anchor > 0:
        out["anchor"] = anchor
    return out


def resolve_prior(anchor: AnchorConfig, tasks: Sequence[str], train_sizes: Sequence[int],
                  temperature: float) -> np.ndarray:
    """The anchor's prior over ``tasks``: uniform, size, temperature, or a JSON file
    {task: weight} that names every task (normalized to sum 1)."""
    kind = anchor.prior
    if kind in ("uniform", "size", "temperature"):
        return baseline_weights(kind, list(train_sizes), tau=temperature)  # type: ignore[arg-type]
    path = Path(kind).expanduser()
    if not path.is_file():
        raise InvalidInputError(f"mrf.anchor.prior {kind!r} is neither uniform, size, "
                                "temperature nor a file; give one of those or the path of a "
                                "JSON file {task: weight}")
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InvalidInputError(f"{path}: not a JSON object {{task: weight}}: {err}") from err
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{path}: expected a JSON object {{task: weight}}")
    missing = [name for name in tasks if name not in raw]
    extra = sorted(set(raw) - set(tasks))
    if missing or extra:
        raise InvalidInputError(f"{path}: the prior must name exactly the run's tasks; "
                                f"missing {missing[:5]}, unknown {extra[:5]}")
    try:
        q = np.array([float(raw[name]) for name in tasks])
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"{path}: every weight must be a number: {err}") from err
    if not np.isfinite(q).all() or (q < 0).any() or q.sum() <= 0:
        raise InvalidInputError(f"{path}: weights must be finite, >= 0, and not all 0")
    out: np.ndarray = q / q.sum()
    return out


@dataclass(frozen=True)
class MethodInputs:
    """What a method of the weights stage may read: the relations, the ``mrf`` section,
    the caps every method must respect, the train sizes, the temperature of the size
    baseline and the reference rows (the paper's exact and projected solves)."""

    relations: Relations
    cfg: MrfConfig
    caps: np.ndarray
    train_sizes: list[int]
    temperature: float
    reference: dict[str, Any]

    def as_weights(self, w: Sequence[float] | np.ndarray) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.relations.tasks, w, strict=True)}


#: A method: its record for methods.json (``weights`` {task: share} under the caps, and
#: whatever certificate or intervals it has), from the stage's inputs.
Method = Callable[[MethodInputs], dict[str, Any]]


def _baseline(kind: str) -> Method:
    def weights(given: MethodInputs) -> dict[str, Any]:
        w = baseline_weights(kind, given.train_sizes, tau=given.temperature,  # type: ignore[arg-type]
                             caps=given.caps)
        return {"weights": given.as_weights(w)}
    return weights


#: Every method beside TaskPGM that ``evaluation.baselines`` may name. A new method is a
#: function of :class:`MethodInputs` registered here (and its name added to
#: ``config.BASELINES``): the weights stage, methods.json, the evaluation and the report
#: then treat it like the others.
METHODS: dict[str, Method] = {
    "uniform": _baseline("uniform"),
    "size": _baseline("size"),
    "temperature": _baseline("temperature"),
    "reference": lambda given: dict(given.reference["exact"]),
    # MixMin from the experts' predictions, no anchor, untrusted experts as mrf.untrusted
    "mixmin": lambda given: with_intervals(
        given.relations, solve_mixmin(given.relations, caps=given.caps,
                                      untrusted=given.cfg.untrusted),
        0.0, budget=None, utility_kind="representativeness", caps=given.caps,
        untrusted=given.cfg.untrusted, energy="mixmin"),
}


def rho_grid(n_tasks: int, rho: float, points: int) -> np.ndarray:
    """The rho values of the path: ``points`` evenly from 0 to max(2/T, 2ρ), so the path
    always passes the chosen ρ and shows where the weights go on either side of it."""
    return np.linspace(0.0, max(2.0 / n_tasks, 2.0 * rho), points)


def rho_path(relations: Relations, cfg: MrfConfig, caps: np.ndarray, points: int,
             rho: float | None = None, prior: np.ndarray | None = None
             ) -> list[dict[str, Any]]:
    """The unbudgeted solve at every point of :func:`rho_grid` (around ``rho``, by default
    ``cfg.rho``): ``[{"rho", "weights" (in task order)}]``, what methods.json holds. Empty
    for MixMin, which has no rho."""
    if cfg.energy == "mixmin":
        return []
    out = []
    for r in rho_grid(len(relations.tasks), cfg.rho if rho is None else rho, points):
        fit = solve(relations, float(r), budget=None, utility_kind=cfg.utility, caps=caps,
                    untrusted=cfg.untrusted, energy=cfg.energy,
                    anchor=cfg.anchor.strength, prior=prior)
        out.append({"rho": float(r), "weights": list(fit["weights"].values())})
    return out


def anchor_grid(points: int) -> list[float]:
    """The λ values of the anchor path: 0 (the plain energy), then ``points − 2`` values
    spaced evenly in log from 1e-4 to 1e2, then inf (the prior itself)."""
    inner = np.logspace(-4, 2, max(points - 2, 1)).tolist()
    return [0.0, *inner, math.inf]


def anchor_path(relations: Relations, cfg: MrfConfig, caps: np.ndarray, prior: np.ndarray,
                points: int, rho: float | None = None) -> list[dict[str, Any]]:
    """The solve at every λ of :func:`anchor_grid` at the run's rho (and energy):
    ``[{"strength", "weights" (in task order), "kl"}]``; the last point, λ = ∞ (``strength``
    None, JSON null), is the prior under the caps (its KL projection onto them)."""
    r = cfg.rho if rho is None else rho
    tasks = relations.tasks
    out = []
    for lam in anchor_grid(points):
        if math.isinf(lam):
            w = anchored_limit(prior, caps)
        else:
            fit = solve(relations, r, budget=None, utility_kind=cfg.utility, caps=caps,
                        untrusted=cfg.untrusted, energy=cfg.energy, anchor=lam, prior=prior)
            w = np.array([fit["weights"][t] for t in tasks])
        out.append({"strength": None if math.isinf(lam) else lam,
                    "weights": [float(v) for v in w], "kl": kl_divergence(w, prior)})
    return out


def anchored_limit(prior: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """The λ → ∞ end of the anchor path: the KL projection of the prior onto the capped
    simplex (the prior itself when it fits under the caps)."""
    cap = np.asarray(caps, dtype=np.float64)
    if (prior <= cap + 1e-15).all():
        return prior.copy()
    return entropic_minimum(np.zeros(prior.size), 1.0, prior, cap)


def ensure_weights(
    relations: Relations,
    cfg: MrfConfig,
    *,
    caps: np.ndarray,
    train_sizes: Sequence[int],
    baselines: Sequence[str],
    temperature: float,
    rho_path_points: int = 25,
    root: Path | None = None,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Compute (or reuse) every method's weights under the same caps.

    Returns ``weights.json``'s content with the artifact's ``fingerprint`` added,
    whether it was computed now or reused.
    """
    mrf = cfg.model_dump()
    if not cfg.anchor.strength and cfg.anchor.prior == "uniform":
        del mrf["anchor"]  # the default anchor (none) keeps version 3's fingerprints
    prior = resolve_prior(cfg.anchor, relations.tasks, train_sizes, temperature)
    if cfg.anchor.prior not in ("uniform", "size", "temperature"):
        mrf["anchor"]["prior_weights"] = [round(float(v), 12) for v in prior]  # the file's
    params = {"mrf": mrf, "caps": [round(float(c), 12) for c in caps],
              "sizes": list(map(int, train_sizes)), "baselines": list(baselines),
              "temperature": temperature, "path": rho_path_points}
    fp = artifacts.fingerprint(STAGE, VERSION, [relations.fingerprint], params, {})

    def compute(tmp: Path) -> dict[str, Any]:
        tasks = relations.tasks
        methods: dict[str, dict[str, Any]] = {}
        # each method's CPU seconds (solve and bootstrap draws) go to the manifest, not to
        # weights.json, whose bytes must not depend on the machine's speed; weights.json
        # keeps what the seconds were spent on (compute_record), the same on every machine
        cpu: dict[str, float] = {}
        draws = len(bootstrap_draws(relations))
        for budget in ([None] if cfg.budget is None else [None, cfg.budget]):
            settings: dict[str, Any] = {"budget": budget, "utility_kind": cfg.utility, "caps": caps,
                                        "untrusted": cfg.untrusted, "energy": cfg.energy,
                                        "anchor": cfg.anchor.strength, "prior": prior}
            started = time.process_time()
            fit = solve(relations, cfg.rho, **settings)
            fit = with_intervals(relations, fit, cfg.rho, **settings)
            methods[fit["method"]] = {**fit, "compute": compute_record(relations, fit, draws)}
            cpu[fit["method"]] = round(time.process_time() - started, 4)
        main = methods["taskpgm"]
        ref = reference_rows(relations, caps)
        given = MethodInputs(relations, cfg, caps, list(map(int, train_sizes)), temperature, ref)
        for kind in baselines:
            started = time.process_time()
            fit = {**METHODS[kind](given), "method": kind}
            methods[kind] = {**fit, "compute": compute_record(relations, fit, draws)}
            cpu[kind] = round(time.process_time() - started, 4)
        path = rho_path(relations, cfg, caps, rho_path_points, prior=prior)
        data = {"tasks": tasks, "chosen": main_name(cfg), "methods": methods,
                "reference": ref, "rho_path": path, "caps": [float(c) for c in caps],
                "relations": relations.fingerprint,
                "prior": {"name": cfg.anchor.prior, "weights": [float(v) for v in prior]}}
        if cfg.anchor.strength > 0:  # the λ path beside the rho path
            data["anchor"] = {"prior": cfg.anchor.prior, "strength": cfg.anchor.strength,
                              "prior_weights": [float(v) for v in prior]}
            data["anchor_path"] = anchor_path(relations, cfg, caps, prior, rho_path_points)
        (tmp / WEIGHTS_FILE).write_text(json.dumps(data, indent=1))
        say(f"weights: rho={cfg.rho:g} energy {main['energy']:.5f}, "
            f"KKT residual {main['kkt_residual']:.1e}", stream)
        return {"relations": relations.fingerprint, "params": params, "method_cpu_s": cpu}

    found, computed = artifacts.ensure(STAGE, STAGE, fp, compute, root=root, stream=stream)
    if not computed:
        say(f"weights: reusing {found}", stream)
    return open_weights(found)


def compute_record(relations: Relations, fit: dict[str, Any], draws: int) -> dict[str, int]:
    """What a method's weights cost, in counts that are the same on every machine: the
    solves it ran (its own and one per bootstrap draw it has intervals from) and the
    models and probe scorings it read (the experts' and the base's; 0 for a baseline that
    reads only the task sizes). Its CPU seconds are in the artifact's manifest."""
    reads_models = "energy_form" in fit or "certificate" in fit
    models = len(relations.tasks) + 1 if reads_models else 0
    probe = int(relations.info.get("probe_examples", 0)) if reads_models else 0
    solves = (1 + (draws if "intervals" in fit else 0)) if reads_models else 0
    return {"solves": solves, "models_read": models, "probe_scorings": models * probe}


def bootstrap_draws(relations: Relations) -> list[Relations]:
    """The relations of every bootstrap draw (:mod:`taskpgm.bootstrap`); empty without."""
    arrays = relations.arrays
    if "boot_affinity" not in arrays:
        return []
    return [Relations(relations.path, relations.fingerprint, relations.tasks, {
        **arrays, "jsd": arrays["boot_jsd"][b], "pmi": arrays["boot_pmi"][b],
        "pmi_sequence": arrays["boot_pmi_sequence"][b], "affinity": arrays["boot_affinity"][b]},
        relations.info) for b in range(arrays["boot_affinity"].shape[0])]


def with_intervals(relations: Relations, fit: dict[str, Any], rho: float, *,
                   budget: int | None, utility_kind: str, caps: np.ndarray | None,
                   untrusted: str, energy: str, anchor: float = 0.0,
                   prior: np.ndarray | None = None) -> dict[str, Any]:
    """``fit`` with ``intervals``: the same solve on every bootstrap draw of the relations
    (:mod:`taskpgm.bootstrap`), summarized per task; unchanged when there are no draws.
    MixMin's draws resample its probe items the same way (:func:`mixmin_draws`)."""
    replicates = bootstrap_draws(relations)
    if not replicates:
        return fit
    draws = []
    settings: dict[str, Any] = {"budget": budget, "utility_kind": utility_kind, "caps": caps,
                                "untrusted": untrusted, "energy": energy, "anchor": anchor,
                                "prior": prior}
    if energy == "mixmin":
        for w in mixmin_draws(relations, len(replicates)):
            got = solve(relations, rho, **settings, example_weights=w)
            draws.append([got["weights"][t] for t in relations.tasks])
        return {**fit, "intervals": weight_intervals(np.array(draws), relations.tasks)}
    for replicate in replicates:
        got = solve(replicate, rho, **settings)
        draws.append([got["weights"][t] for t in relations.tasks])
    return {**fit, "intervals": weight_intervals(np.array(draws), relations.tasks)}


def mixmin_draws(relations: Relations, draws: int) -> FloatArrayList:
    """MixMin's example weights under ``draws`` block-bootstrap draws of the probe items
    (:func:`taskpgm.bootstrap.example_draws`, the relations' number of blocks)."""
    _, task_of, w = mixmin_inputs(relations)
    blocks = int(relations.info.get("config", {}).get("bootstrap_blocks", 64))
    return list(example_draws(task_of, w, draws, blocks))


def share_with_interval(relations: Relations, members: Sequence[str], rho: float, *,
                        utility_kind: str, caps: np.ndarray | None, untrusted: str,
                        energy: str) -> dict[str, float]:
    """The total weight of ``members`` and its 5-95% interval over the bootstrap draws."""
    def share(rel: Relations) -> float:
        fit = solve(rel, rho, budget=None, utility_kind=utility_kind, caps=caps,
                    untrusted=untrusted, energy=energy)
        return float(sum(fit["weights"][t] for t in members))

    draws = [share(rel) for rel in bootstrap_draws(relations)]
    lo, hi = np.quantile(draws, [0.05, 0.95]) if draws else (np.nan, np.nan)
    return {"family": share(relations), "lo": float(lo), "hi": float(hi)}


def reference_rows(relations: Relations, caps: np.ndarray) -> dict[str, Any]:
    """The paper's setting twice: solved exactly (under the run's caps, every task trusted
    as the paper does) and as its code solves it (the affine-hull KKT point projected
    onto the simplex, no caps), with the energy of each under the reference energy."""
    exact = solve(relations, REFERENCE_RHO, budget=None, utility_kind="representativeness",
                  caps=caps, untrusted="keep", energy="reference")
    exact["method"] = "reference"
    s_ref, shift = reference_affinity(relations.arrays["pmi_sequence"])
    p = projected_solve(s_ref, REFERENCE_RHO)
    tasks = relations.tasks
    projected = {"method": "reference-projected", "rho": REFERENCE_RHO,
                 "energy": energy_of(p, s_ref, REFERENCE_RHO),
                 "weights": {name: float(v) for name, v in zip(tasks, p, strict=True)}}
    return {"exact": exact, "projected": projected,
            "shift": shift}


def main_name(cfg: MrfConfig) -> str:
    """The method a run reports as its mixture: TaskPGM, budgeted when a budget is set."""
    return "taskpgm" if cfg.budget is None else f"taskpgm-k{cfg.budget}"
