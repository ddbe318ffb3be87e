"""The benchmark that decides: does any mixture beat uniform, does TaskPGM's, and which
variant should be the default? Pre-registered in docs/results-2026-12-01.md before the run.

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
training. ``--render`` (and the end of every run) writes docs/results-2026-12-01.json and the
generated part of docs/results-2026-12-01.md from the ledgers alone.
"""


from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quality.ledger import Ledger
from quality.protocol import LEDGERS, POOLS, ROOT, PoolRun, dev_phase, test_phase
from quality.render import write_docs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", nargs="+", default=list(POOLS), choices=list(POOLS))
    parser.add_argument("--phase", choices=["dev", "test", "all"], default="all")
    parser.add_argument("--swarm", type=int, default=32)
    parser.add_argument("--test-seeds", type=int, default=10)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "mixture-quality")
    parser.add_argument("--ledgers", type=Path, default=LEDGERS)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "results-2026-12-01.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results-2026-12-01.json")
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

