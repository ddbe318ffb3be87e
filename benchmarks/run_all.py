"""Run every benchmark (benchmarks/bench_*.py), each in its own process, and summarize.

Run: make bench   (or .venv/bin/python benchmarks/run_all.py [NAME ...])

Each benchmark prints its baseline, our figure and their ratio, measured in
the same run, and exits non-zero when a target is missed. Names filter by
substring (``run_all.py mrf relations``). The exit status is non-zero when any
benchmark missed a target or failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if any(name in s.stem for name in argv)]
    results: list[tuple[str, int, float]] = []
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)], cwd=HERE)
        results.append((script.stem, code, time.perf_counter() - t0))
    print("\n=== summary ===")
    for name, code, seconds in results:
        print(f"{name:<24} {'ok' if code == 0 else 'TARGET MISSED OR FAILED':<24} {seconds:7.1f} s")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
