"""Evaluation rows → summaries with paired intervals, and the Markdown of evaluation.md.

Model-free statistics over the rows the evaluation stage writes (one per method, seed,
task and split): the pipeline, the report and the CLI read them through here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from taskpgm.core.stats import mean_interval, paired_difference


def summarize(rows: Sequence[Mapping[str, Any]], reference: str = "uniform",
              metric: str = "accuracy") -> list[dict[str, Any]]:
    """Per method and split: the mean of ``metric`` over seeds with a 95% t-interval, and
    the paired difference against ``reference`` (same seeds) with its interval.

    The value of a (method, seed, split) is the mean over the split's tasks. ``metric``
    is a row field: ``accuracy`` or the secondary ``logprob``.
    """
    by: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in rows:
        by.setdefault((str(r["method"]), str(r["split"])), {}).setdefault(
            int(r["seed"]), []).append(float(r[metric]))
    per_seed = {key: {s: float(np.mean(v)) for s, v in seeds.items()} for key, seeds in by.items()}
    out = []
    for (method, split), seeds in sorted(per_seed.items()):
        values = [seeds[s] for s in sorted(seeds)]
        mean, lo, hi = mean_interval(values)
        entry: dict[str, Any] = {"method": method, "split": split, "seeds": len(values),
                                 "mean": mean, "lo": lo, "hi": hi}
        ref = per_seed.get((reference, split))
        if ref is not None and method != reference:
            common = sorted(set(seeds) & set(ref))
            d, dlo, dhi = paired_difference([seeds[s] for s in common], [ref[s] for s in common])
            entry.update(diff=d, diff_lo=dlo, diff_hi=dhi)
        out.append(entry)
    return out


METRIC_LABELS = {"accuracy": "accuracy", "logprob": "gold log-prob", "bpb": "bits per byte"}


def markdown_table(summary: Sequence[Mapping[str, Any]], reference: str = "uniform",
                   metric: str = "accuracy") -> str:
    """The summary as a Markdown table (mean [95% CI] and the paired difference).

    A difference over fewer than two paired seeds has no interval and says so in its
    interval column, so no single-seed difference reads as a result."""
    def fmt(v: Any) -> str:
        return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"

    label = METRIC_LABELS.get(metric, metric)
    lines = [f"| method | split | seeds | {label} | 95% CI | minus {reference} | 95% CI |",
             "|---|---|---|---|---|---|---|"]
    for e in summary:
        if e.get("diff") is not None and not np.isfinite(e.get("diff_lo", np.nan)):
            dci = "one seed: no interval"
        else:
            dci = f"[{fmt(e.get('diff_lo'))}, {fmt(e.get('diff_hi'))}]"
        lines.append(
            f"| {e['method']} | {e['split']} | {e['seeds']} | {fmt(e['mean'])} | "
            f"[{fmt(e['lo'])}, {fmt(e['hi'])}] | {fmt(e.get('diff'))} | {dci} |")
    return "\n".join(lines) + "\n"


#: Paired seeds a comparison of two mixtures needs at the least (the t-interval of a
#: paired difference needs two; the variance pilot, docs/benchmarks.md, says how many a
#: difference of a given size needs).
MIN_SEEDS = 5


def seed_note(summary: Sequence[Mapping[str, Any]], reference: str = "uniform") -> str:
    """One sentence on what the seeds of a summary can show, for evaluation.md, the CLI
    and the report."""
    # the untrained base is scored once (as seed 0): it says nothing of the seeds
    paired = [int(e["seeds"]) for e in summary
              if e.get("diff") is not None and e["method"] != "base"]
    if not paired:
        return f"No method was compared with {reference} on the same seeds."
    n = min(paired)
    if n >= 2:
        return (f"Differences against {reference} are paired over {n} seeds, with 95% "
                "t-intervals; a difference whose interval holds 0 is not shown.")
    return (f"One seed: a demonstration, not a comparison. A difference against {reference} "
            "at one seed has no interval and can be the luck of the training as much as the "
            f"weights; a comparison needs paired seeds (evaluation.seeds, {MIN_SEEDS} or more; "
            "docs/benchmarks.md's variance pilot says how many a given difference needs).")


def evaluation_markdown(rows: Sequence[Mapping[str, Any]], reference: str = "uniform",
                        summary: Sequence[Mapping[str, Any]] | None = None) -> str:
    """evaluation.md: accuracy, the gold log-probability (and bits per byte where a task is
    generative), each with intervals over seeds and paired differences. ``summary``: the
    accuracy summary of ``rows`` when the caller has it already."""
    acc = summarize(rows, reference) if summary is None else summary
    parts = ["# Evaluation\n",
             "Per method and split, the mean over seeds (a split's value is the mean over its "
             "tasks) with a 95% t-interval, and the paired difference against "
             f"{reference} on the same seeds. {seed_note(acc, reference)}\n",
             "## Accuracy\n", markdown_table(acc, reference),
             "## Gold log-probability\n",
             "The gold choice's log-probability under the choice distribution (higher is "
             "better): a continuous score that moves with learning before accuracy does.\n",
             markdown_table(summarize(rows, reference, "logprob"), reference, "logprob")]
    gen = [r for r in rows if r.get("bpb") not in (None, "")]
    if gen:
        parts += ["## Bits per byte (generative tasks)\n",
                  "Of the gold continuation (lower is better).\n",
                  markdown_table(summarize(gen, reference, "bpb"), reference, "bpb")]
    return "\n".join(parts)
