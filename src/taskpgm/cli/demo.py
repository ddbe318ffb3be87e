"""``taskpgm demo``: the whole pipeline on the shipped demo config, into ``runs/demo``.

``taskpgm demo --synthetic`` instead runs only the math core on a built-in
synthetic example (instant, no model), and says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from taskpgm.core.mrf import TaskMixtureMRF
from taskpgm.core.relations import AffinityInfo, affinity, jsd_matrix, transfer_pmi
from taskpgm.core.synthetic import synthetic_signals


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline on the embedded default (configs/demo.yaml)",
        description=__doc__,
    )
    parser.add_argument("--out", type=Path, default=None,
                        help="run directory (default runs/demo, runs/demo-offline offline)")
    parser.add_argument("--offline", action="store_true",
                        help="the offline variant (configs/demo-offline.yaml): data that needs "
                             "no BIG-bench download; chosen by itself where the package index "
                             "does not serve BIG-bench's archive")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a demo config value (repeatable)")
    parser.add_argument("--synthetic", action="store_true",
                        help="only the math core on a built-in synthetic example (no model)")
    parser.add_argument("--rho", type=float, default=None,
                        help="utility weight rho (default: 1/T, which gives uniform weights "
                             "when the optimum is interior, and 0 beside it)")
    parser.add_argument("--budget", type=int, default=3, help="budget k of the budgeted variant")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="weight of the displacement cosine in the affinity")
    parser.set_defaults(handler=run)


DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
OFFLINE_CONFIG = DEMO_CONFIG.with_name("demo-offline.yaml")


def demo_config(offline: bool = False) -> tuple[Path, str | None]:
    """The demo's config and, for the offline variant, why: ``demo.yaml``, or
    ``demo-offline.yaml`` when asked for or where the package index answers that it does not
    serve BIG-bench's archive (a filtered mirror). Any other failure to get the archive
    (no network at all, a corrupt download) is raised: MMLU would not download either."""
    if offline:
        return OFFLINE_CONFIG, "asked for with --offline"
    from taskpgm.tasks import bigbench

    refused = bigbench.not_served()  # the archive, downloaded and indexed once (the demo needs it)
    if refused is not None:
        return OFFLINE_CONFIG, f"the package index does not serve BIG-bench's archive ({refused})"
    return DEMO_CONFIG, None


def run(args: argparse.Namespace) -> int:
    if args.synthetic:
        return synthetic(args)
    from taskpgm import config as config_mod
    from taskpgm.cli.run import print_evaluation, print_paths, print_weights
    from taskpgm.pipeline import run as run_pipeline

    path, why = demo_config(args.offline)
    out = args.out or Path("runs") / path.stem
    cfg = config_mod.load(path, args.overrides)
    if why is not None:
        print(f"taskpgm demo: the offline variant, {why}. It has the demo's shape, a family "
              "of three related tasks beside an unrelated one: the three shards of BIG-bench's "
              "intent_recognition that ship with taskpgm and MMLU's miscellaneous questions.",
              flush=True)
    print(f"taskpgm demo: {path.name} -> {out} (about 5 to 12 minutes on 2 CPU cores the "
          "first time, by the CPU: docs/demo.md; seconds once its artifacts exist)", flush=True)
    run_pipeline(cfg, out)
    print_weights(out)
    print_evaluation(out)
    print_paths(out)
    return 0


def synthetic(args: argparse.Namespace) -> int:
    sig = synthetic_signals()
    t = len(sig.tasks)
    print("taskpgm demo: the math core on a built-in SYNTHETIC example "
          "(no model is trained; the model pipeline is not built yet)")
    print(f"  {t} tasks, {sig.dists.shape[1]} probe examples, {sig.dists.shape[2]} choices; "
          "tasks 1-3 share a skill by construction\n")
    jsd = jsd_matrix(sig.dists)
    pmi = transfer_pmi(sig.gold_logprob(), np.ones(sig.gold.shape[0]), sig.task_of)
    s, info = affinity(jsd, pmi, args.alpha, names=list(sig.tasks), return_info=True)
    assert isinstance(info, AffinityInfo)
    width = max(len(name) for name in sig.tasks)
    print("affinity S (displacement cosine blended with squashed transfer PMI):")
    print(" " * (width + 2) + " ".join(f"{name[:6]:>7}" for name in sig.tasks))
    for name, row in zip(sig.tasks, s, strict=True):
        print(f"  {name:<{width}}" + " ".join(f"{v:7.3f}" for v in row))
    print(f"  PSD correction: {len(info.clipped_eigenvalues)} eigenvalue(s) clipped, "
          f"Frobenius change {info.correction_norm:.2e}\n")
    rhos = [0.0, 1.0 / t] if args.rho is None else [args.rho]
    fits = [(f"rho={rho:.4g}", TaskMixtureMRF(rho).fit(s)) for rho in rhos]
    budget_rho = rhos[-1]
    fits.append((f"rho={budget_rho:.4g} k={args.budget}",
                 TaskMixtureMRF(budget_rho, budget=args.budget).fit(s)))
    print("weights (exact minimizer of E(p) = 1/2 p'Sp - rho u'p on the simplex, u = S1):")
    print(" " * (width + 2) + "".join(f"{label:>16}" for label, _ in fits))
    for i, name in enumerate(sig.tasks):
        print(f"  {name:<{width}}" + "".join(f"{m.weights_[i]:16.4f}" for _, m in fits))
    print(f"  {'energy':<{width}}" + "".join(f"{m.energy_:16.5f}" for _, m in fits))
    print(f"  {'KKT residual':<{width}}" + "".join(f"{m.kkt_residual_:16.1e}" for _, m in fits))
    greedy = fits[-1][1]
    order = ", ".join(sig.tasks[j] for j in greedy.selected_ or [])
    print(f"\ngreedy selection under k={args.budget}: {order}")
    return 0
