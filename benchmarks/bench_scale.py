"""Thousands of tasks: the math core on synthetic signals at T and T/2, and `taskpgm plan`.

Run: .venv/bin/python benchmarks/bench_scale.py                 (part of `make bench`:
     T = 400 and 200, N = 4,000 probe examples)
     .venv/bin/python benchmarks/bench_scale.py --tasks 2000 --probe 20000 --draws 20 \\
         --plan-tasks 2000 --out benchmarks/results/scale_T2000.json   (docs/benchmarks.md)

Synthetic signals: T + 1 models (the base, then one expert per task) predict 4-way
choice distributions on N probe examples, N/T of each task; tasks come in families of
5 whose experts lift each other's gold answers (as in :mod:`taskpgm.core.synthetic`). Each
part runs through the product's own functions, in order: relations (mean-JSD matrix,
transfer PMI, affinity: ``relations_stage.relation_arrays``), the split energy's terms,
the exact solve (``weights.solve``, energy ``split``), the bootstrap intervals both ways
(the per-example bootstrap, ``bootstrap.per_example_replicates``, a second pass after the
relations; and the shipped block bootstrap, ``relations_stage.relations_of``, relations and
draws from one pass; each followed by the same solve on every draw: "relations and draws"
compares relations + per-example draws with the one pass) and the budget k = 100. Each
part is timed at T and at T/2 in the same process with the same N; the
ratio says how it grows (about 4 for T², 2 for T, 8 for T³). Peak memory is the
process's high-water mark after each part (cumulative: it only grows).

The plan part writes a T-task collection of small local task files and runs
``taskpgm plan --json`` on it with and without ``signals.probe_total``: the scorings it
would schedule.

No target: the figures are a measurement, printed with the CPU they ran on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import peak_rss_mib
from taskpgm.config import RelationsConfig
from taskpgm.predictions import ProbePredictions
from taskpgm.readers import Relations

FAMILY = 5


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return sorted(have & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma"})
    return []


def synthetic(tasks: int, probe: int, choices: int = 4, seed: int = 0) -> ProbePredictions:
    """Probe predictions of the base and T experts (see the module docstring)."""
    rng = np.random.default_rng(seed)
    task_of = np.repeat(np.arange(tasks), probe // tasks)
    n = task_of.size
    gold = rng.integers(0, choices, size=n)
    base = rng.normal(size=(n, choices))
    rows = np.empty((tasks + 1, n, choices))
    family = task_of // FAMILY
    for m in range(tasks + 1):
        z = base.copy()
        if m:
            i = m - 1
            lift = np.where(task_of == i, 3.0, np.where(family == i // FAMILY, 1.5, 0.2))
            z += 0.8 * rng.normal(size=(n, choices)) * (task_of == i)[:, None]
            z[np.arange(n), gold] += lift
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        rows[m] = e / e.sum(axis=1, keepdims=True)
    loglik = np.log(rows[:, np.arange(n), gold])
    correct = rows.argmax(axis=2) == gold[None, :]
    return ProbePredictions(
        models=["base", *(f"expert:t{i}" for i in range(tasks))],
        tasks=[f"t{i}" for i in range(tasks)], task_of=task_of, loglik=loglik,
        tokens=np.ones(n), correct=correct, rows=rows, row_weights=np.full(n, 1.0 / n),
        row_example=np.arange(n))


def core(tasks: int, probe: int, draws: int, budget: int) -> dict[str, Any]:
    """Time each part of the math core at T tasks; returns seconds and peak MiB per part."""
    from taskpgm import weights
    from taskpgm.bootstrap import per_example_replicates, weight_intervals
    from taskpgm.core.split import split_terms
    from taskpgm.relations_stage import relation_arrays, relations_of

    out: dict[str, Any] = {"tasks": tasks, "probe": probe, "draws": draws, "budget": budget}

    def part(name: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        value = fn()
        out[name] = {"seconds": round(time.perf_counter() - t0, 3),
                     "peak_rss_mib": round(peak_rss_mib(), 1)}
        print(f"  T={tasks}: {name:<18} {out[name]['seconds']:9.2f} s   peak "
              f"{out[name]['peak_rss_mib']:9.1f} MiB", flush=True)
        return value

    pred = part("signals (synth)", lambda: synthetic(tasks, probe))
    cfg = RelationsConfig()
    arrays, _ = part("relations", lambda: relation_arrays(pred, pred.tasks, cfg))
    rel = Relations(Path("."), "bench", pred.tasks, arrays, {})
    part("split terms", lambda: split_terms(arrays["jsd"], arrays["pmi"]))
    rho = 1.0 / tasks
    kw = {"utility_kind": "representativeness", "caps": None, "untrusted": "keep",
          "energy": "split"}
    fit = part("exact solve", lambda: weights.solve(rel, rho, budget=None, **kw))
    out["support"] = int(sum(w > 0 for w in fit["weights"].values()))

    def solved(boot: dict[str, Any]) -> dict[str, Any]:
        replicate = Relations(Path("."), "bench", pred.tasks, {**arrays, **boot}, {})
        got = [weights.solve(r, rho, budget=None, **kw)
               for r in weights.bootstrap_draws(replicate)]
        return weight_intervals(np.array([[g["weights"][t] for t in pred.tasks] for g in got]),
                                pred.tasks)

    if draws:
        # old: the per-example bootstrap, its own pass over the midpoints after the main one
        part("bootstrap (per-example)", lambda: solved(per_example_replicates(
            pred, alpha=cfg.alpha, kernel=cfg.kernel, pmi_form=cfg.pmi_form, draws=draws)))
        # new: relations and the block bootstrap's draws from one pass, then the same solves,
        # in float64 (the default) and in float32 (relations.precision)
        old_s = out["relations"]["seconds"] + out["bootstrap (per-example)"]["seconds"]
        summary: dict[str, Any] = {"per_example_seconds": round(old_s, 3),
                                   "blocks": cfg.bootstrap_blocks}
        for precision in ("float64", "float32"):
            name = f"relations+blocks f{precision[-2:]}"
            block_cfg = cfg.model_copy(update={"bootstrap": draws, "precision": precision})
            part(name, lambda c=block_cfg: solved(relations_of(pred, pred.tasks, c)[0]))
            new_s = out[name]["seconds"]
            summary[f"{precision}_seconds"] = new_s
            summary[f"{precision}_speedup"] = round(old_s / max(new_s, 1e-9), 2)
            print(f"  T={tasks}: relations + {draws} draws: per-example {old_s:.2f} s, "
                  f"{cfg.bootstrap_blocks} blocks in {precision} {new_s:.2f} s, "
                  f"x{old_s / max(new_s, 1e-9):.2f}", flush=True)
        out["relations and draws"] = summary
    picked = part(f"budget k={budget}", lambda: weights.solve(rel, rho, budget=budget, **kw))
    out["budget_support"] = int(sum(w > 0 for w in picked["weights"].values()))
    return out


def write_pool(folder: Path, tasks: int, examples: int) -> Path:
    """T small local task files and a run config over them; the config's path."""
    import yaml

    rng = np.random.default_rng(0)
    names = []
    for i in range(tasks):
        path = folder / f"t{i:04d}.jsonl"
        with path.open("w") as f:
            for j in range(examples):
                a, b = (int(x) for x in rng.integers(0, 100, size=2))
                f.write(json.dumps({"prompt": f"Task {i}, item {j}: {a} + {b} =", "choices": [
                    str(a + b + k) for k in range(4)], "answer": 0}) + "\n")
        names.append(str(path))
    config = {"tasks": {"names": names, "splits": {"probe": 40, "eval": 10, "max_train": 50}},
              "evaluation": {"seeds": [0], "baselines": ["uniform"]},
              "output_dir": str(folder / "artifacts")}
    cfg = folder / "pool.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return cfg


def plan(tasks: int, probe_total: int) -> dict[str, Any]:
    """`taskpgm plan --json` on a T-task config, with and without the probe sample."""
    out: dict[str, Any] = {"tasks": tasks}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_pool(Path(tmp), tasks, 100)
        for label, extra in (("whole probe set", []),
                             (f"probe_total {probe_total}",
                              ["--set", f"signals.probe_total={probe_total}"])):
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "taskpgm", "plan", str(cfg), "--json",
                                   *extra], capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                raise SystemExit(f"taskpgm plan failed: {done.stderr[-2000:]}")
            full = json.loads(done.stdout)
            info = {k: full[k] for k in ("workload", "estimate_seconds", "compute")}
            info["experts_to_train"] = len(full["experts_to_train"])
            info["plan_seconds"] = round(time.perf_counter() - t0, 1)
            out[label] = info
            print(f"  plan T={tasks}, {label}: {json.dumps(info)}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=400, help="0: only the plan part")
    ap.add_argument("--probe", type=int, default=4000, help="probe examples N in all")
    ap.add_argument("--draws", type=int, default=10, help="bootstrap draws")
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--plan-tasks", type=int, default=200)
    ap.add_argument("--probe-total", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = ap.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    print(f"CPU: {cpu_name()} ({', '.join(cpu_flags())}), {cores} cores", flush=True)
    result: dict[str, Any] = {"cpu": cpu_name(), "flags": cpu_flags(), "cores": cores}
    if args.tasks:
        result["command"] = "python benchmarks/bench_scale.py " + " ".join(
            sys.argv[1:] if argv is None else argv)
        half = core(args.tasks // 2, args.probe, args.draws, min(args.budget, args.tasks // 4))
        full = core(args.tasks, args.probe, args.draws, args.budget)
        result["half"], result["full"] = half, full
        print(f"\ngrowth from T={half['tasks']} to T={full['tasks']} at N={args.probe} "
              "(4 = T², 2 = T):")
        growth = {}
        for name, v in full.items():
            if isinstance(v, dict) and "seconds" in v and name in half \
                    and not name.startswith("budget"):
                ratio = v["seconds"] / max(half[name]["seconds"], 1e-9)
                growth[name] = round(ratio, 2)
                print(f"  {name:<18} {half[name]['seconds']:9.2f} s -> {v['seconds']:9.2f} s"
                      f"   x{ratio:.2f} (exponent {math.log2(max(ratio, 1e-9)):.2f})")
        result["growth"] = growth
    elif args.out and args.out.is_file():  # --tasks 0: only the plan, into the same file
        result = {**json.loads(args.out.read_text()), **result}
    if args.plan_tasks:
        result["plan"] = plan(args.plan_tasks, args.probe_total)
        result["plan_command"] = "python benchmarks/bench_scale.py " + " ".join(
            sys.argv[1:] if argv is None else argv)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
