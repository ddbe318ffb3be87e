from __future__ import annotations

import math

import numpy as np
import pytest

from taskpgm.core.stats import (
    detectable,
    holm,
    mean_interval,
    paired_bootstrap,
    paired_difference,
    seeds_for_power,
    wilson_interval,
)


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


def test_paired_difference_by_hand():
    a, b = [0.60, 0.62, 0.61, 0.63], [0.50, 0.51, 0.52, 0.52]
    # per-seed differences 0.10, 0.11, 0.09, 0.11: mean 0.1025, squared deviations
    # 0.0025², 0.0075², 0.0125², 0.0075² sum to 2.75e-4, sd = √(2.75e-4 / 3);
    # t_{0.975,3} = 3.182446
    sd = math.sqrt(2.75e-4 / 3)
    half = 3.182446 * sd / math.sqrt(4)
    d, lo, hi = paired_difference(a, b)
    assert d == pytest.approx(0.1025, abs=1e-12)
    assert lo == pytest.approx(0.1025 - half, abs=1e-6)
    assert hi == pytest.approx(0.1025 + half, abs=1e-6)
    assert half == pytest.approx(0.015235, abs=1e-6)
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference(a, b[:3])


def test_paired_bootstrap_degenerate_cases():
    a = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    assert paired_bootstrap(a, a, reps=500) == (0.0, 0.0)
    lo, hi = paired_bootstrap(a + 0.25, a, reps=500)  # every difference is 0.25
    assert lo == pytest.approx(0.25, abs=1e-12) and hi == pytest.approx(0.25, abs=1e-12)
    assert all(math.isnan(v) for v in paired_bootstrap([], []))


@pytest.mark.parametrize("level, z", [(0.95, 1.959964), (0.5, 0.674490)])
def test_paired_bootstrap_matches_the_normal_interval_for_a_large_sample(level, z):
    # 4000 paired 0/1 outcomes: the bootstrap distribution of the mean difference is close
    # to normal with sd = sd(d) / √n (ddof 0: the bootstrap resamples the empirical law).
    rng = np.random.default_rng(1)
    a = (rng.random(4000) < 0.62).astype(float)
    b = (rng.random(4000) < 0.55).astype(float)
    d = a - b
    mean = d.mean()
    half = z * math.sqrt(((d - mean) ** 2).mean() / d.size)
    lo, hi = paired_bootstrap(a, b, reps=4000, seed=3, level=level)
    assert lo == pytest.approx(mean - half, abs=0.08 * half)
    assert hi == pytest.approx(mean + half, abs=0.08 * half)


def test_paired_bootstrap_covers_a_known_difference_about_95_percent_of_the_time():
    # 400 simulated datasets of 60 paired examples with a true mean difference of 0.1.
    rng = np.random.default_rng(2)
    covered = 0
    trials = 400
    for k in range(trials):
        a = (rng.random(60) < 0.6).astype(float)
        b = (rng.random(60) < 0.5).astype(float)
        lo, hi = paired_bootstrap(a, b, reps=400, seed=k)
        covered += lo <= 0.1 <= hi
    # binomial sd of the rate at 0.95 is 1.1 points; a 90% or a 99% interval falls outside
    assert 0.92 <= covered / trials <= 0.98


def test_holm_by_hand():
    # p = (0.01, 0.04, 0.03, 0.20), m = 4. Sorted: 0.01·4 = 0.04, 0.03·3 = 0.09,
    # 0.04·2 = 0.08 -> raised to 0.09 (monotone), 0.20·1 = 0.20.
    assert holm([0.01, 0.04, 0.03, 0.20]) == pytest.approx([0.04, 0.09, 0.09, 0.20])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_seeds_for_power_matches_the_t_test_it_promises():
    from scipy import stats

    sd, diff = 0.025, 0.02
    n = seeds_for_power(sd, diff)
    # the noncentral-t power of a paired two-sided 5% test at n seeds is at least 0.8
    def power(k: int) -> float:
        nc = diff / (sd / np.sqrt(k))
        crit = stats.t.ppf(0.975, k - 1)
        return float(1 - stats.nct.cdf(crit, k - 1, nc) + stats.nct.cdf(-crit, k - 1, nc))
    assert power(n) >= 0.79
    assert power(n - 2) < 0.8
    # and the detectable difference at n seeds is (about) the one asked for
    assert detectable(sd, n) == pytest.approx(diff, rel=0.1)
