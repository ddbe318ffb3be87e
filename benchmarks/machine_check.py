"""Retrain ledger trainings on this machine and say how far they moved (docs/results-2026-12-01.md).

    python benchmarks/machine_check.py arith12 test uniform:1000 taskpgm:1000

Each named (method, seed) of the pool's ledger is trained again on its recorded weights,
in a throwaway ledger under ``--work``, and compared task by task with the ledger's rows:
items changed (accuracy × items), macro accuracy and mean gold log-probability.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from quality import protocol
from quality.ledger import Ledger


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pool", choices=list(protocol.POOLS))
    parser.add_argument("phase", choices=["dev", "test"])
    parser.add_argument("runs", nargs="+", help="METHOD:SEED entries of the ledger")
    parser.add_argument("--work", type=Path, default=protocol.ROOT / "runs" / "machine-check")
    args = parser.parse_args(argv)
    held = json.loads((protocol.LEDGERS / f"{args.pool}.json").read_text())
    budget, split = held["decisions"]["budget"], protocol.split_of(args.phase)
    wanted = []  # every entry checked before anything is loaded or trained
    for item in args.runs:
        method, _, seed = item.partition(":")
        key = Ledger.key(args.phase, budget, method, int(seed)) if seed.isdigit() else None
        if key not in held["trainings"]:
            raise SystemExit(f"{item!r}: no {args.phase} training of that METHOD:SEED in "
                             f"{protocol.LEDGERS / f'{args.pool}.json'}; name one the ledger "
                             "holds, "
                             "e.g. uniform:1000")
        wanted.append((method, int(seed), held["trainings"][key]))
    scratch = Ledger(args.work / "ledger.json", args.pool)
    scratch.data = dict(held, trainings={})  # the pool's record, none of its trainings
    pr = protocol.PoolRun(protocol.POOLS[args.pool], args.work, scratch)
    for method, seed, old in wanted:
        new = pr.train(args.phase, budget, method, old["weights"], seed)
        a = {r["task"]: r for r in old["rows"] if r["split"] == split}
        b = {r["task"]: r for r in new if r["split"] == split}
        moved = [round((b[t]["accuracy"] - a[t]["accuracy"]) * a[t]["n"]) for t in a]
        fam = pr.families
        acc = (protocol.metric(new, split, families=fam)
               - protocol.metric(old["rows"], split, families=fam))
        lp = float(np.mean([b[t]["logprob"] - a[t]["logprob"] for t in a]))
        print(f"{method} s{seed} (ledger machine {old.get('machine', 0)} -> this one): "
              f"items changed per task {moved}; macro accuracy {acc:+.4f}; "
              f"log-probability {lp:+.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
