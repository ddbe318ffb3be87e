"""The variance pilot: how small a difference can the paired benchmark see, with the
mixture sampler of version 1 (independent draws), with common random numbers (crn: the
same draw, trained in key order with batches regrouped by length) and with crn-keyed
(the same draw, each batch a fixed range of keys)?

    .venv/bin/python benchmarks/variance_pilot.py                  # both pools, resumable
    .venv/bin/python benchmarks/variance_pilot.py --pools arith12  # one pool
    .venv/bin/python benchmarks/variance_pilot.py --render         # results from the ledgers

On both pools of docs/results-2026-12-01.md, at the budget its dev phase chose, three mixtures are
trained at the dev seeds ``SEEDS`` with each sampler, in one run:

* ``uniform``;
* ``aa``: uniform with 0.01 of the budget moved from the pool's second task to its first
  (an A/A-like pair: the two mixtures differ by a few examples, so any difference between
  them is noise);
* ``good``: the pool's known-good mixture (family-uniform on ``redundancy``, the swarm's
  dev best on ``arith12``, both from the pool's ledger in benchmarks/results/mixture_quality).

For each sampler, pair (aa − uniform, good − uniform) and metric (macro accuracy; the
mean gold log-probability, both over tasks, or over families where the pool declares
them, as in docs/results-2026-12-01.md), it reports the paired sd over seeds, the mean difference,
and the smallest difference ``DETECT_SEEDS`` paired seeds detect at 80% power (two-sided
5% t-test), and the variance-reduction factor against independent draws (sd before / sd
after, squared).

Where the remaining noise comes from, per item rather than per seed (so a few seeds
suffice): for each sampler, how far apart the two trainings of the A/A pair land (the
root-mean-square difference of an item's gold log-probability over the dev items, and
the share of items whose correctness differs), against two trainings of the same
mixture at consecutive seeds (everything random changed). The A/A pair holds the
initialization, dropout and eval items fixed and differs in the few examples moved;
crn-keyed also holds every batch but the ones those examples fall in.

Every training trains and scores in fp32 (``--precision``), so seeds trained on machines
with and without native bf16 stay comparable; each records its machine. The ledgers
(benchmarks/results/variance_pilot/POOL.json) are rewritten after every training and a
rerun skips what they hold; trainings run seed-major (both pools, both samplers, every
arm at a seed before the next seed; the A/A pair at every seed before the good mixture),
so a stopped run always holds complete paired seeds.
The summary goes to benchmarks/results/variance_pilot.json, its table into
docs/benchmarks.md (between the markers ``MARKS``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from quality import protocol
from quality.ledger import Ledger
from taskpgm import atomic
from taskpgm.core import stats

SEEDS = (100, 101, 102, 103, 104, 105)
SAMPLERS = ("independent", "crn", "crn-keyed")
ARMS = ("uniform", "aa", "good")
#: The A/A pair at every seed first, then the good mixture: a run stopped early holds the
#: A/A pair (the instrument's noise floor) at the most seeds.
ORDER = (("uniform", "aa"), ("good",))
PAIRS = ("aa", "good")
METRICS = ("accuracy", "logprob")
MOVED = 0.01  # the A/A pair's shift of budget share between two tasks
DETECT_SEEDS = 10
LEDGERS = protocol.ROOT / "benchmarks" / "results" / "variance_pilot"
RESULTS = protocol.ROOT / "benchmarks" / "results" / "variance_pilot.json"
PHASE = "pilot"


def arm_weights(pr: protocol.PoolRun, decided: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The three mixtures of the pilot on one pool."""
    t = len(pr.names)
    uniform = np.full(t, 1.0 / t)
    aa = uniform.copy()
    aa[0] += MOVED
    aa[1] -= MOVED
    good = pr.family_uniform() if pr.pool.good == "family-uniform" else dict(decided["good"])
    return {"uniform": pr.as_dict(uniform), "aa": pr.as_dict(aa), "good": good}


def method_name(arm: str, sampler: str) -> str:
    return f"{arm}@{sampler}"


def run_pilot(pools: list[str], seeds: tuple[int, ...], precision: str, work: Path,
              ledgers: Path) -> None:
    runs: dict[str, tuple[dict[str, protocol.PoolRun], int, dict[str, dict[str, float]]]] = {}
    for name in pools:
        decided = json.loads((protocol.LEDGERS / f"{name}.json").read_text())["decisions"]
        ledger = Ledger(ledgers / f"{name}.json", name)
        ledger.data.setdefault("precision", precision)
        if ledger.data["precision"] != precision:
            raise SystemExit(f"{ledger.path} was trained in {ledger.data['precision']}; "
                             f"rerun with --precision {ledger.data['precision']}")
        per_sampler = {s: protocol.PoolRun(protocol.POOLS[name], work / name, ledger, sampler=s,
                                     precision=precision, items=True) for s in SAMPLERS}
        arms = arm_weights(per_sampler["crn"], decided)
        ledger.data["arms"] = arms
        ledger.data["budget"] = int(decided["budget"])
        ledger.save()
        runs[name] = (per_sampler, int(decided["budget"]), arms)
    total = len(pools) * len(seeds) * len(SAMPLERS) * len(ARMS)
    done = 0
    for group in ORDER:
        for seed in seeds:
            for per_sampler, budget, arms in runs.values():
                for sampler, pr in per_sampler.items():
                    for arm in group:
                        pr.train(PHASE, budget, method_name(arm, sampler), arms[arm], seed)
                        done += 1
                        print(f"variance pilot: {done}/{total} trainings", flush=True)
            write_results(ledgers)


def pair_stats(diffs: list[float]) -> dict[str, Any]:
    d = np.asarray(diffs, dtype=np.float64)
    sd = float(d.std(ddof=1)) if d.size >= 2 else float("nan")
    return {"seeds": int(d.size), "diffs": [round(float(x), 6) for x in d],
            "mean": float(d.mean()) if d.size else float("nan"), "sd": sd,
            f"detectable_at_{DETECT_SEEDS}": stats.detectable(sd, DETECT_SEEDS),
            "seeds_for_0.02": stats.seeds_for_power(sd) if np.isfinite(sd) else None}


def pool_results(led: dict[str, Any]) -> dict[str, Any]:
    """Per sampler, pair and metric: the paired differences over the seeds that hold both
    of the sampler's arms; each reduction over the seeds both samplers hold."""
    fam = led.get("families")
    rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for e in led["trainings"].values():
        rows[(e["method"], int(e["seed"]))] = e["rows"]

    def complete(pair: str, samplers: tuple[str, ...]) -> list[int]:
        wanted = [method_name(a, s) for a in ("uniform", pair) for s in samplers]
        return sorted({s for (_, s) in rows if all((m, s) in rows for m in wanted)})

    def diffs(sampler: str, pair: str, m: str, seeds: list[int]) -> list[float]:
        return [protocol.metric(rows[(method_name(pair, sampler), s)], "dev", m, fam)
                - protocol.metric(rows[(method_name("uniform", sampler), s)], "dev", m, fam)
                for s in seeds]

    out: dict[str, Any] = {"budget": led.get("budget"),
                           "complete_seeds": {p: complete(p, SAMPLERS) for p in PAIRS},
                           "per_task_items": led.get("per_task", {}).get("dev"),
                           "tasks": len(led.get("tasks", [])), "samplers": {},
                           "reduction": {}}
    for sampler in SAMPLERS:
        out["samplers"][sampler] = {
            pair: {m: pair_stats(diffs(sampler, pair, m, complete(pair, (sampler,))))
                   for m in METRICS} for pair in PAIRS}
    for sampler in SAMPLERS[1:]:
        per: dict[str, Any] = {}
        for pair in PAIRS:
            common = complete(pair, ("independent", sampler))
            per[pair] = {"seeds": len(common), **{
                m: reduction(pair_stats(diffs("independent", pair, m, common))["sd"],
                             pair_stats(diffs(sampler, pair, m, common))["sd"])
                for m in METRICS}}
        out["reduction"][sampler] = per
    out["distances"] = distances(rows)
    return out


def _dev_items(rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """A training's dev items in one fixed order: (gold log-probability, correct)."""
    dev = sorted((r for r in rows if r["split"] == "dev"), key=lambda r: r["task"])
    if not dev or any("items" not in r for r in dev):
        return None
    lp = np.concatenate([np.asarray(r["items"]["logprob"], dtype=np.float64) for r in dev])
    ok = np.concatenate([np.asarray(r["items"]["correct"], dtype=bool) for r in dev])
    return lp, ok


def item_distance(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, float] | None:
    """How far apart two trainings land on the dev items: RMS difference of the gold
    log-probability, and the share of items whose correctness differs."""
    x, y = _dev_items(a), _dev_items(b)
    if x is None or y is None or x[0].shape != y[0].shape:
        return None
    return {"logprob_rms": float(np.sqrt(np.mean((x[0] - y[0]) ** 2))),
            "flips": float(np.mean(x[1] != y[1]))}


def distances(rows: dict[tuple[str, int], list[dict[str, Any]]]) -> dict[str, Any]:
    """Per sampler, the mean item distance of the A/A pair at each seed, and of uniform at
    consecutive seeds (same sampler), over the seeds that hold per-item scores."""
    out: dict[str, Any] = {}
    for sampler in SAMPLERS:
        uni = method_name("uniform", sampler)
        seeds = sorted(s for (m, s) in rows if m == uni)
        comparisons = {
            "aa": [item_distance(rows[(uni, s)], rows[(method_name("aa", sampler), s)])
                   for s in seeds if (method_name("aa", sampler), s) in rows],
            "seeds": [item_distance(rows[(uni, s)], rows[(uni, t)])
                      for s, t in itertools.pairwise(seeds)]}
        per: dict[str, Any] = {}
        for name, found in comparisons.items():
            held = [d for d in found if d is not None]
            per[name] = {"pairs": len(held), **{
                k: float(np.mean([d[k] for d in held])) if held else float("nan")
                for k in ("logprob_rms", "flips")}}
        out[sampler] = per
    return out


def reduction(before: float, after: float) -> dict[str, float]:
    """sd before / sd after, and its square (the variance-reduction factor)."""
    if not (np.isfinite(before) and np.isfinite(after)) or after <= 0:
        return {"sd_ratio": float("nan"), "variance_ratio": float("nan")}
    return {"sd_ratio": before / after, "variance_ratio": (before / after) ** 2}


def write_results(ledgers: Path) -> dict[str, Any]:
    out: dict[str, Any] = {
        "command": "python benchmarks/variance_pilot.py",
        "moved": MOVED, "seeds": list(SEEDS), "detect_seeds": DETECT_SEEDS, "pools": {}}
    for path in sorted(ledgers.glob("*.json")):
        led = json.loads(path.read_text())
        out["pools"][led["pool"]] = {**pool_results(led), "machines": led.get("machines", []),
                                     "precision": led.get("precision"),
                                     "cpu_s": round(sum(e["cpu_s"] for e in
                                                        led["trainings"].values()), 1)}
    atomic.write_json(RESULTS, out)
    write_docs_table(out)
    print(table(out), flush=True)
    return out


DOC = protocol.ROOT / "docs" / "benchmarks.md"
MARKS = ("<!-- variance pilot table: written by benchmarks/variance_pilot.py -->",
         "<!-- end of the variance pilot table -->")


def write_docs_table(out: dict[str, Any]) -> None:
    """Put the table between its markers in docs/benchmarks.md (nothing else changes)."""
    text = DOC.read_text()
    start, end = text.find(MARKS[0]), text.find(MARKS[1])
    if start < 0 or end < start:
        return
    head = text[: start + len(MARKS[0])]
    atomic.write_text(DOC, f"{head}\n{table(out)}\n{text[end:]}")


def _f(value: float, spec: str = ".4f", suffix: str = "") -> str:
    return f"{value:{spec}}{suffix}" if np.isfinite(value) else "–"


def table(out: dict[str, Any]) -> str:
    """The results as Markdown: one row per pool, pair, metric and sampler ("–" below two
    seeds), then the per-item distances."""
    lines = ["| pool | pair | metric | sampler | seeds | paired sd | "
             "sd ratio vs independent (common seeds) | "
             f"detectable at {DETECT_SEEDS} seeds | mean diff |",
             "|---|---|---|---|---|---|---|---|---|"]
    for pool, res in out["pools"].items():
        for pair in PAIRS:
            for m in METRICS:
                for sampler in SAMPLERS:
                    a = res["samplers"][sampler][pair][m]
                    r = (res["reduction"][sampler][pair][m]["sd_ratio"]
                         if sampler in res["reduction"] else float("nan"))
                    lines.append(
                        f"| {pool} | {pair} − uniform | {m} | {sampler} | {a['seeds']} | "
                        f"{_f(a['sd'])} | {_f(r, '.1f', '×')} | "
                        f"{_f(a[f'detectable_at_{DETECT_SEEDS}'])} | {_f(a['mean'], '+.4f')} |")
    lines += ["", "| pool | sampler | A/A pair: log-prob RMS | A/A: items flipped | "
              "two seeds: log-prob RMS | two seeds: items flipped | pairs (A/A, seeds) |",
              "|---|---|---|---|---|---|---|"]
    for pool, res in out["pools"].items():
        for sampler in SAMPLERS:
            d = res["distances"][sampler]
            lines.append(
                f"| {pool} | {sampler} | {_f(d['aa']['logprob_rms'])} | "
                f"{_f(d['aa']['flips'], '.3f')} | {_f(d['seeds']['logprob_rms'])} | "
                f"{_f(d['seeds']['flips'], '.3f')} | {d['aa']['pairs']}, {d['seeds']['pairs']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", nargs="+", default=["arith12", "redundancy"],
                        choices=list(protocol.POOLS))
    parser.add_argument("--seeds", type=int, default=len(SEEDS),
                        help=f"how many of the seeds {SEEDS} to run")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--work", type=Path, default=protocol.ROOT / "runs" / "variance-pilot")
    parser.add_argument("--ledgers", type=Path, default=LEDGERS)
    parser.add_argument("--render", action="store_true", help="only write the results")
    args = parser.parse_args(argv)
    if not args.render:
        run_pilot(args.pools, SEEDS[: args.seeds], args.precision, args.work, args.ledgers)
    write_results(args.ledgers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
