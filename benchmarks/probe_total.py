"""What a fixed-size probe sample (signals.probe_total) does to the weights.

For a pool whose signals are computed (the pipeline up to the relations is run first;
finished stages are reused), the scored probe set is subsampled the way
``signals.probe_total: N`` would choose it (``taskpgm.signals.sample_probes``, seeds 0..B-1),
the relations and the weights are recomputed from each subsample, and compared with the
weights from the whole probe set:

* L1 distance ‖p_N − p_full‖₁ (mean and max over the B seeds);
* beside it, the width of the full probe set's own 5-95% bootstrap intervals
  (``relations.bootstrap``), summed over tasks: the resampling noise the weights carry
  anyway.

    .venv/bin/python benchmarks/probe_total.py configs/demo.yaml --sizes 16 32 64 \\
        --out benchmarks/results/probe_total_demo.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from taskpgm import atomic
from taskpgm import config as config_mod
from taskpgm.pipeline import run
from taskpgm.predictions import from_signals
from taskpgm.readers import Relations, open_relations, open_signals
from taskpgm.relations_stage import relation_arrays
from taskpgm.signals import sample_probes
from taskpgm.weights import solve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--floor", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("runs/probe-total"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    cfg = config_mod.load(args.config)
    state = run(cfg, args.work / args.config.stem, until="weights")
    signals = open_signals(Path(state.stages["signals"]["path"]))
    relations = open_relations(Path(state.stages["relations"]["path"]))
    caps = np.asarray(state.files.read_methods()["caps"])
    tasks = relations.tasks
    pred = from_signals(signals, tasks, normalization=cfg.relations.normalization)
    settings: dict[str, Any] = {"budget": None, "utility_kind": cfg.mrf.utility, "caps": caps,
                                "untrusted": cfg.mrf.untrusted, "energy": cfg.mrf.energy}

    def weights_of(rel: Relations) -> np.ndarray:
        return np.array(list(solve(rel, cfg.mrf.rho, **settings)["weights"].values()))

    full = weights_of(relations)
    spans = (state.files.read_weights() or {}).get("intervals") or {}
    width = (float(sum(s["hi"] - s["lo"] for s in spans["tasks"].values()))
             if spans.get("tasks") else float("nan"))
    ids = signals.manifest["probe"]["ids"]
    task_of = pred.task_of
    by_task = {t: [SimpleNamespace(id=ids[i], index=i) for i in np.flatnonzero(task_of == k)]
               for k, t in enumerate(tasks)}
    total = int(task_of.size)
    rows = []
    for size in args.sizes:
        if size >= total:
            continue
        l1 = []
        for seed in range(args.seeds):
            chosen = sample_probes(by_task, size, args.floor, seed)
            keep = np.zeros(total, dtype=bool)
            keep[[ex.index for exs in chosen.values() for ex in exs]] = True
            arrays, _ = relation_arrays(pred.only_examples(keep), list(tasks), cfg.relations)
            rel = Relations(relations.path, relations.fingerprint, list(tasks), arrays,
                            relations.info)
            l1.append(float(np.abs(weights_of(rel) - full).sum()))
        rows.append({"probe_total": size, "share": size / total, "l1_mean": float(np.mean(l1)),
                     "l1_max": float(np.max(l1)), "seeds": args.seeds})
        print(f"N = {size:4d} of {total} ({size / total:.0%}): L1 to the full probe set "
              f"mean {np.mean(l1):.3f}, max {np.max(l1):.3f} over {args.seeds} samples; "
              f"bootstrap interval widths of the full set sum to {width:.3f}", flush=True)
    result = {"config": str(args.config), "tasks": list(tasks), "probe_examples": total,
              "full_weights": dict(zip(tasks, map(float, full), strict=True)),
              "bootstrap_width_sum": width, "floor": args.floor, "rows": rows}
    if args.out:
        atomic.write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
