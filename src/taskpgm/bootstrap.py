"""Bootstrap intervals on the weights: resample the probe set, recompute the relations, re-solve.

The probe set is dealt into K stratified blocks once (:func:`probe_blocks`: each task's
examples, shuffled, go round-robin over the blocks, so every block is a small probe set
with every task in proportion). The main pass over the midpoints
(:func:`taskpgm.core.relations.jsd_block_sums`) keeps each block's JSD sums beside the
total, so a draw costs no second pass. Draw b repeats block k c_bk times (K blocks drawn
with replacement) and gives example x the multiplicity c_b,block(x); every relation is
recomputed under it from the cached predictions — no model runs:

* JSD_b = Σ_k c_bk Σ_k / Σ_k c_bk W_k, Σ_k the block's weighted JSD sums and W_k its weight;
* PMI_b,ij = Σ_{x∈probe(j)} c_bx g_i(x) / Σ_{x∈probe(j)} c_bx,
  g_i(x) = (ℓ_{i+1}(x) − ℓ_0(x)) / n(x) (a task none of whose blocks was drawn keeps its
  full probe set in that draw);
* S_b = affinity(JSD_b, PMI_b) with the run's settings.

This is the per-example bootstrap with multiplicities constant within a block: with K
blocks its variance is (K − 1)/K of the per-example one's, and the intervals match the
per-example bootstrap (:func:`per_example_replicates`, kept as the reference) within the
tolerance tests/test_bootstrap.py states. The weights stage solves each draw exactly
(:func:`weight_intervals` summarizes): per task the 5–95% interval of its weight and
P(p_i > 0); a task is *dropped* only when it gets no weight in at least 90% of the draws.
Which experts are trusted stays as decided on the full probe set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from taskpgm.core.jsd import PairKernel, jsd_pairs_numpy
from taskpgm.core.relations import AffinityInfo, affinity, jsd_block_sums, jsd_matrices
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


def _pmi_under(gain: FloatArray, counts: NDArray[Any], task_of: NDArray[np.int64],
               n_tasks: int) -> FloatArray:
    """(B, T, T): PMI_ij = Σ_{x ∈ probe(j)} c_bx g_i(x) / Σ_{x ∈ probe(j)} c_bx (c_bx a
    multiplicity or a weight)."""
    out = np.zeros((counts.shape[0], gain.shape[0], n_tasks))
    for j in range(n_tasks):
        idx = task_of == j
        c = counts[:, idx].astype(np.float64)  # (B, n_j)
        out[:, :, j] = (c @ gain[:, idx].T) / c.sum(axis=1, keepdims=True)
    return out


def probe_blocks(task_of: NDArray[np.int64], n_blocks: int, seed: int = 0) -> NDArray[np.int64]:
    """(N,) the block of each probe example: every task's examples, shuffled, dealt round-robin
    over the blocks, continuing where the previous task stopped (so blocks differ in size
    by at most one and each task's share of a block is within one of n_j / K)."""
    rng = np.random.default_rng(seed)
    block_of = np.empty(task_of.size, dtype=np.int64)
    dealt = 0
    for j in np.unique(task_of):
        idx = rng.permutation(np.flatnonzero(task_of == j))
        block_of[idx] = (dealt + np.arange(idx.size)) % n_blocks
        dealt += idx.size
    return block_of


def block_draws(n_blocks: int, draws: int, seed: int = 0) -> NDArray[np.int64]:
    """(draws, K) multiplicities: K of the K blocks drawn with replacement, per draw."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n_blocks, size=(draws, n_blocks))
    return np.stack([np.bincount(p, minlength=n_blocks) for p in picks]).astype(np.int64)


def balance(task_of: NDArray[np.int64], block_of: NDArray[np.int64], n_blocks: int
            ) -> FloatArray:
    """(N,) the factor that gives every block the same weight of each task: example x of
    task j in block k gets (n_j / K_j) / n_jk, K_j the blocks holding task j (min(K, n_j)
    when dealt by :func:`probe_blocks`). Any draw of K blocks then keeps each task's total
    weight where K_j = K, as the per-example bootstrap's strata do."""
    n_tasks = int(task_of.max()) + 1
    n_jk = np.zeros((n_tasks, n_blocks))
    np.add.at(n_jk, (task_of, block_of), 1.0)
    held = (n_jk > 0).sum(axis=1)
    out: FloatArray = (n_jk.sum(axis=1) / held)[task_of] / n_jk[task_of, block_of]
    return out


def example_weights(block_of: NDArray[np.int64], per_block: NDArray[np.int64],
                    task_of: NDArray[np.int64], factor: FloatArray) -> FloatArray:
    """(draws, N) each example's weight under block draws, c_b,block(x) · factor(x); a task
    whose examples all sit in undrawn blocks keeps its full probe set in that draw."""
    w = per_block[:, block_of] * factor[None, :]
    for j in np.unique(task_of):
        idx = task_of == j
        empty = w[:, idx].sum(axis=1) == 0
        if empty.any():
            w[np.ix_(empty, np.flatnonzero(idx))] = 1.0
    return w


def example_draws(task_of: NDArray[np.int64], base: FloatArray, draws: int, blocks: int,
                  seed: int = 0) -> FloatArray:
    """(draws, N) block-bootstrap draws of per-example weights ``base`` (MixMin's items):
    within each task the weights are scaled by the draw's multiplicities and renormalized
    to the task's total, so every task keeps its share of the loss."""
    n_blocks = max(1, min(blocks, task_of.size))
    block_of = probe_blocks(task_of, n_blocks, seed)
    mult = example_weights(block_of, block_draws(n_blocks, draws, seed + 1), task_of,
                           balance(task_of, block_of, n_blocks))
    out = base[None, :] * mult
    for j in np.unique(task_of):
        idx = task_of == j
        total = float(base[idx].sum())
        if total > 0:
            out[:, idx] *= total / out[:, idx].sum(axis=1, keepdims=True)
    return out


def relations_with_replicates(
    pred: ProbePredictions, *, alpha: float, kernel: str, pmi_form: str, draws: int,
    blocks: int, seed: int = 0, pairs: PairKernel = jsd_pairs_numpy,
) -> tuple[FloatArray, dict[str, FloatArray]]:
    """The mean-JSD matrix and every block-bootstrap draw's JSD, PMI (per token and per
    sequence) and affinity, stacked on axis 0, from one pass over the midpoints."""
    assert pred.row_example is not None, "predictions without the row -> example map"
    t = len(pred.tasks)
    n_blocks = max(1, min(blocks, pred.task_of.size))
    block_of = probe_blocks(pred.task_of, n_blocks, seed)
    factor = balance(pred.task_of, block_of, n_blocks)
    row_block = block_of[pred.row_example]
    row_balanced = pred.row_weights * factor[pred.row_example]
    jsd, sums = jsd_block_sums(pred.rows, row_block, n_blocks, weights=pred.row_weights,
                               block_weights=row_balanced, pairs=pairs)
    per_block = block_draws(n_blocks, draws, seed + 1)
    block_w = np.bincount(row_block, weights=row_balanced, minlength=n_blocks)
    mix = per_block / (per_block @ block_w)[:, None]  # (B, K): c_bk / Σ_k c_bk W_k
    flat = sums.reshape(n_blocks, -1)
    boot_jsd = np.stack([(mix[b].astype(np.float32) @ flat).astype(np.float64)
                         for b in range(draws)]).reshape(draws, t + 1, t + 1)
    weights = example_weights(block_of, per_block, pred.task_of, factor)
    return jsd, _replicates(pred, boot_jsd, weights, alpha, kernel, pmi_form)


def _replicates(pred: ProbePredictions, jsd: FloatArray, counts: NDArray[Any],
                alpha: float, kernel: str, pmi_form: str) -> dict[str, FloatArray]:
    t = len(pred.tasks)
    gain = (pred.loglik[1:] - pred.loglik[0]) / pred.tokens
    pmi = _pmi_under(gain, counts, pred.task_of, t)
    pmi_seq = _pmi_under(pred.loglik[1:] - pred.loglik[0], counts, pred.task_of, t)
    s = np.stack([_affinity(jsd[b], pmi[b], alpha, kernel, pmi_form)
                  for b in range(counts.shape[0])])
    return {"boot_jsd": jsd, "boot_pmi": pmi, "boot_pmi_sequence": pmi_seq, "boot_affinity": s}


def per_example_replicates(pred: ProbePredictions, *, alpha: float, kernel: str,
                           pmi_form: str, draws: int, seed: int = 0) -> dict[str, FloatArray]:
    """The per-example stratified bootstrap (each task's n_j examples drawn with
    replacement), with its own pass over the midpoints for all draws: the reference the
    block bootstrap is checked against (tests/test_bootstrap.py) and timed against
    (benchmarks/bench_scale.py)."""
    assert pred.row_example is not None, "predictions without the row -> example map"
    counts = draw_counts(pred.task_of, draws, seed)
    row_w = pred.row_weights[None, :] * counts[:, pred.row_example]
    row_w = row_w / row_w.sum(axis=1, keepdims=True)  # each draw: c_x / N spread over x's rows
    return _replicates(pred, jsd_matrices(pred.rows, row_w), counts, alpha, kernel, pmi_form)


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
