"""From what models predict on the probe set to relations between tasks.

Notation (docs/design.md): model 0 is the base model, model i+1
the expert of task i; for a probe example x, q_m(· | x) is the predictive
distribution of model m and ℓ_m(x) the log-likelihood of the gold answer.

* :func:`jensen_shannon` — JSD(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = ½ (p + q),
  in nats, with 0 · log 0 = 0.
* :func:`jsd_matrix` — JSD_ab = mean over probe x of JSD(q_a(·|x), q_b(·|x)).
* :func:`displacement_cosine` — K_ij = G_ij / √(G_ii G_jj) with
  G_ij = ½ (JSD_i0 + JSD_j0 − JSD_ij), the Gram matrix of the experts'
  displacements from the base (√JSD is a Hilbert metric, so G is PSD).
* :func:`transfer_pmi` — PMI_ij = mean over x in probe(j) of (ℓ_i(x) − ℓ_0(x)) / n(x).
* :func:`affinity` — S = α K + (1 − α) tanh(P / s), P the symmetric PMI,
  s the median |off-diagonal| of P, projected onto the PSD cone with unit diagonal.

Everything here is numpy float64 in and out, does no I/O and imports no torch;
:func:`jsd_matrix` takes its block kernel (``pairs``), so a GPU's (:mod:`taskpgm.jsd_torch`)
plugs in from outside the core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from taskpgm.core.jsd import PairKernel, jsd_pairs_numpy
from taskpgm.errors import InvalidInputError

FloatArray = NDArray[np.float64]

#: Rows of a probability array must sum to 1 within this tolerance.
SUM_TOLERANCE = 1e-6
#: Default memory bound of one block of :func:`jsd_matrix`, in bytes: small enough
#: that a block and its temporaries stay in the CPU cache (measured fastest at 2–4 MiB).
JSD_BLOCK_BYTES = 2 * 2**20
#: A displacement G_ii at or below this is treated as zero (expert equal to the base).
MIN_DISPLACEMENT = 1e-12
_LN2 = math.log(2.0)


class NotADistributionError(InvalidInputError):
    """A row that should be a probability distribution is not one."""


class ZeroDisplacementError(InvalidInputError):
    """An expert predicts exactly what the base model predicts, so its direction is undefined."""


# --------------------------------------------------------------------------- validation


def _as_float_array(x: ArrayLike, name: str) -> FloatArray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"{name} must be an array of numbers: {err}") from err
    return arr


def _first_bad(mask: NDArray[np.bool_]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def _check_finite(arr: FloatArray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = _first_bad(bad)
        raise InvalidInputError(
            f"{name} has a non-finite value {arr[idx]} at index {idx}; "
            "remove NaN/inf before computing relations"
        )


def _check_distributions(arr: FloatArray, name: str) -> FloatArray:
    """Validate rows along the last axis as distributions; return them renormalized.

    Rows within :data:`SUM_TOLERANCE` of 1 are divided by their sum, as
    ``scipy.spatial.distance.jensenshannon`` does, so tiny rounding in the
    input does not leak into the result.
    """
    if arr.ndim == 0:
        raise InvalidInputError(f"{name} must have a last axis of categories, got a scalar")
    if arr.shape[-1] == 0:
        raise InvalidInputError(f"{name} has no categories (last axis of size 0)")
    _check_finite(arr, name)
    neg = arr < 0
    if neg.any():
        idx = _first_bad(neg)
        raise NotADistributionError(
            f"{name} has a negative probability {arr[idx]:.3g} at index {idx}"
        )
    sums = arr.sum(axis=-1)
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    if off.any():
        idx = _first_bad(off)
        raise NotADistributionError(
            f"{name} row {idx} sums to {sums[idx]:.9g}, not 1 (tolerance {SUM_TOLERANCE:g}); "
            "pass probabilities (e.g. a softmax), padding missing choices with 0"
        )
    normalized: FloatArray = arr / sums[..., None]
    return normalized


def _check_square(arr: FloatArray, name: str) -> None:
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise InvalidInputError(f"{name} must be a square matrix, got shape {arr.shape}")


def _check_symmetric(arr: FloatArray, name: str, tol: float = 1e-8) -> None:
    asym = np.abs(arr - arr.T) > tol * max(1.0, float(np.abs(arr).max(initial=0.0)))
    if asym.any():
        i, j = _first_bad(asym)
        raise InvalidInputError(
            f"{name} is not symmetric: [{i}, {j}] = {arr[i, j]:.6g} "
            f"but [{j}, {i}] = {arr[j, i]:.6g}"
        )


def _task_name(names: list[str] | None, i: int) -> str:
    return f"task {i} ({names[i]!r})" if names is not None else f"task {i}"


# --------------------------------------------------------------------------- divergences


def jensen_shannon(p: ArrayLike, q: ArrayLike) -> FloatArray:
    """Jensen–Shannon divergence in nats along the last axis.

    JSD(p, q) = ½ Σ_c p_c log(p_c / m_c) + ½ Σ_c q_c log(q_c / m_c), m = ½ (p + q),
    with 0 · log 0 = 0, so a zero in q where p > 0 is fine (m > 0 there) and
    padded choices (zero in both) contribute nothing. The result lies in [0, ln 2].

    Args:
        p, q: arrays of the same shape (..., C); each row a probability distribution.

    Returns:
        Array of shape (...) with the divergence of each pair of rows.

    Raises:
        NotADistributionError: a row is negative or does not sum to 1 within 1e-6
            (the message names the offending index).
    """
    pa = _check_distributions(_as_float_array(p, "p"), "p")
    qa = _check_distributions(_as_float_array(q, "q"), "q")
    if pa.shape != qa.shape:
        raise InvalidInputError(f"p and q must have the same shape, got {pa.shape} and {qa.shape}")
    m = 0.5 * (pa + qa)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(pa > 0, pa * (np.log(pa) - np.log(m)), 0.0).sum(axis=-1)
        kl_q = np.where(qa > 0, qa * (np.log(qa) - np.log(m)), 0.0).sum(axis=-1)
    out: FloatArray = np.clip(0.5 * (kl_p + kl_q), 0.0, math.log(2.0))
    return out


def _row_weights(weights: ArrayLike | None, n_examples: int) -> FloatArray:
    """Row weights: uniform 1/N by default, else (N,) finite, non-negative, summing to 1."""
    if weights is None:
        return np.full(n_examples, 1.0 / n_examples)
    w = _as_float_array(weights, "weights")
    if w.shape != (n_examples,):
        raise InvalidInputError(f"weights must have shape ({n_examples},), got {w.shape}")
    _check_finite(w, "weights")
    if (w < 0).any() or abs(float(w.sum()) - 1.0) > SUM_TOLERANCE:
        raise InvalidInputError("weights must be non-negative and sum to 1")
    return w


def jsd_matrix(
    dists: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    block_bytes: int = JSD_BLOCK_BYTES,
    pairs: PairKernel = jsd_pairs_numpy,
) -> FloatArray:
    """Mean Jensen–Shannon divergence between every pair of models.

    JSD_ab = (1/N) Σ_n JSD(dists[a, n], dists[b, n]), or Σ_n w_n JSD(...) with
    ``weights`` (e.g. 1/(N·n_x) for each of the n_x answer positions of a
    generative example x, so every probe example counts once). It is computed as
    JSD(p, q) = ½ H̃(p) + ½ H̃(q) − H̃(m), H̃(x) = Σ_c x_c log x_c, so each
    model's own term is computed once and each pair only needs H̃ of its
    midpoint. Pairs are visited in the upper triangle only, one model a
    against all b > a, in chunks of examples so that one block holds at most
    ``block_bytes``; no (M, M, N, C) array is ever built.

    Two kernels compute the same blocks: numpy with one worker thread per core
    (the default) and torch on any device (:func:`taskpgm.jsd_torch.default_pairs`
    picks it on a GPU).
    Measured on 2 CPU cores shared with other jobs, torch's OpenMP threads
    spent most of their time waiting for each other (113 s for T=100,
    N=20,000, C=8) where the numpy kernel took 4.3 s; numpy's vectorized log
    is also faster per element than torch's on one core.

    Args:
        dists: (M, N, C) probabilities: M models, N probe examples, C categories
            (pad examples with fewer categories with zeros).
        weights: (N,) non-negative row weights summing to 1; default uniform 1/N.
        block_bytes: memory bound of one block of midpoints (per worker).
        pairs: the block kernel, ``(dists, row_weights, block_bytes)`` to the
            upper triangle (:data:`taskpgm.core.jsd.PairKernel`).

    Returns:
        (M, M) symmetric float64 matrix with a zero diagonal, entries in [0, ln 2].
    """
    arr = _as_float_array(dists, "dists")
    if arr.ndim != 3:
        raise InvalidInputError(
            f"dists must have shape (models, examples, categories), got {arr.shape}"
        )
    n_examples = arr.shape[1]
    if n_examples == 0:
        raise InvalidInputError("dists has no probe examples (axis 1 is empty)")
    arr = _check_distributions(arr, "dists")
    row_w = _row_weights(weights, n_examples)
    upper = pairs(arr, row_w, block_bytes)
    result: FloatArray = upper + upper.T
    return result


def jsd_matrices(dists: ArrayLike, weights: ArrayLike, *, block_bytes: int = JSD_BLOCK_BYTES
                 ) -> FloatArray:
    """:func:`jsd_matrix` under B row weightings at once: (B, M, M) from weights (B, N).

    One pass over the midpoints serves every weighting (each block's pair terms are
    multiplied by the (N, B) weight matrix), so a bootstrap of B draws costs about one
    JSD matrix plus a matrix product. Each weighting must be non-negative and sum to 1.
    """
    arr = _check_distributions(_as_float_array(dists, "dists"), "dists")
    w = _as_float_array(weights, "weights")
    if arr.ndim != 3 or w.ndim != 2 or w.shape[1] != arr.shape[1]:
        raise InvalidInputError(f"need dists (M, N, C) and weights (B, N), got {arr.shape} "
                                f"and {w.shape}")
    if (w < 0).any() or (np.abs(w.sum(axis=1) - 1.0) > SUM_TOLERANCE).any():
        raise InvalidInputError("each row of weights must be non-negative and sum to 1")
    upper = jsd_pairs_numpy(arr, np.ascontiguousarray(w.T), block_bytes)  # (M, M, B)
    out: FloatArray = np.moveaxis(upper + upper.transpose(1, 0, 2), 2, 0)
    return out


def jsd_block_sums(
    dists: ArrayLike,
    block_of: ArrayLike,
    n_blocks: int,
    *,
    weights: ArrayLike | None = None,
    block_weights: ArrayLike | None = None,
    block_bytes: int = JSD_BLOCK_BYTES,
    pairs: PairKernel = jsd_pairs_numpy,
) -> tuple[FloatArray, NDArray[np.float32]]:
    """:func:`jsd_matrix` and its per-block parts in one pass over the midpoints.

    With row weights w (default 1/N) and a partition of the rows into K blocks,
    Σ_k[a, b] = Σ_{n ∈ block k} w_n JSD(dists[a, n], dists[b, n]), and the mean-JSD
    matrix is Σ_k Σ_k, accumulated in float64. A bootstrap draw that repeats block k
    c_k times then has the matrix Σ_k c_k Σ_k / Σ_k c_k W_k (W_k the block's weight)
    without another pass (:func:`taskpgm.bootstrap.relations_with_replicates`). With
    ``block_weights`` w' the block sums use w' instead of w (the same pass computes both
    as one (chunk, 2) product), while the mean matrix keeps w.
    The block sums are returned in float32 (4 bytes per pair and block): their relative
    rounding, 6e-8, is far below the spread of any bootstrap they serve.

    Args:
        dists: (M, N, C) probabilities, as for :func:`jsd_matrix`.
        block_of: (N,) the block of each row, integers in [0, n_blocks).
        n_blocks: K.
        weights: (N,) non-negative row weights summing to 1; default uniform.
        block_weights: (N,) non-negative row weights of the block sums; default ``weights``.
        block_bytes, pairs: as for :func:`jsd_matrix`.

    Returns:
        (M, M) float64 mean-JSD matrix and (K, M, M) float32 block sums (both symmetric).
    """
    arr = _check_distributions(_as_float_array(dists, "dists"), "dists")
    if arr.ndim != 3 or arr.shape[1] == 0:
        raise InvalidInputError(f"dists must have shape (models, examples, categories) with "
                                f"examples, got {arr.shape}")
    n_examples = arr.shape[1]
    blocks = np.asarray(block_of)
    if blocks.shape != (n_examples,) or n_blocks < 1 or blocks.min() < 0 \
            or blocks.max() >= n_blocks:
        raise InvalidInputError(f"block_of must be ({n_examples},) integers in [0, {n_blocks})")
    row_w = _row_weights(weights, n_examples)
    both = None
    if block_weights is not None:
        bw = _as_float_array(block_weights, "block_weights")
        if bw.shape != (n_examples,) or (bw < 0).any():
            raise InvalidInputError(f"block_weights must be ({n_examples},) and non-negative")
        both = np.stack([row_w, bw], axis=1)
    order = np.argsort(blocks, kind="stable")  # each block's rows contiguous, in one pass
    bounds = np.searchsorted(blocks[order], np.arange(n_blocks)).tolist()
    part = np.ascontiguousarray(arr[:, order])
    if both is None:
        upper = pairs(part, row_w[order], block_bytes, bounds)  # (M, M, K)
        total = upper.sum(axis=2)
    else:
        upper2 = pairs(part, np.ascontiguousarray(both[order]), block_bytes, bounds)
        total, upper = upper2[..., 0].sum(axis=2), upper2[..., 1]
    sums = np.moveaxis(upper + upper.transpose(1, 0, 2), 2, 0).astype(np.float32)
    return total + total.T, sums


# --------------------------------------------------------------------------- displacements


def displacement_gram(jsd: ArrayLike, *, names: list[str] | None = None) -> FloatArray:
    """Gram matrix of the experts' displacements from the base model.

    G_ij = ½ (JSD[i+1, 0] + JSD[j+1, 0] − JSD[i+1, j+1]), so G_ii = JSD[i+1, 0].

    Args:
        jsd: (T+1, T+1) mean JSD matrix with the base model at index 0.
        names: optional task names, used in error messages.

    Returns:
        (T, T) symmetric positive semi-definite matrix (for a JSD matrix that
        comes from :func:`jsd_matrix`).
    """
    d = _as_float_array(jsd, "jsd")
    _check_square(d, "jsd")
    if d.shape[0] < 2:
        raise InvalidInputError(
            f"jsd must include the base model and at least one expert, got {d.shape}"
        )
    _check_finite(d, "jsd")
    _check_symmetric(d, "jsd")
    neg = d < -1e-12
    if neg.any():
        idx = _first_bad(neg)
        raise InvalidInputError(f"jsd has a negative divergence {d[idx]:.3g} at index {idx}")
    if np.abs(np.diag(d)).max() > 1e-9:
        i = int(np.argmax(np.abs(np.diag(d))))
        raise InvalidInputError(f"jsd must have a zero diagonal; jsd[{i}, {i}] = {d[i, i]:.3g}")
    to_base = d[1:, 0]
    gram: FloatArray = 0.5 * (to_base[:, None] + to_base[None, :] - d[1:, 1:])
    np.fill_diagonal(gram, to_base)
    if names is not None and len(names) != gram.shape[0]:
        raise InvalidInputError(f"got {len(names)} task names for {gram.shape[0]} experts")
    return gram


def displacement_cosine(jsd: ArrayLike, *, names: list[str] | None = None) -> FloatArray:
    """Cosine between the experts' displacements from the base model.

    K_ij = G_ij / √(G_ii G_jj), G from :func:`displacement_gram`. K_ij near 1
    says experts i and j moved the base model's predictions the same way;
    near 0, in unrelated directions.

    Args:
        jsd: (T+1, T+1) mean JSD matrix with the base model at index 0.
        names: optional task names, used in error messages.

    Returns:
        (T, T) symmetric matrix with unit diagonal and entries in [−1, 1].

    Raises:
        ZeroDisplacementError: an expert has JSD 0 to the base (it did not move),
            naming the task.
    """
    gram = displacement_gram(jsd, names=names)
    diag = np.diag(gram)
    flat = diag <= MIN_DISPLACEMENT
    if flat.any():
        i = int(np.argmax(flat))
        raise ZeroDisplacementError(
            f"the expert of {_task_name(names, i)} predicts the same as the base model on the "
            f"probe set (JSD to base {diag[i]:.3g}); it did not learn, so its relations are "
            "undefined: train it longer or with a higher learning rate, or drop the task"
        )
    scale = np.sqrt(diag)
    cos: FloatArray = np.clip(gram / np.outer(scale, scale), -1.0, 1.0)
    np.fill_diagonal(cos, 1.0)
    return cos


# --------------------------------------------------------------------------- transfer


def transfer_pmi(loglik: ArrayLike, tokens: ArrayLike, task_of: ArrayLike) -> FloatArray:
    """Directed transfer: how much expert i raises the likelihood of task j's answers.

    PMI_ij = mean over x in probe(j) of (ℓ_{i+1}(x) − ℓ_0(x)) / n(x),
    with ℓ_0 the base model's log-likelihood (row 0 of ``loglik``). Positive
    entries are transfer, negative ones interference.

    Args:
        loglik: (T+1, N) log-likelihoods; row 0 the base model, row i+1 expert i.
        tokens: (N,) normalizer n(x) > 0: answer tokens for generative examples,
            1 for the gold choice's log-probability under the choice distribution.
        task_of: (N,) integer task index of each probe example, in [0, T).

    Returns:
        (T, T) matrix, not symmetric in general.
    """
    ll = _as_float_array(loglik, "loglik")
    if ll.ndim != 2 or ll.shape[0] < 2:
        raise InvalidInputError(f"loglik must have shape (T+1, N) with T >= 1, got {ll.shape}")
    n_tasks, n_examples = ll.shape[0] - 1, ll.shape[1]
    _check_finite(ll, "loglik")
    tok = _as_float_array(tokens, "tokens")
    if tok.shape != (n_examples,):
        raise InvalidInputError(f"tokens must have shape ({n_examples},), got {tok.shape}")
    _check_finite(tok, "tokens")
    if (tok <= 0).any():
        idx = _first_bad(tok <= 0)
        raise InvalidInputError(f"tokens must be positive; tokens{list(idx)} = {tok[idx]:g}")
    owner = np.asarray(task_of)
    if owner.shape != (n_examples,):
        raise InvalidInputError(f"task_of must have shape ({n_examples},), got {owner.shape}")
    if not np.issubdtype(owner.dtype, np.integer):
        if not (np.isfinite(owner.astype(float)).all() and (owner == np.round(owner)).all()):
            raise InvalidInputError("task_of must hold integer task indices")
        owner = owner.astype(np.int64)
    out_of_range = (owner < 0) | (owner >= n_tasks)
    if out_of_range.any():
        idx = _first_bad(out_of_range)
        raise InvalidInputError(
            f"task_of{list(idx)} = {owner[idx]} is not a task index in [0, {n_tasks})"
        )
    counts = np.bincount(owner, minlength=n_tasks)
    if (counts == 0).any():
        missing = int(np.argmin(counts))
        raise InvalidInputError(
            f"task {missing} has no probe examples in task_of; every task needs at least one"
        )
    gain = (ll[1:] - ll[0]) / tok  # (T, N)
    order = np.argsort(owner, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    sums = np.add.reduceat(gain[:, order], starts, axis=1)
    pmi: FloatArray = sums / counts[None, :]
    return pmi


def pairwise_transfer(pmi: ArrayLike) -> FloatArray:
    """The reference code's pairwise form, derived from the PMI matrix.

    S^pair_ij = ½ [mean_{D_j}(ℓ_i − ℓ_j) + mean_{D_i}(ℓ_j − ℓ_i)]
              = ½ [(PMI_ij − PMI_jj) + (PMI_ji − PMI_ii)]   (ℓ_0 cancels),
    zero on the diagonal, usually ≤ 0 (an expert is best on its own task).
    """
    p = _as_float_array(pmi, "pmi")
    _check_square(p, "pmi")
    d = np.diag(p)
    out: FloatArray = 0.5 * ((p - d[None, :]) + (p.T - d[:, None]))
    return out


# --------------------------------------------------------------------------- affinity


@dataclass(frozen=True)
class AffinityInfo:
    """What :func:`affinity` did, for the report.

    Attributes:
        kernel: the behaviour kernel used (``"displacement"`` or ``"jsd"``).
        pmi_form: ``"symmetric"`` or ``"pairwise"``.
        alpha: weight of the behaviour kernel.
        pmi_scale: s, the tanh scale of the PMI term (median |off-diagonal|).
        jsd_scale: σ of the ``"jsd"`` kernel, else ``None``.
        clipped_eigenvalues: the negative eigenvalues set to 0 by the PSD projection.
        correction_norm: Frobenius norm of (S − blend), everything the projection changed.
    """

    kernel: str
    pmi_form: str
    alpha: float
    pmi_scale: float
    jsd_scale: float | None
    clipped_eigenvalues: tuple[float, ...]
    correction_norm: float

    @property
    def clipped_mass(self) -> float:
        """Sum of |clipped eigenvalues|: 0 when the blend was already PSD."""
        return float(sum(abs(v) for v in self.clipped_eigenvalues))


def squash(values: FloatArray) -> tuple[FloatArray, float]:
    """tanh(P / s) with s the median |off-diagonal| of P; unit diagonal.

    Returns the squashed matrix and s (1.0 when every off-diagonal entry is 0).
    """
    n = values.shape[0]
    off = np.abs(values[~np.eye(n, dtype=bool)])
    positive = off[off > 0]
    scale = float(np.median(positive)) if positive.size else 1.0
    out: FloatArray = np.tanh(values / scale)
    np.fill_diagonal(out, 1.0)
    return out, scale


def nearest_psd_unit_diagonal(matrix: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Clip negative eigenvalues to 0, then rescale to unit diagonal.

    With S = V Λ Vᵀ: S₊ = V max(Λ, 0) Vᵀ, then D^{-1/2} S₊ D^{-1/2}, D = diag(S₊).
    Clipping can only raise the diagonal (diag S₊ ≥ diag S = 1), so the
    rescaling is well defined and keeps the matrix PSD.

    Returns:
        The projected matrix and the clipped (negative) eigenvalues.
    """
    sym = 0.5 * (matrix + matrix.T)
    vals, vecs = np.linalg.eigh(sym)
    tol = 1e-12 * max(1.0, float(np.abs(vals).max()))
    negative = vals[vals < -tol]
    if negative.size == 0:
        return sym, negative
    kept = np.clip(vals, 0.0, None)
    proj = (vecs * kept) @ vecs.T
    scale = np.sqrt(np.diag(proj))
    proj = proj / np.outer(scale, scale)
    proj = 0.5 * (proj + proj.T)
    np.fill_diagonal(proj, 1.0)
    return proj, negative


def affinity(
    jsd: ArrayLike,
    pmi: ArrayLike,
    alpha: float = 0.5,
    *,
    kernel: Literal["displacement", "jsd"] = "displacement",
    pmi_form: Literal["symmetric", "pairwise"] = "symmetric",
    names: list[str] | None = None,
    return_info: bool = False,
) -> FloatArray | tuple[FloatArray, AffinityInfo]:
    """Task affinity S: symmetric, unit diagonal, positive semi-definite.

    S = proj( α K + (1 − α) tanh(P / s) ), where

    * K is the behaviour kernel: ``"displacement"`` (default) the displacement
      cosine of :func:`displacement_cosine`; ``"jsd"`` exp(−JSD_ij / σ) on the
      raw JSD between experts, σ the median off-diagonal JSD;
    * P is the PMI term: ``"symmetric"`` (default) ½ (PMI + PMIᵀ); ``"pairwise"``
      the reference code's form :func:`pairwise_transfer`;
    * s is the median |off-diagonal| of P, so half the pairs land in |tanh| < 0.76;
    * proj clips negative eigenvalues and restores the unit diagonal
      (:func:`nearest_psd_unit_diagonal`); what it changed is in the info.

    Args:
        jsd: (T+1, T+1) mean JSD with the base model at index 0.
        pmi: (T, T) transfer PMI from :func:`transfer_pmi`.
        alpha: weight of the behaviour kernel, in [0, 1].
        kernel: the behaviour kernel, see above.
        pmi_form: the transfer term, see above.
        names: task names for error messages.
        return_info: also return an :class:`AffinityInfo`.

    Returns:
        S of shape (T, T), or ``(S, info)`` when ``return_info`` is true.
    """
    if not (isinstance(alpha, int | float) and 0.0 <= float(alpha) <= 1.0):
        raise InvalidInputError(f"alpha must be a number in [0, 1], got {alpha!r}")
    d = _as_float_array(jsd, "jsd")
    p = _as_float_array(pmi, "pmi")
    _check_square(d, "jsd")
    _check_square(p, "pmi")
    if p.shape[0] != d.shape[0] - 1:
        raise InvalidInputError(
            f"pmi must be (T, T) for a jsd of shape (T+1, T+1): got pmi {p.shape}, jsd {d.shape}"
        )
    _check_finite(p, "pmi")
    jsd_scale: float | None = None
    if kernel == "displacement":
        behaviour = displacement_cosine(d, names=names)
    elif kernel == "jsd":
        displacement_gram(d, names=names)  # validates the matrix
        experts = d[1:, 1:]
        off = experts[~np.eye(experts.shape[0], dtype=bool)]
        positive = off[off > 0]
        jsd_scale = float(np.median(positive)) if positive.size else 1.0
        behaviour = np.exp(-experts / jsd_scale)
    else:
        raise InvalidInputError(f"kernel must be 'displacement' or 'jsd', got {kernel!r}")
    if pmi_form == "symmetric":
        transfer = 0.5 * (p + p.T)
    elif pmi_form == "pairwise":
        transfer = pairwise_transfer(p)
    else:
        raise InvalidInputError(f"pmi_form must be 'symmetric' or 'pairwise', got {pmi_form!r}")
    squashed, pmi_scale = squash(transfer)
    blend = float(alpha) * behaviour + (1.0 - float(alpha)) * squashed
    blend = 0.5 * (blend + blend.T)
    np.fill_diagonal(blend, 1.0)
    s, clipped = nearest_psd_unit_diagonal(blend)
    if not return_info:
        return s
    info = AffinityInfo(
        kernel=kernel,
        pmi_form=pmi_form,
        alpha=float(alpha),
        pmi_scale=pmi_scale,
        jsd_scale=jsd_scale,
        clipped_eigenvalues=tuple(float(v) for v in clipped),
        correction_norm=float(np.linalg.norm(s - blend)),
    )
    return s, info
