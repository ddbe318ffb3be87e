from __future__ import annotations

import math

import numpy as np
import pytest

from taskpgm.stats import mean_interval, paired_bootstrap, paired_difference, wilson_interval


def test_wilson_matches_the_closed_form_by_hand():
    # k=8, n=10: p = 0.8; the formula of the module docstring, written out.
    z2 = 1.959963984540054**2
    center = (0.8 + z2 / 20) / (1 + z2 / 10)
    half = 1.959963984540054 * math.sqrt(0.8 * 0.2 / 10 + z2 / 400) / (1 + z2 / 10)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(center - half) and hi == pytest.approx(center + half)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mean_interval_t_quantile():
    mean, _, hi = mean_interval([0.5, 0.6, 0.7])
    # sd = 0.1, t_{0.975,2} = 4.302653
    assert mean == pytest.approx(0.6)
    assert hi - mean == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    assert math.isnan(mean_interval([0.5])[1])


def test_paired_difference_uses_per_seed_differences():
    a, b = [0.60, 0.62, 0.61, 0.63], [0.50, 0.51, 0.52, 0.52]
    d, lo, hi = paired_difference(a, b)
    ref = mean_interval(np.subtract(a, b))
    assert (d, lo, hi) == pytest.approx(ref)
    assert lo > 0


def test_paired_bootstrap_brackets_the_mean():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 200).astype(float)
    b = rng.integers(0, 2, 200).astype(float)
    lo, hi = paired_bootstrap(a, b, reps=2000)
    assert lo < (a - b).mean() < hi
