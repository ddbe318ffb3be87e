"""The mean-JSD blocks on torch, for a GPU: the same blocks as the core's numpy kernel.

:func:`taskpgm.core.relations.jsd_matrix` takes a block kernel (``pairs``); :func:`default_pairs`
is torch's on a CUDA device when torch is already loaded (a model stage runs), else
numpy's, so on a CPU the relations math never loads torch.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import TYPE_CHECKING

from taskpgm.core.jsd import FloatArray, PairKernel, block_rows, jsd_pairs_numpy

if TYPE_CHECKING:
    import torch

_LN2 = math.log(2.0)


def _neg_entropy(x: torch.Tensor) -> torch.Tensor:
    """Σ_c x_c log x_c along the last axis, with 0 · log 0 = 0 (x ≥ 0)."""
    # log of a clamped value times the value: exact for x > 1e-300, and 0 · finite = 0.
    return (x * x.clamp_min(1e-300).log()).sum(dim=-1)


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
        chunk = block_rows(n_models, n_examples, n_cats, a, block_bytes)
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


def default_pairs(device: str | None = None) -> PairKernel:
    """torch's kernel on ``device`` (default: CUDA when torch is loaded and sees one), else
    numpy's."""
    dev = device if device is not None else default_device()
    if dev.startswith("cuda"):
        return functools.partial(jsd_pairs_torch, device=dev)
    return jsd_pairs_numpy
