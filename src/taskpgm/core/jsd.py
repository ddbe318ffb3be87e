"""The two block kernels of the mean-JSD matrix (:func:`taskpgm.core.relations.jsd_matrix`).

Both compute, for each model a against every b > a and one block of examples at
a time, JSD(p, q) = ½ H̃(p) + ½ H̃(q) − H̃(m) with H̃(x) = Σ_c x_c log x_c, each
model's own H̃ computed once; no (M, M, N, C) array is built. This is numpy's,
one worker thread per core; the same blocks on a GPU are torch's, in
:mod:`taskpgm.jsd_torch`, outside the core. A kernel is any function
``(dists, row_weights, block_bytes) -> upper triangle`` (:data:`PairKernel`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
_LN2 = math.log(2.0)
PairKernel = Callable[[FloatArray, FloatArray, int], FloatArray]


def block_rows(n_models: int, n_examples: int, n_cats: int, a: int, block_bytes: int) -> int:
    """Examples per block when model a is paired with the n_models − a − 1 models after it."""
    rest = n_models - a - 1
    return max(1, min(n_examples, block_bytes // (max(1, n_cats * 8) * rest)))


def jsd_pairs_numpy(arr: FloatArray, row_w: FloatArray, block_bytes: int) -> FloatArray:
    """Upper triangle of the JSD matrix; rows a spread over threads (numpy frees the GIL).

    ``row_w`` is (N,) for one matrix, or (N, B) for B weightings at once (a bootstrap):
    the result is then (M, M, B).
    """
    from concurrent.futures import ThreadPoolExecutor

    n_models, n_examples, n_cats = arr.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.where(arr > 0, arr * np.log(arr), 0.0).sum(axis=-1)  # (M, N)
    # Zeros lifted to 5e-301 so every midpoint is >= 1e-300 and its log is finite with no
    # clamp in the loop; each lifted entry changes a sum by < 1e-297.
    lifted = np.maximum(arr, 5e-301)
    out = np.zeros((n_models, n_models, *row_w.shape[1:]))
    ones = np.ones(n_cats)

    def row(a: int) -> None:
        rest = n_models - a - 1
        chunk = block_rows(n_models, n_examples, n_cats, a, block_bytes)
        total = np.zeros((rest, *row_w.shape[1:]))
        two_m_buf = np.empty((rest, chunk, n_cats))
        log_buf = np.empty_like(two_m_buf)
        for start in range(0, n_examples, chunk):
            stop = min(n_examples, start + chunk)
            k = stop - start
            two_m = np.add(lifted[a + 1 :, start:stop], lifted[a, start:stop],
                           out=two_m_buf[:, :k])
            term = np.log(two_m, out=log_buf[:, :k])
            term *= two_m
            # Σ m log m = ½ Σ 2m log 2m − ln 2, since Σ 2m = 2. The sum over the short last
            # axis as a matrix product with ones: measured 2.5x faster than .sum(axis=-1).
            h_mid = 0.5 * (term.reshape(-1, n_cats) @ ones).reshape(rest, k) - _LN2
            pair = 0.5 * (own[a, start:stop] + own[a + 1 :, start:stop]) - h_mid
            np.clip(pair, 0.0, _LN2, out=pair)
            total += pair @ row_w[start:stop]
        out[a, a + 1 :] = total

    workers = max(1, min(os.cpu_count() or 1, n_models - 1, 8))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(row, range(n_models - 1)))
    return out
