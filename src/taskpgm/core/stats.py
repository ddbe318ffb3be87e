"""Intervals that survive scrutiny, for experts (examples) and for methods (seeds).

* :func:`wilson_interval` — 95% Wilson score interval of an accuracy k / n:
  (p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n).
* :func:`mean_interval` — mean over seeds with a Student-t interval,
  x̄ ± t_{0.975, s−1} · sd / √s. The seed is the unit of replication when
  methods are compared; a bootstrap over examples understates that noise.
* :func:`paired_difference` — the same on per-seed differences a_s − b_s
  (seeds paired across methods: same mixture draw, initialization and order).
* :func:`paired_bootstrap` — percentile interval of mean(a − b) over examples,
  for one model against another on the same examples (expert versus base).
* :func:`detectable` — the paired difference a two-sided 5% t-test finds with 80%
  power at n seeds, (t_{0.975, n−1} + t_{0.8, n−1}) · sd / √n, and
  :func:`seeds_for_power`, the seeds that reach it for a given difference.
* :func:`holm` — Holm's step-down adjusted p-values, for several comparisons at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _scipy_stats

Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials ((0, 1) when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def mean_interval(
    values: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, low, high) with a Student-t interval; low = high = nan for fewer than 2 values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    quantile = float(_scipy_stats.t.ppf(0.5 + level / 2, x.size - 1))
    half = quantile * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


def paired_difference(
    a: Sequence[float], b: Sequence[float], level: float = 0.95
) -> tuple[float, float, float]:
    """(mean of a − b, low, high) over paired seeds, Student-t interval."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired values need the same seeds: {x.shape} vs {y.shape}")
    return mean_interval(x - y, level)


def paired_bootstrap(
    a: Sequence[float], b: Sequence[float], reps: int = 10_000, seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of mean(a − b), resampling example indices with replacement."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(reps, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values."""
    order = np.argsort(pvalues)
    m = len(pvalues)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return [float(a) for a in adjusted]


def seeds_for_power(sd: float, diff: float = 0.02, power: float = 0.8) -> int:
    """Paired seeds for a two-sided 5% t-test to reach ``power`` at ``diff`` (normal
    approximation, then one t-correction step)."""
    if not np.isfinite(sd) or sd <= 0:
        return 2
    z = _scipy_stats.norm.ppf(0.975) + _scipy_stats.norm.ppf(power)
    n = max(2, math.ceil((z * sd / diff) ** 2))
    t = _scipy_stats.t.ppf(0.975, n - 1) + _scipy_stats.t.ppf(power, n - 1)
    return max(2, math.ceil(float(t * sd / diff) ** 2))


def detectable(sd: float, n: int, power: float = 0.8) -> float:
    """The paired difference a two-sided 5% t-test finds with ``power`` at ``n`` seeds."""
    if n < 2 or not np.isfinite(sd):
        return float("nan")
    t = _scipy_stats.t.ppf(0.975, n - 1) + _scipy_stats.t.ppf(power, n - 1)
    return float(t * sd / math.sqrt(n))
