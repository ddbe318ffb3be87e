"""The benchmark that decides: does any mixture beat uniform, does TaskPGM's, and which
variant should be the default? Pre-registered in docs/results.md before the run.

    .venv/bin/python benchmarks/mixture_quality.py                 # both pools, dev then test
    .venv/bin/python benchmarks/mixture_quality.py --phase dev     # only what chooses
    .venv/bin/python benchmarks/mixture_quality.py --render        # docs from the ledgers only

Two pools (``POOLS``): the 12-task pool (configs/mixture-quality.yaml) and a redundancy
pool whose three shards of one task are declared a family (configs/mixture-redundancy.yaml).
Each task's eval examples are cut once into dev and test (``evaluation.test_share``).

Dev phase, per pool (every choice; the test part is never scored):
1. budget sweep: uniform and a deliberately good mixture (family-uniform on the redundancy
   pool; the swarm's best on the 12-task pool, whose swarm runs first at the config's
   budget) at each of the pool's budgets, seed 100; the budget with the largest dev gap
   (good − uniform, primary metric) is chosen, ties to the smaller budget;
2. power pilot: uniform and the good mixture at the chosen budget, seeds 100–103; the paired
   standard deviation of the difference gives the seeds needed for 80% power at 0.02;
3. the swarm: ``--swarm`` mixtures from Dirichlet(1 · 1), one training each (seed 100);
4. fidelity: Spearman(−E(p), dev metric) over the swarm for every energy variant;
5. RegMix: linear and LightGBM fits of the dev metric on the weights; the one with the
   higher leave-one-out Spearman is the ``regmix`` method, its predicted best mixture;
6. candidates: today's TaskPGM, the reference preset and the split energy along its rho
   path under each untrusted policy, each trained at seeds 100 and 101 unless its
   energy's fidelity interval lies below zero; the split variant with the best mean dev
   metric is the pool's ``split`` method.

Test phase, per pool: every method of the final table at ``--test-seeds`` fresh seeds
(1000, 1001, …), seed-major, so a run stopped early still holds complete paired seeds.

Every training is recorded in benchmarks/results/mixture_quality/POOL.json (the ledger:
rows, weights, CPU-seconds) as soon as it finishes, and a rerun skips what the ledger
holds, so a killed run continues where it stopped, on this machine or on another after the
ledger was committed. The cache's fingerprinted artifacts make the same true within one
training. ``--render`` (and the end of every run) writes docs/results.json and the
generated part of docs/results.md from the ledgers alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from taskpgm import atomic
from taskpgm import config as config_mod
from taskpgm.evaluation import Recipe, ensure_evaluation
from taskpgm.inputs import EvalSet, eval_set, load_tasks, mean_train_tokens
from taskpgm.mixture import Sampler, apply_caps
from taskpgm.pipeline import run
from taskpgm.readers import open_relations
from taskpgm.rundir import RunDir
from taskpgm.stats import detectable, holm, mean_interval, paired_difference, seeds_for_power
from taskpgm.swarm import draw_mixtures, fidelity, fit_regmix, regmix_weights, spearman
from taskpgm.weights import energy_terms, solve
from taskpgm.workload import plan_of

ROOT = Path(__file__).resolve().parent.parent
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


# ----------------------------------------------------------------------------- metrics
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


# ------------------------------------------------------------------------------ ledger
class Ledger:
    """One pool's trainings and decisions, rewritten atomically after each training."""

    def __init__(self, path: Path, pool: str) -> None:
        self.path = path
        self.data: dict[str, Any] = (json.loads(path.read_text()) if path.is_file() else
                                     {"pool": pool, "trainings": {}, "decisions": {}})

    def save(self) -> None:
        atomic.write_json(self.path, self.data)

    @staticmethod
    def key(phase: str, budget: int, method: str, seed: int) -> str:
        return f"{phase}|{budget}|{method}|{seed}"

    def rows(self, phase: str, budget: int, method: str, seed: int) -> list[dict[str, Any]] | None:
        entry = self.data["trainings"].get(self.key(phase, budget, method, seed))
        return None if entry is None else list(entry["rows"])


def machine() -> dict[str, Any]:
    info = {"python": platform.python_version()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)"):
                info[key.strip()] = value.strip()
            if key.strip() == "Flags":
                info["flags"] = [f for f in value.split() if f.startswith(("avx", "amx", "fma"))]
    except OSError:
        pass
    import torch

    info["torch"] = torch.__version__
    info["threads"] = torch.get_num_threads()
    return info


# ------------------------------------------------------------------------------- a pool
class PoolRun:
    """The loaded pool, its pipeline's relations when the dev phase needs them, and one
    training at a time."""

    def __init__(self, pool: Pool, work: Path, ledger: Ledger, *,
                 sampler: Sampler = "independent", precision: str | None = None,
                 items: bool = False) -> None:
        """``sampler``: how each training draws its mixed set; this benchmark's ledgers were
        trained with ``independent`` (sampler version 1), so that stays its default.
        ``precision``: training and scoring precision for every training (None: the
        config's, ``auto``). ``items``: the ledger keeps every item's scores too."""
        from taskpgm.models import Base

        self.pool, self.work, self.ledger = pool, work, ledger
        self.sampler: Sampler = sampler
        self.items = items
        self.cfg = config_mod.load(ROOT / pool.config)
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
            cpu = time.process_time()
            state = run(self.cfg, self.work / "run", until="weights")
            spent = time.process_time() - cpu
            stages = state.files.read_stages()
            if "pipeline_cpu_s" not in self.ledger.data and spent > 60:  # it did the work now
                self.ledger.data["pipeline_cpu_s"] = round(spent, 1)
                self.ledger.data["pipeline"]["stages"] = {
                    s: stages[s].get("seconds")
                    for s in ("experts", "signals", "relations", "weights")}
                self.ledger.save()
            self._relations = open_relations(Path(stages["relations"]["path"]))
        return self._relations

    def methods_at(self, budget: int) -> dict[str, Any]:
        """methods.json of the pipeline at this budget (caps depend on it)."""
        cfg = self.cfg.model_copy(update={"mixture": self.cfg.mixture.model_copy(
            update={"token_budget": budget})})
        run_dir = self.work / f"run-b{budget}"
        run(cfg, run_dir, until="weights")
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


# ------------------------------------------------------------------------------ phases
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
        w, predicted = regmix_weights(fit_regmix(draws, y, kind), t, seed=pr.cfg.mixture.seed + 1)
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


# ------------------------------------------------------------------------------ render
def compute_of(led: dict[str, Any]) -> dict[str, float]:
    """CPU-seconds each method spent deciding its mixture (the final trainings excluded)."""
    tr = led["trainings"].values()
    swarm = sum(e["cpu_s"] for e in tr if e["phase"] == "swarm")
    pipe = float(led.get("pipeline_cpu_s", float("nan")))
    cands = sum(e["cpu_s"] for e in tr if e["phase"] == "dev" and e["method"].startswith("split"))
    out = {"uniform": 0.0, "size": 0.0, "temperature": 0.0, "family-uniform": 0.0,
           "swarm-top1": swarm, "swarm-top2": swarm, "swarm-top3": swarm, "regmix": swarm,
           "taskpgm": pipe, "reference": pipe, "split": pipe + cands}
    return out


def work_of(led: dict[str, Any]) -> dict[str, str]:
    """What each method trained and scored to decide its mixture, in words."""
    tr = led["trainings"].values()
    swarm = [e for e in tr if e["phase"] == "swarm"]
    cands = [e for e in tr if e["phase"] == "dev" and e["method"].startswith("split")]
    items = len(led.get("tasks", [])) * int(led.get("per_task", {}).get("dev") or 0)
    w = led.get("pipeline", {}).get("work")
    pgm = (f"{w['experts']} experts ({w['expert_tokens']:,.0f} tokens), "
           f"{w['probe_scorings']:,} probe scorings" if w else "experts and probe scorings")
    sw = (f"{len(swarm)} trainings x {swarm[0]['budget']:,} tokens, "
          f"{len(swarm) * items:,} dev scorings" if swarm else "the swarm")
    out = dict.fromkeys(("uniform", "size", "temperature", "family-uniform"), "none")
    out.update(dict.fromkeys(("swarm-top1", "swarm-top2", "swarm-top3", "regmix"), sw))
    out.update({"taskpgm": pgm, "reference": pgm,
                "split": f"{pgm}; {len(cands)} dev trainings to choose rho and the policy"})
    return out


def test_table(led: dict[str, Any]) -> dict[str, Any]:
    fam = led.get("families")
    by: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for e in led["trainings"].values():
        if e["phase"] == "test":
            by.setdefault(e["method"], {})[e["seed"]] = e["rows"]
    if not by:
        return {}
    methods = list(led["decisions"]["final_methods"])
    complete = sorted(set.intersection(*(set(by.get(m, {})) for m in methods)))
    out: dict[str, Any] = {"seeds": complete, "methods": {}}
    if len(complete) < 2:
        out["seeds_partial"] = {m: len(by.get(m, {})) for m in methods}
        return out
    def per_seed(m: str, field_: str, families: Any) -> list[float]:
        return [metric(by[m][s], "test", field_, families) for s in complete]
    ref = {f: per_seed("uniform", f, fam) for f in ("accuracy", "logprob")}
    best = {f: per_seed("swarm-top1", f, fam) for f in ("accuracy", "logprob")}
    tasks = led["tasks"]
    for m in methods:
        row: dict[str, Any] = {}
        for f in ("accuracy", "logprob"):
            v = per_seed(m, f, fam)
            row[f] = list(mean_interval(v))
            row[f + "_minus_uniform"] = list(paired_difference(v, ref[f]))
            row[f + "_minus_swarm"] = list(paired_difference(v, best[f]))
        if fam:
            v = per_seed(m, "accuracy", None)
            row["task_macro"] = list(mean_interval(v))
            row["task_macro_minus_uniform"] = list(paired_difference(v, per_seed(
                "uniform", "accuracy", None)))
        # per task against uniform: Holm-adjusted p-values, Bonferroni intervals
        diffs = {t: [next(r["accuracy"] for r in by[m][s] if r["task"] == t)
                     - next(r["accuracy"] for r in by["uniform"][s] if r["task"] == t)
                     for s in complete] for t in tasks}
        # no spread over seeds (float noise aside): the t-test is undefined; p = 1 as before
        pv = [float(sps.ttest_1samp(diffs[t], 0.0).pvalue) if np.ptp(diffs[t]) > 1e-9 else 1.0
              for t in tasks]
        adj = holm(pv)
        level = 1 - 0.05 / len(tasks)
        row["per_task"] = {t: {"diff": float(np.mean(diffs[t])),
                               "ci": list(mean_interval(diffs[t], level)[1:]),
                               "holm_p": adj[i]} for i, t in enumerate(tasks)}
        row["win_rate"] = float(np.mean([np.mean(diffs[t]) > 0 for t in tasks]))
        out["methods"][m] = row
    return out


def led_seeds(led: dict[str, Any]) -> set[int]:
    return {e["seed"] for e in led["trainings"].values() if e["phase"] == "test"}


def fmt3(v: Any) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:+.3f}" if v < 0 else f"{v:.3f}"


def ci(tri: list[float], signed: bool = False) -> str:
    m, lo, hi = tri
    f = (lambda x: "–" if not np.isfinite(x) else f"{x:+.3f}") if signed else fmt3
    return f"{f(m)} [{f(lo)}, {f(hi)}]"


def machines_line(led: dict[str, Any]) -> str:
    """Which machines ran the pool's trainings, and how many each (by phase).

    A training without a ``machine`` index predates the field and ran on the first."""
    ran: dict[int, dict[str, int]] = {}
    for e in led.get("trainings", {}).values():
        by_phase = ran.setdefault(int(e.get("machine", 0)), {})
        by_phase[e["phase"]] = by_phase.get(e["phase"], 0) + 1
    parts = []
    for i, m in enumerate(led.get("machines") or [{}]):
        counts = ", ".join(f"{n} {ph}" for ph, n in sorted(ran.get(i, {}).items())) or "none"
        parts.append(f"{m.get('Model name')}, {m.get('CPU(s)')} CPUs, "
                     f"{' '.join(m.get('flags', []))}, torch {m.get('torch')} "
                     f"(trainings: {counts})")
    label = "Machine" if len(parts) == 1 else "Machines"
    return f"{label}: " + "; ".join(parts) + "."


def render(ledgers: dict[str, dict[str, Any]], command: str) -> tuple[str, dict[str, Any]]:
    md: list[str] = [f"Generated by `{command}` from the ledgers in "
                     "`benchmarks/results/mixture_quality/`."]
    js: dict[str, Any] = {"pools": {}}
    for name, led in ledgers.items():
        dec = led.get("decisions", {})
        md += ["", f"### Pool `{name}`", "",
               f"Tasks: {', '.join(led.get('tasks', []))}. Families: "
               f"{(led.get('families') and sorted(set(led['families'].values()))) or 'none'}. "
               f"Items a task: dev {led.get('per_task', {}).get('dev')}, test "
               f"{led.get('per_task', {}).get('test')}. {machines_line(led)}"]
        if not dec:
            md += ["", "Dev phase not finished. Trainings recorded so far (dev metric: "
                   f"{'macro over families' if led.get('families') else 'macro over tasks'}"
                   "):", "", "| phase | budget | method | seed | dev | CPU-s |",
                   "|---|---|---|---|---|---|"]
            for e in led["trainings"].values():
                md.append(f"| {e['phase']} | {e['budget']:,} | {e['method']} | {e['seed']} | "
                          f"{metric(e['rows'], 'dev', families=led.get('families')):.3f} | "
                          f"{e['cpu_s']:,.0f} |")
            continue
        fam = led.get("families")
        primary = ("macro accuracy over families" if fam else "macro accuracy over tasks")
        md += ["", "**Budget sweep (dev, seed 100).**", "",
               "| budget | uniform | good mixture | gap |", "|---|---|---|---|",
               *(f"| {s['budget']:,} | {s['uniform']:.3f} | {s['good']:.3f} | {s['gap']:+.3f} |"
                 for s in dec["sweep"]),
               "", f"Chosen: {dec['budget']:,} tokens (largest gap, ties to the smaller).", ""]
        p = dec["pilot"]
        n_test = max(len(led_seeds(led)), 10)
        md += [f"**Power pilot (dev, seeds {p['seeds'][0]}–{p['seeds'][-1]}).** good − uniform "
               f"per seed: {', '.join(f'{d:+.3f}' for d in p['diff'])}; paired sd "
               f"{p['sd']:.3f}; seeds for 80% power at {POWER_DIFF}: {p['needed_seeds']}. "
               f"Log-probability differences: {', '.join(f'{d:+.3f}' for d in p['logprob_diff'])} "
               f"(sd {p['logprob_sd']:.3f}). With {n_test} seeds the paired difference found "
               f"with 80% power is {detectable(p['sd'], n_test):.3f}.", ""]
        sw = dec["swarm"]
        acc = np.asarray(sw["acc"])
        md += [f"**Swarm (dev, seed 100, {sw['mixtures']} mixtures from Dirichlet("
               f"{sw['concentration']:g}·1) at {sw['budget']:,} tokens).** "
               f"Uniform {sw['uniform']:.3f}; "
               f"swarm median {np.median(acc):.3f}, best {acc.max():.3f}, "
               f"{int((acc > sw['uniform']).sum())} of {acc.size} above uniform. Top 3: "
               f"{', '.join(f'#{i} ({acc[i]:.3f})' for i in sw['top3'])}.", "",
               "**Fidelity: Spearman(−E(p), dev metric) over the swarm, 5–95% bootstrap.**", "",
               f"| energy | vs {primary} | vs gold log-probability |", "|---|---|---|",
               *(f"| {k} | {ci(list(v['acc']), True)} | {ci(list(v['logprob']), True)} |"
                 for k, v in dec["fidelity"].items()), ""]
        rg = dec["regmix"]
        md += ["**RegMix.** " + "; ".join(
            f"{k}: leave-one-out Spearman {fmt3(v['loo_spearman'])}, predicted {v['predicted']:.3f}"
            for k, v in rg.items()) + f". Used: {dec['regmix_kind']}.", "",
               "**TaskPGM candidates (dev, seeds 100–101).**", "",
               "| candidate | dev | minus uniform | gold log-prob |", "|---|---|---|---|"]
        for k, v in dec["candidates"].items():
            md.append(f"| {k} | {v['dev']:.3f} | {v['minus_uniform']:+.3f} | "
                      f"{v['dev_logprob']:.3f} |" if "dev" in v
                      else f"| {k} | {v['dropped']} | | |")
        md += ["", f"Split energy chosen on dev: `{dec['split_pick']}`.", ""]
        tt = test_table(led)
        compute = compute_of(led)
        n_done = len(tt.get("seeds", []))
        found = detectable(p["sd"], n_done) if n_done >= 2 else None  # at the seeds done
        pj: dict[str, Any] = {
            "primary_metric": primary, "seeds": n_done,
            "dev_per_task": led["per_task"]["dev"], "test_per_task": led["per_task"]["test"],
            "budget_tokens": dec["budget"],
            "detectable_difference": found,
            "swarm": {"mixtures": sw["mixtures"], "best_minus_uniform_test": None},
            "fidelity": {k: list(v["acc"]) for k, v in dec["fidelity"].items()},
            "methods": {}}
        if not tt.get("methods"):
            md += [f"Test phase: {len(tt.get('seeds', []))} complete seeds so far "
                   f"({tt.get('seeds_partial', {})})."]
            js["pools"][name] = pj
            continue
        md += [f"**Test ({n_done} paired seeds, {led['per_task']['test']} items a "
               f"task).** Primary: {primary}; 95% t-intervals over seeds; differences paired "
               "by seed. At these seeds the paired difference found with 80% power (the "
               f"pilot's sd) is {'undefined' if found is None else f'{found:.3f}'}. Compute: "
               "CPU-seconds spent choosing the mixture (the final training, the same for every "
               "method, excluded).", "",
               "| method | primary | minus uniform | minus swarm-top1 | gold log-prob | "
               "minus uniform | win rate | compute (CPU-s) | what it trained and scored |",
               "|---|---|---|---|---|---|---|---|---|"]
        work = work_of(led)
        for meth, row in tt["methods"].items():
            md.append(f"| {meth} | {ci(row['accuracy'])} | "
                      f"{ci(row['accuracy_minus_uniform'], True)} "
                      f"| {ci(row['accuracy_minus_swarm'], True)} | {ci(row['logprob'])} | "
                      f"{ci(row['logprob_minus_uniform'], True)} | {row['win_rate']:.2f} | "
                      f"{compute.get(meth, float('nan')):,.0f} | {work.get(meth, '')} |")
            pj["methods"][meth] = {"test": row["accuracy"],
                                   "minus_uniform": row["accuracy_minus_uniform"],
                                   "compute_cpu_s": compute.get(meth),
                                   "compute": work.get(meth)}
        pj["swarm"]["best_minus_uniform_test"] = tt["methods"]["swarm-top1"][
            "accuracy_minus_uniform"]
        md += ["", "Per task, method − uniform on test accuracy (Holm-adjusted p; intervals "
               "Bonferroni-corrected over tasks); only tasks with Holm p < 0.05 are listed:", ""]
        for meth, row in tt["methods"].items():
            sig = [f"{t} {v['diff']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}] "
                   f"p={v['holm_p']:.3f}"
                   for t, v in row["per_task"].items() if v["holm_p"] < 0.05]
            if meth != "uniform":
                md.append(f"* {meth}: " + ("; ".join(sig) if sig else "none"))
        js["pools"][name] = pj
    md += ["", "### Shipped default (dev only)", "", *shipped_default(ledgers)]
    return "\n".join(md) + "\n", js


#: Today's default TaskPGM variant: the candidate that stays unless another beats it on dev
#: by more than SHIP_MARGIN (the pre-registered rule).
TODAY, SHIP_MARGIN = "taskpgm", 0.005


def shipped_choice(ledgers: dict[str, dict[str, Any]]) -> tuple[str, dict[str, float]] | None:
    """The pre-registered rule: (the candidate to ship, each candidate's mean over the pools
    of its dev primary − uniform's at the same seeds); ``None`` until every pool's dev
    candidates are in. The best mean ships unless today's default is within SHIP_MARGIN of
    it; a candidate not trained on some pool (dropped on fidelity) has no mean."""
    pools = {name: led.get("decisions", {}).get("candidates") for name, led in ledgers.items()}
    if not pools or any(not c for c in pools.values()):
        return None
    names = [k for k in next(iter(pools.values()))
             if all("minus_uniform" in c.get(k, {}) for c in pools.values())]
    mean = {k: float(np.mean([c[k]["minus_uniform"] for c in pools.values()])) for k in names}
    best = max(mean, key=lambda k: mean[k])
    stays = TODAY in mean and mean[best] - mean[TODAY] <= SHIP_MARGIN
    return (TODAY if stays else best), mean


def shipped_default(ledgers: dict[str, dict[str, Any]]) -> list[str]:
    """The shipped-default table and verdict (:func:`shipped_choice`) in markdown lines."""
    pools = {name: led.get("decisions", {}).get("candidates") for name, led in ledgers.items()}
    choice = shipped_choice(ledgers)
    if choice is None:
        waiting = [n for n, c in pools.items() if not c]
        return [f"Not decided yet: the dev candidates of {', '.join(waiting) or 'every pool'} "
                "are not finished. The shipped defaults stay today's until they are."]
    ship, mean = choice
    best = max(mean, key=lambda k: mean[k])
    out = ["| candidate | " + " | ".join(pools) + " | mean |",
           "|---|" + "---|" * (len(pools) + 1)]
    out += [f"| {k} | " + " | ".join(f"{c[k]['minus_uniform']:+.3f}" for c in pools.values())
            + f" | {mean[k]:+.3f} |" for k in mean]
    if ship == TODAY:
        verdict = f"Within {SHIP_MARGIN} of today's default, so `{TODAY}` stays."
    elif TODAY in mean:
        verdict = (f"It beats today's default by more than {SHIP_MARGIN}: it becomes the "
                   "shipped default.")
    else:
        dropped = [n for n, c in pools.items() if "minus_uniform" not in c.get(TODAY, {})]
        verdict = (f"Today's default (`{TODAY}`) has no dev score on {', '.join(dropped)} (its "
                   "energy's fidelity interval lay below zero there, so it was not trained): "
                   f"`{best}` becomes the shipped default.")
    return [*out, "", f"Best: `{best}` ({mean[best]:+.3f} over uniform on dev). {verdict}"]


START, END = "<!-- generated:start -->", "<!-- generated:end -->"


def write_docs(ledgers: dict[str, dict[str, Any]], doc: Path, out_json: Path,
               command: str) -> None:
    text, data = render(ledgers, command)
    old = doc.read_text() if doc.is_file() else f"{START}\n{END}\n"
    a, b = old.index(START) + len(START), old.index(END)
    atomic.write_text(doc, old[:a] + "\n" + text + old[b:])
    atomic.write_json(out_json, data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", nargs="+", default=list(POOLS), choices=list(POOLS))
    parser.add_argument("--phase", choices=["dev", "test", "all"], default="all")
    parser.add_argument("--swarm", type=int, default=32)
    parser.add_argument("--test-seeds", type=int, default=10)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "mixture-quality")
    parser.add_argument("--ledgers", type=Path, default=LEDGERS)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results.json")
    parser.add_argument("--render", action="store_true", help="only write the docs")
    args = parser.parse_args(argv)
    command = "python benchmarks/mixture_quality.py --render"
    ledgers = {p: Ledger(args.ledgers / f"{p}.json", p) for p in args.pools}
    if not args.render:
        runs = {}
        if args.phase in ("dev", "all"):
            for p in args.pools:
                runs[p] = PoolRun(POOLS[p], args.work / p, ledgers[p])
                dev_phase(runs[p], args.swarm)
                write_docs({k: v.data for k, v in ledgers.items()}, args.doc, args.json, command)
        if args.phase in ("test", "all"):
            for p in args.pools:
                pr = runs.get(p) or PoolRun(POOLS[p], args.work / p, ledgers[p])
                test_phase(pr, args.test_seeds)
                write_docs({k: v.data for k, v in ledgers.items()}, args.doc, args.json, command)
    write_docs({k: v.data for k, v in ledgers.items()}, args.doc, args.json, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
