"""The decision benchmark's protocol: its pools, its metric, one training at a time, and
the phases that choose (dev) and report (test). Pre-registered in docs/results-2026-12-01.md.

It runs on taskpgm's public modules (the pipeline, ``inputs``, ``evaluation.Recipe``,
``RunDir``, the swarm and the weights' solve), never on a private name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quality.ledger import Ledger, machine
from taskpgm import config as config_mod
from taskpgm.core.mixture import Sampler, apply_caps
from taskpgm.core.stats import seeds_for_power
from taskpgm.evaluation import Recipe, ensure_evaluation
from taskpgm.inputs import EvalSet, eval_set, load_tasks, mean_train_tokens
from taskpgm.pipeline import run
from taskpgm.readers import open_relations
from taskpgm.rundir import RunDir
from taskpgm.swarm import draw_mixtures, fidelity, fit_regmix, regmix_weights, spearman
from taskpgm.tasks.schema import examples_fingerprint
from taskpgm.weights import energy_terms, solve
from taskpgm.workload import plan_of

ROOT = Path(__file__).resolve().parents[2]  # the repository: benchmarks/quality/ is two down
LEDGERS = ROOT / "benchmarks" / "results" / "mixture_quality"
DEV_SEEDS = (100, 101, 102, 103)  # the pilot's; candidates use the first two
TEST_SEED0 = 1000
POWER_DIFF = 0.02
CONCENTRATION = 1.0


@dataclass(frozen=True)
class Pool:
    name: str
    config: str
    budgets: tuple[int, ...]
    good: str  # "family-uniform" or "swarm-best"
    families: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> members


POOLS = {
    "redundancy": Pool("redundancy", "configs/mixture-redundancy.yaml", (6000, 12000, 24000),
                       "family-uniform",
                       {"intent": ("intent_a", "intent_b", "intent_c")}),
    "arith12": Pool("arith12", "configs/mixture-quality.yaml", (4000, 8000, 16000),
                    "swarm-best"),
}

#: (name, mrf.energy, rho, mrf.untrusted) of the TaskPGM variants trained on dev.
CANDIDATES: tuple[tuple[str, str, float, str], ...] = (
    ("taskpgm", "affinity", 0.0, "exclude"),  # today's default
    ("reference", "reference", 0.2, "keep"),
    *((f"split(rho={rho:g},{pol})", "split", rho, pol)
      for rho in (0.0, 0.5, 1.0) for pol in ("exclude", "keep")),
)
#: (label, energy, rho or "1/T") whose fidelity is measured.
FIDELITY = (("affinity rho=0", "affinity", 0.0), ("affinity rho=1/T", "affinity", "1/T"),
            *((f"split rho={r:g}", "split", r) for r in (0.0, 0.25, 0.5, 1.0, 2.0)),
            ("reference", "reference", 0.2))


#: How far a ledger entry's weights may be from the ones a rerun asks for (same mixture).
WEIGHT_TOLERANCE = 1e-4



def family_of(pool: Pool, tasks: list[str]) -> dict[str, str]:
    member = {m: fam for fam, ms in pool.families.items() for m in ms}
    return {t: member.get(t, t) for t in tasks}


def split_of(phase: str) -> str:
    """The eval split a phase's trainings are scored on: ``test`` for the test phase only;
    the sweep, the pilot, the swarm and the dev choices all read ``dev``."""
    return "test" if phase == "test" else "dev"


def metric(rows: list[dict[str, Any]], split: str, field_: str = "accuracy",
           families: dict[str, str] | None = None) -> float:
    """Macro mean of ``field_`` over the split's tasks, or over families (the mean of each
    family's member tasks, then over families)."""
    per = {r["task"]: float(r[field_]) for r in rows if r["split"] == split}
    if not per:
        return float("nan")
    if families is None:
        return float(np.mean(list(per.values())))
    groups: dict[str, list[float]] = {}
    for task, v in per.items():
        groups.setdefault(families[task], []).append(v)
    return float(np.mean([np.mean(v) for v in groups.values()]))



def timed_pipeline(ledger: Ledger, cfg: Any, run_dir: Path, *, runner: Callable[..., Any] = run,
                   clock: Callable[[], float] = time.process_time) -> Any:
    """The pipeline up to the weights. The first run that does the work (its stages say the
    experts or the probe scoring took time; from the cache they take none) writes its CPU
    seconds and stage times into the ledger, whichever asked first: the caps at the dev
    phase's start, or the relations."""
    cpu = clock()
    state = runner(cfg, run_dir, until="weights")
    spent = clock() - cpu
    stages = state.files.read_stages()
    worked = any(float(stages[s].get("seconds") or 0.0) > 0.0 for s in ("experts", "signals"))
    if "pipeline_cpu_s" not in ledger.data and worked:
        ledger.data["pipeline_cpu_s"] = round(spent, 1)
        ledger.data.setdefault("pipeline", {})["stages"] = {
            s: stages[s].get("seconds") for s in ("experts", "signals", "relations", "weights")}
        ledger.save()
    return state


class PoolRun:
    """The loaded pool, its pipeline's relations when the dev phase needs them, and one
    training at a time."""

    def __init__(self, pool: Pool, work: Path, ledger: Ledger, *,
                 sampler: Sampler = "independent", precision: str | None = None,
                 items: bool = False, overrides: tuple[str, ...] = ()) -> None:
        """``sampler``: how each training draws its mixed set; this benchmark's ledgers were
        trained with ``independent`` (sampler version 1), so that stays its default.
        ``precision``: training and scoring precision for every training (None: the
        config's, ``auto``). ``items``: the ledger keeps every item's scores too.
        ``overrides``: ``KEY=VALUE`` settings on top of the pool's config (``--set``)."""
        from taskpgm.models import Base

        self.pool, self.work, self.ledger = pool, work, ledger
        self.sampler: Sampler = sampler
        self.items = items
        self.cfg = config_mod.load(ROOT / pool.config, overrides)
        if precision is not None:
            self.cfg = self.cfg.model_copy(update={
                "experts": self.cfg.experts.model_copy(update={"precision": precision}),
                "evaluation": self.cfg.evaluation.model_copy(update={"precision": precision})})
        self.root = self.cfg.artifact_root
        self._relations: Any = None
        self.tasks = load_tasks(self.cfg)
        self.names = list(self.tasks)
        self.families = family_of(pool, self.names) if pool.families else None
        self.base = Base.from_config(self.cfg.base)
        self.mean_tokens = mean_train_tokens(self.base.load().tokenizer, self.tasks,
                                             self.cfg.experts.max_length)
        work = plan_of(self.cfg, self.tasks, {}, {}, self.mean_tokens)
        self.ledger.data.setdefault("pipeline", {})["work"] = {
            "experts": work.experts, "expert_tokens": work.expert_tokens,
            "probe_scorings": work.probe_scorings}
        full = eval_set(self.cfg, self.tasks, {}, {})
        self.sets = {split: EvalSet({k: v for k, v in full.groups.items() if k[0] == split})
                     for split in ("dev", "test")}
        self.ledger.check_data({t: examples_fingerprint(s.train + s.probe + s.eval)
                                for t, s in self.tasks.items()})
        self.ledger.data.setdefault("tasks", self.names)
        self.ledger.data.setdefault("families", self.families)
        self.ledger.data.setdefault("per_task", {s: len(self.sets[s].groups[(s, self.names[0])])
                                                 for s in ("dev", "test")})
        here = machine()
        if here not in self.ledger.data.setdefault("machines", []):
            self.ledger.data["machines"].append(here)
        self.machine = self.ledger.data["machines"].index(here)  # recorded with each training

    @property
    def relations(self) -> Any:
        """The pipeline's relations, run up to the weights the first time the dev phase asks.

        The test phase trains the weights its ledger holds, so it never runs the pipeline
        (on a machine without the cache that would be the experts and the probe scoring)."""
        if self._relations is None:
            state = timed_pipeline(self.ledger, self.cfg, self.work / "run")
            stages = state.files.read_stages()
            self._relations = open_relations(Path(stages["relations"]["path"]))
        return self._relations

    def methods_at(self, budget: int) -> dict[str, Any]:
        """methods.json of the pipeline at this budget (caps depend on it)."""
        cfg = self.cfg.model_copy(update={"mixture": self.cfg.mixture.model_copy(
            update={"token_budget": budget})})
        run_dir = self.work / f"run-b{budget}"
        timed_pipeline(self.ledger, cfg, run_dir)
        return dict(RunDir(run_dir).read_methods())

    def caps(self, budget: int) -> np.ndarray:
        return np.asarray(self.methods_at(budget)["caps"], dtype=np.float64)

    def as_dict(self, w: Any) -> dict[str, float]:
        return {t: float(v) for t, v in zip(self.names, w, strict=True)}

    def train(self, phase: str, budget: int, method: str, weights: dict[str, float],
              seed: int) -> list[dict[str, Any]]:
        """The (method, seed) training's rows on the phase's split, from the ledger or now.

        A ledger entry trained on other weights than asked for stops the run: the protocol
        (or something it depends on) changed, and its rows would not be this training's."""
        got = self.ledger.rows(phase, budget, method, seed)
        if got is not None:
            held = self.ledger.data["trainings"][Ledger.key(phase, budget, method, seed)]
            old = held.get("weights") or {}
            # 1e-4 of the budget is under one example at these budgets; re-solving with
            # another solver version moves weights by ~1e-6, which is the same mixture
            gap = (max(abs(old[t] - weights[t]) for t in old) if set(old) == set(weights)
                   else float("inf"))
            if gap > WEIGHT_TOLERANCE:
                raise SystemExit(
                    f"{self.ledger.path}: {Ledger.key(phase, budget, method, seed)} was trained "
                    f"on other weights than this run asks for (largest difference {gap:.2g}); "
                    "the choices it rests on changed. Find out why before any more training "
                    "(do not delete the entry to go on).")
            return got
        split = split_of(phase)
        cpu, wall = time.process_time(), time.monotonic()
        rows = ensure_evaluation(
            self.base, {method: weights}, {t: self.tasks[t].train for t in self.names},
            self.mean_tokens, self.sets[split],
            Recipe.from_config(self.cfg, token_budget=budget, sampler=self.sampler),
            seeds=[seed], root=self.root, items=self.items)
        cpu_s, wall_s = time.process_time() - cpu, time.monotonic() - wall
        ours = [r for r in rows if r["method"] == method]
        base = [r for r in rows if r["method"] == "base"]
        self.ledger.data.setdefault("base", {})[split] = base
        self.ledger.data["trainings"][Ledger.key(phase, budget, method, seed)] = {
            "phase": phase, "budget": budget, "method": method, "seed": seed,
            "weights": weights, "rows": ours, "cpu_s": round(cpu_s, 1),
            "wall_s": round(wall_s, 1), "fresh": wall_s > 5.0, "machine": self.machine,
            "sampler": self.sampler}
        self.ledger.save()
        m = metric(ours, split, families=self.families)
        print(f"[{self.pool.name}] {phase} b={budget} {method} s{seed}: {m:.3f} "
              f"({wall_s:.0f} s)", flush=True)
        return ours

    def score(self, phase: str, budget: int, method: str, weights: dict[str, float],
              seed: int, field_: str = "accuracy") -> float:
        return metric(self.train(phase, budget, method, weights, seed), split_of(phase),
                      field_, self.families)

    def family_uniform(self) -> dict[str, float]:
        assert self.families is not None
        fams = sorted(set(self.families.values()))
        size = {f: sum(1 for t in self.names if self.families[t] == f) for f in fams}
        return {t: 1.0 / len(fams) / size[self.families[t]] for t in self.names}



def swarm_phase(pr: PoolRun, budget: int, n: int) -> dict[str, Any]:
    caps = pr.caps(budget)
    draws = np.array([apply_caps(w, caps) for w in
                      draw_mixtures(len(pr.names), n, concentration=CONCENTRATION,
                                    seed=pr.cfg.mixture.seed)])
    acc, logp = [], []
    for i, w in enumerate(draws):
        acc.append(pr.score("swarm", budget, f"swarm-{i:03d}", pr.as_dict(w), DEV_SEEDS[0]))
        logp.append(pr.score("swarm", budget, f"swarm-{i:03d}", pr.as_dict(w), DEV_SEEDS[0],
                             "logprob"))
    return {"budget": budget, "draws": draws.tolist(), "acc": acc, "logprob": logp}


def choose_budget(pr: PoolRun, good: dict[str, float]) -> tuple[int, list[dict[str, Any]]]:
    uniform = pr.as_dict(np.full(len(pr.names), 1.0 / len(pr.names)))
    sweep = []
    for b in pr.pool.budgets:
        u = pr.score("dev", b, "uniform", uniform, DEV_SEEDS[0])
        g = pr.score("dev", b, "good", good, DEV_SEEDS[0])
        sweep.append({"budget": b, "uniform": u, "good": g, "gap": g - u})
    best = max(sweep, key=lambda s: (round(s["gap"], 9), -s["budget"]))
    return int(best["budget"]), sweep


def dev_phase(pr: PoolRun, n_swarm: int) -> dict[str, Any]:
    led = pr.ledger.data
    t = len(pr.names)
    uniform = pr.as_dict(np.full(t, 1.0 / t))
    if pr.pool.good == "family-uniform":
        good = pr.family_uniform()
        budget, sweep = choose_budget(pr, good)
        swarm = swarm_phase(pr, budget, n_swarm)
    else:  # the swarm's best is the good mixture: the swarm first, at the config's budget
        swarm = swarm_phase(pr, pr.cfg.mixture.token_budget, n_swarm)
        good = pr.as_dict(swarm["draws"][int(np.argmax(swarm["acc"]))])
        budget, sweep = choose_budget(pr, good)
    # the power pilot at the chosen budget
    diffs, lp_diffs = [], []
    for s in DEV_SEEDS:
        diffs.append(pr.score("dev", budget, "good", good, s)
                     - pr.score("dev", budget, "uniform", uniform, s))
        lp_diffs.append(pr.score("dev", budget, "good", good, s, "logprob")
                        - pr.score("dev", budget, "uniform", uniform, s, "logprob"))
    sd = float(np.std(diffs, ddof=1))
    pilot = {"seeds": list(DEV_SEEDS), "diff": diffs, "sd": sd,
             "needed_seeds": seeds_for_power(sd), "logprob_diff": lp_diffs,
             "logprob_sd": float(np.std(lp_diffs, ddof=1))}
    # fidelity of every energy over the swarm
    draws = np.asarray(swarm["draws"])
    fid = {}
    for label, energy, rho_spec in FIDELITY:
        rho = 1.0 / t if rho_spec == "1/T" else float(rho_spec)
        quad, lin = energy_terms(pr.relations, energy, "representativeness")(np.arange(t))
        neg = np.array([-(0.5 * w @ quad @ w - rho * lin @ w) for w in draws])
        fid[label] = {"acc": fidelity(neg, swarm["acc"]),
                      "logprob": fidelity(neg, swarm["logprob"])}
    # RegMix: the fit with the better leave-one-out Spearman
    caps = pr.caps(budget)
    regmix = {}
    for kind in ("linear", "lightgbm"):
        y = np.asarray(swarm["acc"])
        loo = [float(fit_regmix(np.delete(draws, i, 0), np.delete(y, i), kind)(draws[i:i + 1])[0])
               for i in range(len(y))]
        # top=1: the first benchmark's argmax (regmix-argmax), as it was run
        w, predicted = regmix_weights(fit_regmix(draws, y, kind), t, seed=pr.cfg.mixture.seed + 1,
                                      top=1)
        regmix[kind] = {"loo_spearman": spearman(loo, y), "predicted": predicted,
                        "weights": pr.as_dict(apply_caps(w, caps))}
    regmix_kind = max(regmix, key=lambda k: np.nan_to_num(regmix[k]["loo_spearman"], nan=-2))
    # TaskPGM candidates at the chosen budget, seeds 100 and 101
    cands = {}
    for name, energy, rho, policy in CANDIDATES:
        label = {"affinity": "affinity rho=0", "reference": "reference"}.get(
            energy, f"split rho={rho:g}")
        hi = fid[label]["acc"][2]
        if energy == "reference":  # the product's preset, as methods.json holds it
            w = pr.methods_at(budget)["methods"]["reference"]["weights"]
        else:
            w = solve(pr.relations, rho, budget=None, utility_kind="representativeness",
                      caps=caps, untrusted=policy, energy=energy)["weights"]
        if np.isfinite(hi) and hi < 0:  # not trained on dev; taskpgm and reference stay in
            cands[name] = {"dropped": f"fidelity interval below zero (upper {hi:+.2f})",
                           "energy": energy, "rho": rho, "untrusted": policy, "weights": w}
            continue
        scores = [pr.score("dev", budget, name, w, s) for s in DEV_SEEDS[:2]]
        lps = [pr.score("dev", budget, name, w, s, "logprob") for s in DEV_SEEDS[:2]]
        base = [pr.score("dev", budget, "uniform", uniform, s) for s in DEV_SEEDS[:2]]
        cands[name] = {"energy": energy, "rho": rho, "untrusted": policy, "weights": w,
                       "dev": float(np.mean(scores)), "dev_logprob": float(np.mean(lps)),
                       "minus_uniform": float(np.mean(scores) - np.mean(base))}
    trained = {k: v for k, v in cands.items() if "dev" in v}
    splits = {k: v for k, v in trained.items() if v["energy"] == "split"}
    split_pick = max(splits, key=lambda k: splits[k]["dev"]) if splits else None
    order = np.argsort(-np.asarray(swarm["acc"]), kind="stable")[:3]
    methods_json = pr.methods_at(budget)["methods"]
    final = {"uniform": uniform,
             "size": methods_json["size"]["weights"],
             "temperature": methods_json["temperature"]["weights"]}
    if pr.families is not None:
        final["family-uniform"] = pr.family_uniform()
    for rank, i in enumerate(order, 1):
        final[f"swarm-top{rank}"] = pr.as_dict(draws[i])
    final["regmix"] = regmix[regmix_kind]["weights"]
    for name in ("taskpgm", "reference"):
        if "weights" in cands.get(name, {}):
            final[name] = cands[name]["weights"]
    if split_pick is not None:
        final["split"] = splits[split_pick]["weights"]
    decisions = {"budget": budget, "sweep": sweep, "good": good, "pilot": pilot,
                 "swarm": {"budget": swarm["budget"], "mixtures": len(swarm["acc"]),
                           "concentration": CONCENTRATION, "acc": swarm["acc"],
                           "logprob": swarm["logprob"], "top3": [int(i) for i in order],
                           "uniform": pr.score("dev", swarm["budget"], "uniform", uniform,
                                               DEV_SEEDS[0])},
                 "fidelity": fid, "regmix": regmix, "regmix_kind": regmix_kind,
                 "candidates": cands, "split_pick": split_pick, "final_methods": final}
    led["decisions"] = decisions
    pr.ledger.save()
    return decisions


def test_phase(pr: PoolRun, seeds: int) -> None:
    dec = pr.ledger.data["decisions"]
    for s in range(TEST_SEED0, TEST_SEED0 + seeds):  # seed-major: stopped runs stay paired
        for method, w in dec["final_methods"].items():
            pr.train("test", dec["budget"], method, w, s)

