"""Task loading benchmark: taskpgm's loader against `datasets`' own JSON loader, side by side.

Two workloads:

* a 1,000,000-line JSONL task (multiple choice, ~187 MB), generated once, and a
  2,000,000-line one to show that our peak memory does not grow with the file;
* BIG-bench ``multiemo`` (1.44 M examples in 28 task.json files) via ``bigbench:multiemo``.

Each measurement runs in a fresh Python process (so peak memory is that load's own);
the two loaders alternate, ``--repeats`` rounds, and the best and median wall times are
reported. Timing excludes interpreter start and imports on both sides. Ours includes the
split (probe 100 / eval 200 / train capped at 10,000, with duplicate removal); the
baseline is ``datasets.load_dataset("json", ...)`` into a fresh cache directory.

    python benchmarks/bench_tasks.py [--lines 1000000] [--repeats 3] [--skip-multiemo]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.5  # ours may take at most this many times datasets' time (best of the rounds)
CHOICES = ["positive", "negative", "neutral", "mixed"]
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
         "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon"]


def make_jsonl(path: Path, lines: int) -> Path:
    """A multiple-choice JSONL task of ``lines`` distinct examples (written once)."""
    if path.exists():
        return path
    rng = random.Random(0)
    tmp = path.with_suffix(".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        for i in range(lines):
            text = " ".join(rng.choice(WORDS) for _ in range(12))
            f.write(json.dumps({"prompt": f"Item {i}: is '{text}' positive or negative?",
                                "choices": CHOICES, "answer": rng.randrange(4)}) + "\n")
    os.replace(tmp, path)
    return path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(which: str, target: str) -> dict[str, float | int]:
    """Run one load in this process; return seconds, rows and peak RSS (MB)."""
    if which == "datasets":
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
        files = target.split(os.pathsep)
        kwargs = {"field": "examples"} if files[0].endswith("task.json") else {}
        before = _rss_mb()
        with tempfile.TemporaryDirectory() as cache:
            t0, c0 = time.perf_counter(), _cpu_s()
            ds = datasets.load_dataset("json", data_files=files, split="train", cache_dir=cache,
                                       **kwargs)
            seconds, cpu = time.perf_counter() - t0, _cpu_s() - c0
            rows = len(ds)
    else:
        from taskpgm.tasks import load_task

        before = _rss_mb()
        t0, c0 = time.perf_counter(), _cpu_s()
        task = load_task(target)
        seconds, cpu = time.perf_counter() - t0, _cpu_s() - c0
        rows = task.examples
    return {"seconds": seconds, "cpu_s": cpu, "rows": rows, "peak_mb": _rss_mb(),
            "import_mb": before}


def _subprocess(which: str, target: str) -> dict[str, float | int]:
    out = subprocess.run([sys.executable, __file__, "--measure", which, target],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{which} on {target} failed:\n{out.stderr[-2000:]}")
    result: dict[str, float | int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def compare(label: str, ours: str, baseline: str, repeats: int) -> dict[str, object]:
    runs: dict[str, list[dict[str, float | int]]] = {"datasets": [], "taskpgm": []}
    for _ in range(repeats):
        runs["datasets"].append(_subprocess("datasets", baseline))
        runs["taskpgm"].append(_subprocess("taskpgm", ours))
    summary: dict[str, object] = {"workload": label}
    for name, rs in runs.items():
        times = [float(r["seconds"]) for r in rs]
        summary[name] = {
            "best_s": round(min(times), 3),
            "median_s": round(statistics.median(times), 3),
            "cpu_best_s": round(min(float(r["cpu_s"]) for r in rs), 3),
            "rows": rs[0]["rows"],
            "peak_mb": round(max(float(r["peak_mb"]) for r in rs), 1),
            "peak_over_imports_mb": round(max(float(r["peak_mb"]) - float(r["import_mb"])
                                              for r in rs), 1),
        }
    d, o = summary["datasets"], summary["taskpgm"]
    assert isinstance(d, dict) and isinstance(o, dict)
    summary["ratio_best"] = round(o["best_s"] / d["best_s"], 2)
    summary["ratio_median"] = round(o["median_s"] / d["median_s"], 2)
    return summary


def _print(s: dict[str, object]) -> None:
    d, o = s["datasets"], s["taskpgm"]
    assert isinstance(d, dict) and isinstance(o, dict)
    print(f"\n== {s['workload']}")
    print(f"  datasets.load_dataset('json'): best {d['best_s']:.2f} s, median "
          f"{d['median_s']:.2f} s, CPU {d['cpu_best_s']:.2f} s, {d['rows']} rows, "
          f"peak RSS {d['peak_mb']:.0f} MB "
          f"(+{d['peak_over_imports_mb']:.0f} MB over imports)")
    print(f"  taskpgm load_task + split:     best {o['best_s']:.2f} s, median "
          f"{o['median_s']:.2f} s, CPU {o['cpu_best_s']:.2f} s, {o['rows']} rows, "
          f"peak RSS {o['peak_mb']:.0f} MB "
          f"(+{o['peak_over_imports_mb']:.0f} MB over imports)")
    print(f"  ratio ours / datasets: {s['ratio_best']:.2f} (best), "
          f"{s['ratio_median']:.2f} (median); target <= {TARGET}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the figures (and write them as JSON with ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-multiemo", action="store_true")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the generated JSONL is kept (default: the taskpgm cache)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--measure", nargs=2, metavar=("WHICH", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return 0

    from taskpgm.cache import home

    work = args.work_dir or home() / "bench"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    path = make_jsonl(work / f"mc_{args.lines}.jsonl", args.lines)
    print(f"workload file {path} ({path.stat().st_size / 1e6:.0f} MB, ready in "
          f"{time.perf_counter() - t0:.1f} s); {os.cpu_count()} CPUs")
    results = [compare(f"JSONL, {args.lines:,} lines", str(path), str(path), args.repeats)]
    _print(results[-1])
    # Bounded memory: the same load on a file twice as long should peak about as high.
    double = make_jsonl(work / f"mc_{2 * args.lines}.jsonl", 2 * args.lines)
    twice = _subprocess("taskpgm", str(double))
    big = results[-1]["taskpgm"]
    assert isinstance(big, dict)
    twice_mb = float(twice["peak_mb"]) - float(twice["import_mb"])
    growth = twice_mb - float(big["peak_over_imports_mb"])
    print(f"  memory: {2 * args.lines:,} lines in {float(twice['seconds']):.2f} s, peak "
          f"+{twice_mb:.0f} MB over imports; twice the lines adds {growth:.0f} MB")
    results[-1]["taskpgm_peak_growth_2x_mb"] = round(growth, 1)
    if not args.skip_multiemo:
        from taskpgm.tasks import bigbench

        t0 = time.perf_counter()
        _, files = bigbench.resolve("multiemo")
        bigbench.extract(["multiemo"])
        print(f"\nbigbench:multiemo archive download/extraction (first use only): "
              f"{time.perf_counter() - t0:.1f} s")
        paths = [str(bigbench.folder() / "tasks" / f) for f in files]
        results.append(compare(f"bigbench:multiemo ({len(paths)} task.json files)",
                               "bigbench:multiemo", os.pathsep.join(paths), args.repeats))
        _print(results[-1])
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    missed = [str(r["workload"]) for r in results if float(r["ratio_best"]) > TARGET]  # type: ignore[arg-type]
    if missed:
        print(f"\ntarget missed (ours > {TARGET}x datasets): {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
