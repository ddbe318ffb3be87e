"""The learning table of docs/experts.md: base versus expert accuracy on each task's probe split.

    .venv/bin/python benchmarks/experts_table.py configs/demo.yaml \
        --csv docs/experts.csv --markdown /tmp/experts-table.md [--set experts.precision=fp32]

Runs (or reuses) the experts and signals stages of the config, then, for each
task t, scores its probe split with the base model and with expert t. A model's
answer is the choice with the highest summed log-likelihood; it is right when
that choice is one of the correct ones. Columns:

* ``majority``: the majority-class rate of the split (most frequent gold answer text);
* ``expert_lo``: lower end of the 95% Wilson interval of the expert's accuracy;
* ``diff_lo`` / ``diff_hi``: 95% paired bootstrap interval (10,000 resamples of the
  probe examples, seed 0) of expert minus base accuracy.

An expert *improves significantly* when ``diff_lo > 0`` and ``expert_lo > majority``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from taskpgm import config as config_module
from taskpgm.core.stats import paired_bootstrap, wilson_interval
from taskpgm.inputs import load_tasks
from taskpgm.pipeline import signals_of

COLUMNS = ["task", "n", "majority", "base_acc", "expert_acc", "expert_lo", "diff", "diff_lo",
           "diff_hi"]


def correct(arrays: dict[str, np.ndarray], rows: list[int], right: list[set[int]]) -> np.ndarray:
    off, ll = arrays["choice_offsets"], arrays["choice_ll"]
    picks = [int(np.argmax(ll[off[i] : off[i + 1]])) for i in rows]
    return np.array([p in r for p, r in zip(picks, right, strict=True)], dtype=float)


def table(config_path: str, overrides: list[str] | None = None) -> list[dict[str, object]]:
    cfg = config_module.load(config_path, overrides or [])
    result = signals_of(cfg)
    tasks = load_tasks(cfg)
    position = {ex_id: i for i, ex_id in enumerate(result.example_ids)}
    base = result.arrays("base")
    out: list[dict[str, object]] = []
    for name, splits in tasks.items():
        probe = [ex for ex in splits.probe if ex.choices is not None]
        rows = [position[ex.id] for ex in probe]
        right = [set(ex.correct) for ex in probe]
        b = correct(base, rows, right)
        e = correct(result.arrays(f"expert:{name}"), rows, right)
        n = len(probe)
        majority = Counter(ex.answer_text for ex in probe).most_common(1)[0][1] / n
        lo, hi = paired_bootstrap(e, b)
        out.append({
            "task": name, "n": n, "majority": round(majority, 3),
            "base_acc": round(b.mean(), 3), "expert_acc": round(e.mean(), 3),
            "expert_lo": round(wilson_interval(int(e.sum()), n)[0], 3),
            "diff": round(e.mean() - b.mean(), 3), "diff_lo": round(lo, 3),
            "diff_hi": round(hi, 3),
        })
    return out


def markdown(rows: list[dict[str, object]]) -> str:
    head = ("| task | n | majority | base acc | expert acc | expert 95% lo | "
            "diff [95% CI] | significant |\n|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        sig = float(r["diff_lo"]) > 0 and float(r["expert_lo"]) > float(r["majority"])  # type: ignore[arg-type]
        lines.append(f"| {r['task']} | {r['n']} | {r['majority']:.3f} | {r['base_acc']:.3f} | "
                     f"{r['expert_acc']:.3f} | {r['expert_lo']:.3f} | {r['diff']:+.3f} "
                     f"[{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}] | {'yes' if sig else 'no'} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--csv", default=None, help="write the table as CSV (docs/experts.csv)")
    parser.add_argument("--markdown", default=None, help="also write the markdown table here")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config value (repeatable), e.g. "
                        "experts.precision=fp32")
    args = parser.parse_args(argv)
    rows = table(args.config, args.overrides)
    if args.csv:
        with Path(args.csv).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    text = markdown(rows)
    if args.markdown:
        Path(args.markdown).write_text(text)
    print(text)
    significant = sum(float(r["diff_lo"]) > 0 and float(r["expert_lo"]) > float(r["majority"])  # type: ignore[arg-type]
                      for r in rows)
    print(f"{significant} of {len(rows)} experts improve significantly")
    return 0 if 3 * significant >= 2 * len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
