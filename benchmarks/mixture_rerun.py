"""The decision benchmark run again, at the power it claims: three pools with known headroom,
every method at its best, chosen on dev and reported on test. Pre-registered in
docs/results.md (the first run: docs/results-2026-12-01.md, benchmarks/mixture_quality.py).

    .venv/bin/python benchmarks/mixture_rerun.py                # dev of every pool, then test
    .venv/bin/python benchmarks/mixture_rerun.py --phase dev    # only what chooses
    .venv/bin/python benchmarks/mixture_rerun.py --render       # docs from the ledgers only

Pools (``quality.rerun.POOLS``): arith12 and redundancy as in the first run, and a noise pool
(configs/mixture-noise.yaml) whose two corrupted tasks should get no weight. Every training
uses the ``crn-keyed`` sampler and fp32, so the same mixture at the same seed is the same
training on every machine.

Dev phase, per pool (dev split only): the budget (fixed where the first run chose it; the
noise pool sweeps 4,000 / 8,000 / 16,000 tokens, uniform against the known answer, seed
100); the pilot's paired sd (the variance pilot's crn-keyed rows; the noise pool's own seeds
100-103); a swarm of 24 mixtures drawn around uniform as RegMix does (seed 100) and every
method's fidelity over it; RegMix's linear and LightGBM fits, the better by leave-one-out
Spearman giving ``regmix`` (mean of the top 128 of 100,000 candidates) and ``regmix-argmax``;
the reference, affinity and split energies with the KL anchor at λ = 0, 0.03 and 0.3 (λ = ∞
is uniform) and MixMin, each at seeds 100 and 101; each energy's λ with the best mean dev
accuracy (ties to the larger λ).

One pool at a larger budget, on a GPU (its own ledgers, so the CPU run's stay as they are):

    python benchmarks/mixture_rerun.py --pools arith12 --budget 32000 --set base.device=cuda

Test phase: every pool's final table at seeds 2000-2009, seed-major across pools, so a run
stopped early holds complete paired seeds. Every training is in
benchmarks/results/mixture_rerun/POOL.json (rows, weights, CPU seconds, machine) as soon as it
finishes; a rerun skips what the ledgers hold, here or on another machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from quality.ledger import Ledger
from quality.protocol import ROOT, PoolRun
from quality.rerun import (
    POOLS,
    PRECISION,
    RERUN_LEDGERS,
    SAMPLER,
    TEST_SEED0,
    TEST_SEEDS,
    Rerun,
    test_round,
)
from taskpgm.errors import TaskPGMError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", nargs="+", default=list(POOLS), choices=list(POOLS))
    parser.add_argument("--phase", choices=["dev", "test", "all"], default="all")
    parser.add_argument("--test-seeds", type=int, default=TEST_SEEDS)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "mixture-rerun")
    parser.add_argument("--ledgers", type=Path, default=RERUN_LEDGERS)
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "results.json")
    parser.add_argument("--render", action="store_true", help="only write the docs")
    parser.add_argument("--budget", type=int, default=None,
                        help="one pool at this token budget instead of its own (ledgers, "
                             "work folder and docs get a -bBUDGET suffix)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="a config setting for every pool "
                        "(base.device=cuda for a GPU)")
    args = parser.parse_args(argv)
    pools = dict(POOLS)
    if args.budget is not None:
        if len(args.pools) != 1:
            parser.error("--budget takes one pool (--pools NAME)")
        name = args.pools[0]
        pools[name] = dataclasses.replace(pools[name], budget=args.budget)
        tag = f"-b{args.budget}"
        args.ledgers = args.ledgers.with_name(args.ledgers.name + tag)
        args.work = args.work.with_name(args.work.name + tag)
        args.doc = args.doc.with_name(args.doc.stem + tag + args.doc.suffix)
        args.json = args.json.with_name(args.json.stem + tag + args.json.suffix)
        if not args.doc.exists():
            args.doc.write_text(f"# The rerun's `{name}` pool at {args.budget:,} tokens\n\n"
                                "<!-- generated:start -->\n<!-- generated:end -->\n")
    from quality.rerun_render import write_docs

    ledgers = {p: Ledger(args.ledgers / f"{p}.json", p) for p in args.pools}
    shown = list(POOLS) if args.budget is None else args.pools

    def render() -> None:
        """Every pool's section: this process's pools from memory, the others from their
        ledger files as they stand (a run of another pool in another process included)."""
        write_docs({p: (ledgers[p] if p in ledgers else Ledger(args.ledgers / f"{p}.json", p)
                        ).data for p in shown}, args.doc, args.json)

    if not args.render:
        try:
            runs = {p: Rerun(pools[p], PoolRun(pools[p].pool, args.work / p, ledgers[p],
                                               sampler=SAMPLER, precision=PRECISION,
                                               overrides=tuple(args.overrides)))
                    for p in args.pools}
        except TaskPGMError as err:  # a pool's data: not served, or not its ledger's
            raise SystemExit(f"mixture_rerun: {err}") from None
        if args.phase in ("dev", "all"):
            for r in runs.values():
                r.dev()
                render()
        if args.phase in ("test", "all"):
            missing = [p for p in args.pools if "final_methods" not in ledgers[p].data["decisions"]]
            if missing:
                raise SystemExit(f"the dev phase of {', '.join(missing)} has not finished; "
                                 "run --phase dev first")
            for seed in range(TEST_SEED0, TEST_SEED0 + args.test_seeds):
                test_round(runs, seed)
                render()
    render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
