"""The mean-JSD blocks on torch, for a GPU: the same blocks as the core's numpy kernel.

:func:`taskpgm.core.relations.jsd_matrix` takes a block kernel (``pairs``); :func:`default_pairs`
is torch's on a CUDA device when torch is already loaded (a model stage runs), else
numpy's, so on a CPU the relations math never loads torch.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from taskpgm.core.jsd import LIFT, FloatArray, PairKernel, block_rows, jsd_pairs_numpy, segments

if TYPE_CHECKING:
    import torch

_LN2 = math.log(2.0)


def _neg_entropy(x: torch.Tensor) -> torch.Tensor:
    """Σ_c x_c log x_c along the last axis, with 0 · log 0 = 0 (x ≥ 0)."""
    # log of a clamped value times the value: exact for x > 1e-300, and 0 · finite = 0.
    return (x * x.clamp_min(1e-300).log()).sum(dim=-1)


def jsd_pairs_torch(
    arr: FloatArray, row_w_np: FloatArray, block_bytes: int,
    bounds: Sequence[int] | None = None, *, device: str = "cpu", precision: str = "float64",
) -> FloatArray:
    """Upper triangle of the JSD matrix with torch on ``device`` (the same blocks, groups and
    precisions as numpy's; totals in float64)."""
    import torch

    dev = torch.device(device)
    dtype = torch.float32 if precision == "float32" else torch.float64
    n_models, n_examples, n_cats = arr.shape
    x = torch.from_numpy(arr).to(dev)
    row_w = torch.from_numpy(row_w_np).to(dev, dtype)
    own = _neg_entropy(x).to(dtype)  # (M, N)
    lifted = x.clamp_min(LIFT[np.dtype(precision)]).to(dtype)
    itemsize = 4 if precision == "float32" else 8
    del x
    extra = (*(() if bounds is None else (len(bounds),)), *row_w_np.shape[1:])
    out = torch.zeros((n_models, n_models, *extra), dtype=torch.float64, device=dev)
    for a in range(n_models - 1):
        chunk = block_rows(n_models, n_examples, n_cats, a, block_bytes, itemsize)
        total = torch.zeros((n_models - a - 1, *extra), dtype=torch.float64, device=dev)
        for start, stop, g in segments(n_examples, chunk, bounds):
            two_m = lifted[a + 1 :, start:stop] + lifted[a, start:stop]  # p + q: (rest, chunk, C)
            h_mid = two_m.log().mul_(two_m).sum(dim=-1).mul_(0.5).sub_(_LN2)  # (rest, chunk)
            pair = (own[a, start:stop] + own[a + 1 :, start:stop]).mul_(0.5).sub_(h_mid)
            if bounds is None:
                total += (pair.clamp_(0.0, _LN2) @ row_w[start:stop]).double()
            else:
                total[:, g] += (pair.clamp_(0.0, _LN2) @ row_w[start:stop]).double()
        out[a, a + 1 :] = total
    result: FloatArray = out.cpu().numpy()
    return result


def default_device() -> str:
    """CUDA when torch is already loaded (a model stage runs) and sees a GPU, else the CPU."""
    torch = sys.modules.get("torch")
    return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"


def default_pairs(device: str | None = None, precision: str = "float64") -> PairKernel:
    """torch's kernel on ``device`` (default: CUDA when torch is loaded and sees one), else
    numpy's; either in ``precision`` (float64, or float32: see
    :func:`taskpgm.core.jsd.jsd_pairs_numpy`)."""
    dev = device if device is not None else default_device()
    if dev.startswith("cuda"):
        return functools.partial(jsd_pairs_torch, device=dev, precision=precision)
    if precision == "float32":
        return functools.partial(jsd_pairs_numpy, dtype=np.float32)
    return jsd_pairs_numpy
