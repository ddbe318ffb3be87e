"""Bootstrap intervals on the weights: resample the probe set, recompute the relations, re-solve.

Draw b = 1..B resamples of the probe set, stratified by task: within task j,
n_j of its n_j probe examples with replacement, so every task keeps its probe
count. Draw b gives example x the weight c_bx / N (its multiplicity over N),
and every relation is recomputed under it from the cached predictions — no
model runs:

* JSD_b: one pass over the midpoints for all draws (:func:`taskpgm.core.relations.jsd_matrices`);
* PMI_b,ij = Σ_{x∈probe(j)} c_bx g_i(x) / n_j with g_i(x) = (ℓ_{i+1}(x) − ℓ_0(x)) / n(x);
* S_b = affinity(JSD_b, PMI_b) with the run's settings.

The weights stage solves each draw exactly (:func:`weight_intervals` summarizes):
per task the 5–95% interval of its weight and P(p_i > 0); a task is *dropped*
only when it gets no weight in at least 90% of the draws. Which experts are
trusted stays as decided on the full probe set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from taskpgm.core.relations import AffinityInfo, affinity, jsd_matrices
from taskpgm.predictions import ProbePredictions

FloatArray = NDArray[np.float64]
#: A task is called dropped when its weight is 0 in at least this share of the draws.
DROPPED_SHARE = 0.9


def draw_counts(task_of: NDArray[np.int64], draws: int, seed: int = 0) -> NDArray[np.int64]:
    """(draws, N) multiplicities: within each task, its n_j examples drawn with replacement."""
    rng = np.random.default_rng(seed)
    n = task_of.size
    counts = np.zeros((draws, n), dtype=np.int64)
    for j in np.unique(task_of):
        idx = np.flatnonzero(task_of == j)
        picks = rng.integers(0, idx.size, size=(draws, idx.size))
        for b in range(draws):
            counts[b, idx] = np.bincount(picks[b], minlength=idx.size)
    return counts


def _pmi_under(gain: FloatArray, counts: NDArray[np.int64], task_of: NDArray[np.int64],
               n_tasks: int) -> FloatArray:
    """(B, T, T): PMI_ij = Σ_{x ∈ probe(j)} c_bx g_i(x) / Σ_{x ∈ probe(j)} c_bx."""
    out = np.zeros((counts.shape[0], gain.shape[0], n_tasks))
    for j in range(n_tasks):
        idx = task_of == j
        c = counts[:, idx].astype(np.float64)  # (B, n_j)
        out[:, :, j] = (c @ gain[:, idx].T) / c.sum(axis=1, keepdims=True)
    return out


def relation_replicates(pred: ProbePredictions, *, alpha: float, kernel: str, pmi_form: str,
                        draws: int, seed: int = 0) -> dict[str, FloatArray]:
    """Every draw's JSD, PMI (per token and per sequence) and affinity, stacked on axis 0."""
    assert pred.row_example is not None, "predictions without the row -> example map"
    t = len(pred.tasks)
    counts = draw_counts(pred.task_of, draws, seed)
    row_w = pred.row_weights[None, :] * counts[:, pred.row_example]
    row_w = row_w / row_w.sum(axis=1, keepdims=True)  # each draw: c_x / N spread over x's rows
    jsd = jsd_matrices(pred.rows, row_w)
    gain = (pred.loglik[1:] - pred.loglik[0]) / pred.tokens
    pmi = _pmi_under(gain, counts, pred.task_of, t)
    pmi_seq = _pmi_under(pred.loglik[1:] - pred.loglik[0], counts, pred.task_of, t)
    s = np.stack([_affinity(jsd[b], pmi[b], alpha, kernel, pmi_form) for b in range(draws)])
    return {"boot_jsd": jsd, "boot_pmi": pmi, "boot_pmi_sequence": pmi_seq, "boot_affinity": s}


def _affinity(jsd: FloatArray, pmi: FloatArray, alpha: float, kernel: str, pmi_form: str
              ) -> FloatArray:
    out = affinity(jsd, pmi, alpha, kernel=kernel, pmi_form=pmi_form,  # type: ignore[arg-type]
                   return_info=True)
    assert isinstance(out, tuple) and isinstance(out[1], AffinityInfo)
    return out[0]


def weight_intervals(draws: FloatArray, tasks: Sequence[str]) -> dict[str, Any]:
    """Summary of (B, T) weights over the draws: interval, P(p > 0), dropped tasks."""
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    positive = (draws > 1e-12).mean(axis=0)
    return {
        "draws": int(draws.shape[0]),
        "tasks": {name: {"lo": float(lo[i]), "hi": float(hi[i]),
                         "p_positive": float(positive[i])} for i, name in enumerate(tasks)},
        "dropped": [name for i, name in enumerate(tasks)
                    if 1.0 - positive[i] >= DROPPED_SHARE],
    }
