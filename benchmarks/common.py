"""Shared helpers of the benchmarks: timing and one uniform result line."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def timed(fn: Callable[[], T], repeat: int = 1) -> tuple[T, float]:
    """Run ``fn`` ``repeat`` times; return the last result and the best wall time in seconds."""
    best = float("inf")
    result: T
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return result, best


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def compare(name: str, baseline: str, baseline_s: float, ours_s: float, target: float) -> bool:
    """Print baseline, ours and their ratio against a target speed-up; True when met."""
    ratio = baseline_s / ours_s if ours_s > 0 else float("inf")
    met = ratio >= target
    print(
        f"{name}: baseline ({baseline}) {baseline_s:.3f} s | ours {ours_s:.3f} s | "
        f"ratio {ratio:.1f}x | target >= {target:g}x: {'met' if met else 'NOT MET'}",
        flush=True,
    )
    return met


def matmul_peak(dtype: object = None, size: int = 1024, repeat: int = 10) -> float:
    """GFLOP/s of the best of ``repeat`` size² matmuls (after one warm-up) in ``dtype``
    (default float32), at torch's thread count."""
    import torch

    dt = torch.float32 if dtype is None else dtype
    a, b = torch.randn(size, size, dtype=dt), torch.randn(size, size, dtype=dt)
    a @ b
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9
