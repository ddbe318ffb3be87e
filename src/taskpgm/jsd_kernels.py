"""The two block kernels of the mean-JSD matrix (:func:`taskpgm.relations.jsd_matrix`).

Both compute, for each model a against every b > a and one block of examples at
a time, JSD(p, q) = ½ H̃(p) + ½ H̃(q) − H̃(m) with H̃(x) = Σ_c x_c log x_c, each
model's own H̃ computed once; no (M, M, N, C) array is built. numpy runs one
worker thread per core (the default on a CPU); torch runs on any device (the
default on a GPU) and is imported only when it runs.
"""

from __future__ import annotations

import math
import os
import sys
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import torch

FloatArray = NDArray[np.float64]
_LN2 = math.log(2.0)


def _neg_entropy(x: torch.Tensor) -> torch.Tensor:
    """Σ_c x_c log x_c along the last axis, with 0 · log 0 = 0 (x ≥ 0)."""
    # log of a clamped value times the value: exact for x > 1e-300, and 0 · finite = 0.
    return (x * x.clamp_min(1e-300).log()).sum(dim=-1)


def _block_rows(n_models: int, n_examples: int, n_cats: int, a: int, block_bytes: int) -> int:
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
        chunk = _block_rows(n_models, n_examples, n_cats, a, block_bytes)
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


def jsd_pairs_torch(
    arr: FloatArray, row_w_np: FloatArray, block_bytes: int, device: str
) -> FloatArray:
    """Upper triangle of the JSD matrix with torch on ``device`` (the same blocks as numpy's)."""
    import torch

    dev = torch.device(device)
    n_models, n_examples, n_cats = arr.shape
    x = torch.from_numpy(arr).to(dev)
    row_w = torch.from_numpy(row_w_np).to(dev)
    own = _neg_entropy(x)  # (M, N)
    lifted = x.clamp_min(5e-301)
    del x
    extra = tuple(row_w_np.shape[1:])
    out = torch.zeros((n_models, n_models, *extra), dtype=torch.float64, device=dev)
    for a in range(n_models - 1):
        chunk = _block_rows(n_models, n_examples, n_cats, a, block_bytes)
        total = torch.zeros((n_models - a - 1, *extra), dtype=torch.float64, device=dev)
        for start in range(0, n_examples, chunk):
            stop = min(n_examples, start + chunk)
            two_m = lifted[a + 1 :, start:stop] + lifted[a, start:stop]  # p + q: (rest, chunk, C)
            h_mid = two_m.log().mul_(two_m).sum(dim=-1).mul_(0.5).sub_(_LN2)  # (rest, chunk)
            pair = (own[a, start:stop] + own[a + 1 :, start:stop]).mul_(0.5).sub_(h_mid)
            total += pair.clamp_(0.0, _LN2) @ row_w[start:stop]
        out[a, a + 1 :] = total
    result: FloatArray = out.cpu().numpy()
    return result


def default_device() -> str:
    """CUDA when torch is already loaded (a model stage runs) and sees a GPU, else the CPU."""
    torch = sys.modules.get("torch")
    return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"
