"""The two block kernels of the mean-JSD matrix (:func:`taskpgm.core.relations.jsd_matrix`).

Both compute, for each model a against every b > a and one block of examples at
a time, JSD(p, q) = ½ H̃(p) + ½ H̃(q) − H̃(m) with H̃(x) = Σ_c x_c log x_c, each
model's own H̃ computed once; no (M, M, N, C) array is built. This is numpy's,
one worker thread per core; the same blocks on a GPU are torch's, in
:mod:`taskpgm.jsd_torch`, outside the core. A kernel is any function
``(dists, row_weights, block_bytes, bounds=None) -> upper triangle`` (:class:`PairKernel`);
with ``bounds`` (the starts of contiguous groups of examples) it also keeps each group's
sum apart, in the same pass (the block bootstrap's block sums).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
_LN2 = math.log(2.0)


class PairKernel(Protocol):
    """``(dists, row_weights, block_bytes, bounds=None) -> upper triangle``."""

    def __call__(self, arr: FloatArray, row_w: FloatArray, block_bytes: int,
                 bounds: Sequence[int] | None = None) -> FloatArray: ...


def segments(n_examples: int, chunk: int, bounds: Sequence[int] | None
             ) -> list[tuple[int, int, int]]:
    """(start, stop, group) pieces of at most ``chunk`` examples that never cross a group
    start in ``bounds`` (group 0 for all without ``bounds``)."""
    starts = list(bounds) if bounds is not None else [0]
    out = []
    for g, lo in enumerate(starts):
        hi = starts[g + 1] if g + 1 < len(starts) else n_examples
        out += [(a, min(hi, a + chunk), g) for a in range(lo, hi, chunk)]
    return out


def block_rows(n_models: int, n_examples: int, n_cats: int, a: int, block_bytes: int,
               itemsize: int = 8) -> int:
    """Examples per block when model a is paired with the n_models − a − 1 models after it."""
    rest = n_models - a - 1
    return max(1, min(n_examples, block_bytes // (max(1, n_cats * itemsize) * rest)))


#: The smallest probability a kernel's midpoints see, per precision: zeros are lifted to it,
#: so every log is finite with no clamp in the loop; each lifted entry changes a sum by less
#: than its value times |log| of it (< 1e-297 in float64, < 1e-28 in float32).
LIFT = {np.dtype(np.float64): 5e-301, np.dtype(np.float32): 1e-30}
#: The float32 kernel's block bound: measured on 2 AVX2 cores at T = 300, N = 6,000, C = 4,
#: 2.3 s at 1 MiB, 2.5 s at 512 KiB and 7.0 s at 2 MiB (float64: 4.6 s at 2 MiB, its best).
F32_BLOCK_BYTES = 2**20


def jsd_pairs_numpy(arr: FloatArray, row_w: FloatArray, block_bytes: int,
                    bounds: Sequence[int] | None = None, *,
                    dtype: type[np.floating[Any]] = np.float64) -> FloatArray:
    """Upper triangle of the JSD matrix; rows a spread over threads (numpy frees the GIL).

    ``row_w`` is (N,) for one matrix, or (N, B) for B weightings at once (a bootstrap):
    the result is then (M, M, B). With ``bounds`` (G sorted group starts, the first 0) the
    result gets a group axis after the pair: (M, M, G) or (M, M, G, B).

    ``dtype`` float32 computes the midpoints and their logs in float32 (each block's sum is
    then added to float64 totals) in blocks of at most :data:`F32_BLOCK_BYTES`: measured
    2.0x faster than float64 on 2 AVX2 cores, with a relative error of about 1e-7 on the
    mean matrix, but a pair closer than about 1e-8 no longer reads as 0 (float32 rounding of
    H̃ ≈ −1 terms).
    """
    from concurrent.futures import ThreadPoolExecutor

    n_models, n_examples, n_cats = arr.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.where(arr > 0, arr * np.log(arr), 0.0).sum(axis=-1).astype(dtype)  # (M, N)
    lifted = np.maximum(arr, LIFT[np.dtype(dtype)]).astype(dtype, copy=False)
    weights = row_w.astype(dtype, copy=False)
    groups = () if bounds is None else (len(bounds),)
    out = np.zeros((n_models, n_models, *groups, *row_w.shape[1:]))
    ones = np.ones(n_cats, dtype=dtype)
    itemsize = np.dtype(dtype).itemsize
    if itemsize == 4:
        block_bytes = min(block_bytes, F32_BLOCK_BYTES)

    def row(a: int) -> None:
        rest = n_models - a - 1
        chunk = block_rows(n_models, n_examples, n_cats, a, block_bytes, itemsize)
        total = np.zeros((rest, *groups, *row_w.shape[1:]))
        # flat buffers: each piece takes a contiguous (rest, k, C) view of their front, so a
        # piece shorter than the chunk (a block's end) still runs numpy's contiguous loops
        two_m_buf = np.empty(rest * chunk * n_cats, dtype=dtype)
        log_buf = np.empty_like(two_m_buf)
        for start, stop, g in segments(n_examples, chunk, bounds):
            k = stop - start
            two_m = np.add(lifted[a + 1 :, start:stop], lifted[a, start:stop],
                           out=two_m_buf[:rest * k * n_cats].reshape(rest, k, n_cats))
            term = np.log(two_m, out=log_buf[:rest * k * n_cats].reshape(rest, k, n_cats))
            term *= two_m
            # Σ m log m = ½ Σ 2m log 2m − ln 2, since Σ 2m = 2. The sum over the short last
            # axis as a matrix product with ones: measured 2.5x faster than .sum(axis=-1).
            h_mid = 0.5 * (term.reshape(-1, n_cats) @ ones).reshape(rest, k) - _LN2
            pair = 0.5 * (own[a, start:stop] + own[a + 1 :, start:stop]) - h_mid
            np.clip(pair, 0.0, _LN2, out=pair)
            if groups:
                total[:, g] += pair @ weights[start:stop]
            else:
                total += pair @ weights[start:stop]
        out[a, a + 1 :] = total

    workers = max(1, min(os.cpu_count() or 1, n_models - 1, 8))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(row, range(n_models - 1)))
    return out
