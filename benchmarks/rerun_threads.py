"""How to spend 2 cores on the rerun's trainings: one process at two threads, one training
after the other, or two processes at one thread each, side by side (docs/results.md).

    .venv/bin/python benchmarks/rerun_threads.py

Two trainings of the rerun's recipe (16,000 tokens, fp32, the crn-keyed sampler; uniform over
the offline demo's tasks, which need no BIG-bench download; seeds 100 and 101), each in its
own process and artifact root, both ways; prints the wall times, their ratio and the
largest difference between the two ways' scores (thread counts change float rounding).
Not part of `make bench`: it trains for about 6 minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = "src/taskpgm/configs/demo-offline.yaml"
BUDGET = 16000


def one(work: Path, seed: int, threads: int) -> None:
    """One training, in this process (the child's side)."""
    sys.path.insert(0, str(HERE))
    from quality.ledger import Ledger
    from quality.protocol import Pool, PoolRun

    pool = Pool("offline", CONFIG, (BUDGET,), "swarm-best")
    pr = PoolRun(pool, work, Ledger(work / "ledger.json", "offline"), sampler="crn-keyed",
                 precision="fp32", overrides=(f"output_dir={work / 'artifacts'}",
                                              f"base.threads={threads}",
                                              "evaluation.test_share=0.5"))
    pr.train("dev", BUDGET, "uniform", {t: 1.0 / len(pr.names) for t in pr.names}, seed)


def spawn(work: Path, seed: int, threads: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen([sys.executable, __file__, "--one", str(work), str(seed),
                             str(threads)], env=env, cwd=HERE.parent)


def rows(work: Path) -> list[dict[str, object]]:
    entry = next(iter(json.loads((work / "ledger.json").read_text())["trainings"].values()))
    return list(entry["rows"])


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.monotonic()
        for seed in (100, 101):  # one after the other, two threads
            if spawn(root / f"a{seed}", seed, 2).wait() != 0:
                return 1
        serial = time.monotonic() - t0
        t0 = time.monotonic()
        both = [spawn(root / f"b{seed}", seed, 1) for seed in (100, 101)]  # side by side
        if any(p.wait() != 0 for p in both):
            return 1
        side = time.monotonic() - t0
        gaps = {f: max(abs(float(x[f]) - float(y[f]))  # type: ignore[arg-type]
                       for s in (100, 101)
                       for x, y in zip(rows(root / f"a{s}"), rows(root / f"b{s}"), strict=True))
                for f in ("accuracy", "logprob")}
    print(f"two trainings: one process at 2 threads, in turn {serial:.1f} s; two processes at "
          f"1 thread, side by side {side:.1f} s; ratio {serial / side:.2f}x; largest score "
          f"difference between the two ways: accuracy {gaps['accuracy']:.1g}, log-prob "
          f"{gaps['logprob']:.1g}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        one(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    sys.exit(main())
