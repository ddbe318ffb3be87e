"""The model-free stages as fingerprinted artifacts: relations and weights.

* ``relations`` reads a signals artifact and writes ``relations.safetensors``
  (raw JSD over base + experts, displacement cosine, transfer PMI, the cross
  log-likelihood matrix L, the affinity S, every model's probe accuracy and
  each task's probe count) with a manifest holding the task order and what
  the PSD projection changed.
* ``weights`` reads the relations and writes ``weights.json``: TaskPGM's
  exact weights (and the budgeted variant when a budget is set), the
  baselines under the same caps, and the weights along a range of rho.
  Only tasks whose expert learned (:func:`learned`) steer the solve; the
  others are held at the uniform share, excluded or kept (``mrf.untrusted``).

Both are pure functions of their parents and parameters, so they take
seconds and changing ``mrf.rho`` recomputes only ``weights`` and what follows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from safetensors.numpy import load_file, save_file

from taskpgm import artifacts
from taskpgm.config import MrfConfig, RelationsConfig
from taskpgm.errors import InvalidInputError
from taskpgm.mixture import baseline_weights
from taskpgm.mrf import TaskMixtureMRF, energy, utility
from taskpgm.predictions import from_signals
from taskpgm.relations import AffinityInfo, affinity, displacement_cosine, jsd_matrix, transfer_pmi
from taskpgm.signals import Signals
from taskpgm.stats import wilson_interval

RELATIONS_VERSION = 2  # 2: probe_n, each task's probe count
WEIGHTS_VERSION = 2  # 2: untrusted tasks (experts that did not learn) leave the solve


@dataclass(frozen=True)
class Relations:
    """A finished relations artifact."""

    path: Path
    fingerprint: str
    tasks: list[str]
    arrays: dict[str, np.ndarray]
    info: dict[str, Any]

    @property
    def affinity(self) -> np.ndarray:
        return self.arrays["affinity"]


def _say(stream: TextIO | None, text: str) -> None:
    print(text, file=stream or sys.stderr, flush=True)


def ensure_relations(
    signals: Signals,
    tasks: Sequence[str],
    cfg: RelationsConfig,
    *,
    correct_sets: Sequence[Sequence[int]] | None = None,
    root: Path | None = None,
    stream: TextIO | None = None,
) -> Relations:
    """Compute (or reuse) the relations of a signals artifact."""
    signals_fp = str(signals.manifest.get("fingerprint", signals.path.name))
    fp = artifacts.fingerprint("relations", RELATIONS_VERSION, [signals_fp, *tasks],
                               cfg.model_dump(), RelationsConfig().model_dump())
    found = artifacts.find("relations", "relations", fp, root=root)
    if found is None:
        _say(stream, f"relations: {len(tasks)} tasks from {signals.path.name}")
        pred = from_signals(signals, tasks, normalization=cfg.normalization,
                            correct_sets=correct_sets)
        jsd = jsd_matrix(pred.rows, weights=pred.row_weights)
        pmi = transfer_pmi(pred.loglik, pred.tokens, pred.task_of)
        per_token = pred.loglik / pred.tokens
        # L_mj = mean over probe(j) of l_m(x) / n(x): every PMI variant derives from it.
        cross = np.stack([per_token[:, pred.task_of == j].mean(axis=1)
                          for j in range(len(tasks))], axis=1)
        s, info = affinity(jsd, pmi, cfg.alpha, kernel=cfg.kernel, pmi_form=cfg.pmi_form,
                           names=list(tasks), return_info=True)
        assert isinstance(info, AffinityInfo)
        arrays = {
            "jsd": jsd, "displacement": displacement_cosine(jsd, names=list(tasks)),
            "pmi": pmi, "cross_loglik": cross, "affinity": s,
            "accuracy": pred.accuracy(),
            "probe_n": np.bincount(pred.task_of, minlength=len(tasks)).astype(np.float64),
        }
        manifest: dict[str, Any] = {
            "tasks": list(tasks), "models": pred.models, "signals": signals_fp,
            "config": cfg.model_dump(),
            "psd": {"clipped_eigenvalues": list(info.clipped_eigenvalues),
                    "correction_norm": info.correction_norm, "pmi_scale": info.pmi_scale,
                    "jsd_scale": info.jsd_scale},
            "probe_examples": int(pred.task_of.size),
        }
        with artifacts.write("relations", "relations", fp, manifest, root=root) as tmp:
            save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()},
                      str(tmp / "relations.safetensors"))
        found = artifacts.find("relations", "relations", fp, root=root)
        assert found is not None
    else:
        _say(stream, f"relations: reusing {found}")
    return open_relations(found)


def open_relations(path: Path) -> Relations:
    """Read a finished relations artifact."""
    manifest = artifacts.read_manifest(path)
    arrays = load_file(str(path / "relations.safetensors"))
    return Relations(path, str(manifest["fingerprint"]), list(manifest["tasks"]), arrays,
                     manifest)


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


def solve(
    relations: Relations, rho: float, *, budget: int | None, utility_kind: str,
    caps: np.ndarray | None, untrusted: str = "exclude",
) -> dict[str, Any]:
    """Fit TaskPGM on the relations; the result as plain data (weights.json's shape).

    Tasks whose expert did not learn (:func:`learned`) do not steer the solve: with
    ``untrusted="exclude"`` f_i = 0, with ``"uniform"`` each keeps f_i = min(1/T, cap_i),
    and the trusted tasks F share m = 1 - sum f by the exact minimizer of E restricted to
    F (utility computed on F too). Since E(m q) = m^2 (1/2 q^T S_FF q - (rho/m) u^T q),
    that is m q* with q* the minimizer on the simplex at rho/m under caps c_F/m, so rho =
    1/T is still uniform under ``"uniform"``. With a budget, untrusted tasks are never
    selected. When no expert learned there is nothing to go on: the uniform mixture (with
    a budget, an error).
    """
    tasks = relations.tasks
    t = len(tasks)
    cap = np.full(t, np.inf) if caps is None else np.asarray(caps, dtype=np.float64)
    trusted = (np.ones(t, dtype=bool) if untrusted == "keep" else learned(relations)[0])
    fixed = np.zeros(t)
    if untrusted == "uniform" and budget is None:
        fixed[~trusted] = np.minimum(1.0 / t, cap[~trusted])
    free = np.flatnonzero(trusted)
    mass = 1.0 - float(fixed.sum())
    out: dict[str, Any] = {
        "method": "taskpgm" if budget is None else f"taskpgm-k{budget}",
        "rho": rho, "budget": budget, "utility": utility_kind, "untrusted": untrusted,
        "untrusted_tasks": [tasks[i] for i in np.flatnonzero(~trusted)],
    }
    if free.size == 0 and budget is None:  # nothing learned, nothing to go on: uniform
        w = baseline_weights("uniform", [1] * t, caps=cap)
        u_all = utility(utility_kind, relations.affinity,  # type: ignore[arg-type]
                        relations.arrays["pmi"])
        return {**out, "energy": energy(w, relations.affinity, rho, u_all),
                "kkt_residual": 0.0, "certificate": {},
                "weights": {name: float(v) for name, v in zip(tasks, w, strict=True)}}
    if free.size == 0:
        raise InvalidInputError(
            f"no expert beat the base model on its own task, so {out['method']} has no "
            "trusted relations to choose tasks by; train the experts longer (experts.steps, "
            "experts.lr) or set mrf.untrusted: keep to choose by them anyway")
    if float(cap[free].sum()) < mass - 1e-12:
        raise InvalidInputError(
            f"the {free.size} tasks whose experts beat the base model cannot hold weight "
            f"{mass:.3f} under their caps; train the experts longer (experts.steps), raise "
            "mrf.max_repeat, lower mixture.token_budget, or set mrf.untrusted: keep")
    s = relations.affinity[np.ix_(free, free)]
    u = utility(utility_kind, s,  # type: ignore[arg-type]
                relations.arrays["pmi"][np.ix_(free, free)])
    k = None if budget is None else min(budget, free.size)
    model = TaskMixtureMRF(rho / mass, caps=cap[free] / mass, budget=k).fit(s, utility=u)
    weights = fixed.copy()
    weights[free] = mass * model.weights_
    out.update(energy=mass * mass * model.energy_, kkt_residual=model.kkt_residual_,
               certificate=model.certificate_,
               weights={name: float(w) for name, w in zip(tasks, weights, strict=True)})
    if budget is not None:
        out["selected"] = [tasks[free[j]] for j in model.selected_ or []]
        out["greedy_gains"] = model.greedy_gains_
    return out


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
    """Compute (or reuse) every method's weights under the same caps."""
    params = {"mrf": cfg.model_dump(), "caps": [round(float(c), 12) for c in caps],
              "sizes": list(map(int, train_sizes)), "baselines": list(baselines),
              "temperature": temperature, "path": rho_path_points}
    fp = artifacts.fingerprint("weights", WEIGHTS_VERSION, [relations.fingerprint], params, {})
    found = artifacts.find("weights", "weights", fp, root=root)
    if found is not None:
        _say(stream, f"weights: reusing {found}")
        data: dict[str, Any] = json.loads((found / "weights.json").read_text())
        return data
    tasks = relations.tasks
    t = len(tasks)
    methods: dict[str, dict[str, Any]] = {}
    main = solve(relations, cfg.rho, budget=None, utility_kind=cfg.utility, caps=caps,
                 untrusted=cfg.untrusted)
    methods["taskpgm"] = main
    if cfg.budget is not None:
        methods[main_name(cfg)] = solve(relations, cfg.rho, budget=cfg.budget,
                                        utility_kind=cfg.utility, caps=caps,
                                        untrusted=cfg.untrusted)
    for kind in baselines:
        w = baseline_weights(kind, train_sizes, tau=temperature, caps=caps)  # type: ignore[arg-type]
        methods[kind] = {"method": kind,
                         "weights": {name: float(v) for name, v in zip(tasks, w, strict=True)}}
    top = max(2.0 / t, 2.0 * cfg.rho)
    grid = np.linspace(0.0, top, rho_path_points)
    path = []
    for rho in grid:
        fit = solve(relations, float(rho), budget=None, utility_kind=cfg.utility, caps=caps,
                    untrusted=cfg.untrusted)
        path.append({"rho": float(rho), "weights": list(fit["weights"].values())})
    data = {"tasks": tasks, "chosen": main_name(cfg), "methods": methods,
            "rho_path": path, "caps": [float(c) for c in caps], "relations": relations.fingerprint}
    manifest = {"relations": relations.fingerprint, "params": params}
    with artifacts.write("weights", "weights", fp, manifest, root=root) as tmp:
        (tmp / "weights.json").write_text(json.dumps(data, indent=1))
    _say(stream, f"weights: rho={cfg.rho:g} energy {main['energy']:.5f}, "
                 f"KKT residual {main['kkt_residual']:.1e}")
    data["fingerprint"] = fp
    return data


def main_name(cfg: MrfConfig) -> str:
    """The method a run reports as its mixture: TaskPGM, budgeted when a budget is set."""
    return "taskpgm" if cfg.budget is None else f"taskpgm-k{cfg.budget}"
