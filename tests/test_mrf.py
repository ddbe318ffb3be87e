"""Oracle, property and error tests of taskpgm.core.mrf.

The oracles are independent: cvxpy with the Clarabel interior-point solver for
the energy minimum, exhaustive search over supports for the budget, and a
plain greedy that re-solves every candidate from scratch.
"""

from __future__ import annotations

import itertools

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskpgm.core.mrf import TaskMixtureMRF, closed_form, energy, utility
from taskpgm.core.qp import kkt_certificate, solve_simplex_qp
from taskpgm.errors import InfeasibleError, InvalidInputError
from taskpgm.oracles import exhaustive_select


def random_affinity(rng: np.random.Generator, n: int, rank: int | None = None) -> np.ndarray:
    """A random correlation matrix (PSD, unit diagonal); singular when rank < n."""
    r = rank or n
    a = rng.normal(size=(n, r))
    s = a @ a.T / r
    d = np.sqrt(np.diag(s))
    s = s / np.outer(d, d)
    return 0.5 * (s + s.T)


def cvxpy_minimum(
    s: np.ndarray, c: np.ndarray, caps: np.ndarray | None
) -> tuple[np.ndarray, float]:
    n = c.shape[0]
    p = cp.Variable(n)
    cons = [p >= 0, cp.sum(p) == 1]
    if caps is not None:
        cons.append(p <= caps)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(p, cp.psd_wrap(s)) - c @ p), cons)
    prob.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return np.asarray(p.value), float(prob.value)


def random_caps(rng: np.random.Generator, n: int) -> np.ndarray:
    caps = rng.uniform(0.3 / n, 3.0 / n, size=n)
    if caps.sum() < 1.2:
        caps *= 1.2 / caps.sum()
    return caps


CASES = [(seed, n, rank) for seed, (n, rank) in enumerate(
    [(2, None), (3, None), (5, None), (8, None), (8, 3), (12, None), (12, 2), (20, None),
     (25, 5), (30, None)]
)]


@pytest.mark.parametrize(("seed", "n", "rank"), CASES)
@pytest.mark.parametrize("use_caps", [False, True])
def test_solver_matches_cvxpy(seed, n, rank, use_caps):
    rng = np.random.default_rng(seed)
    s = random_affinity(rng, n, rank)
    caps = random_caps(rng, n) if use_caps else None
    for rho in [0.0, 0.02, 1.0 / n, 0.3, 3.0]:
        model = TaskMixtureMRF(rho, caps=caps).fit(s)
        _, best = cvxpy_minimum(s, rho * s.sum(axis=1), caps)
        assert model.energy_ == pytest.approx(best, abs=1e-9)
        w = model.weights_
        assert w.min() >= -1e-12 and abs(w.sum() - 1.0) <= 1e-12
        if caps is not None:
            assert (w <= caps + 1e-12).all()
        assert model.kkt_residual_ <= 1e-9
        assert model.energy_ == pytest.approx(energy(w, s, rho), abs=1e-14)


@pytest.mark.parametrize("seed", range(6))
def test_solver_with_other_utilities_matches_cvxpy(seed):
    rng = np.random.default_rng(100 + seed)
    n = 9
    s = random_affinity(rng, n, rank=4 if seed % 2 else None)
    pmi = rng.normal(0, 1, size=(n, n))
    for kind in ("transfer", "gain"):
        u = utility(kind, s, pmi)
        assert np.abs(u).max() == pytest.approx(1.0) and abs(u.mean()) < 1e-12
        for rho in (0.05, 0.5):
            model = TaskMixtureMRF(rho).fit(s, utility=u)
            _, best = cvxpy_minimum(s, rho * u, None)
            assert model.energy_ == pytest.approx(best, abs=1e-9)


def test_duplicated_tasks_give_one_optimum_and_say_it_is_not_unique():
    rng = np.random.default_rng(7)
    base = random_affinity(rng, 5)
    s = base[np.ix_([0, 1, 2, 3, 4, 4], [0, 1, 2, 3, 4, 4])]  # task 5 duplicates task 4
    model = TaskMixtureMRF(0.1).fit(s)
    _, best = cvxpy_minimum(s, 0.1 * s.sum(axis=1), None)
    assert model.energy_ == pytest.approx(best, abs=1e-9)
    assert np.isfinite(model.weights_).all()
    assert model.kkt_residual_ <= 1e-9
    if model.weights_[4] > 0 and model.weights_[5] > 0:
        assert model.certificate_["unique"] is False


def test_duplicate_with_a_better_utility_takes_the_mass():
    rng = np.random.default_rng(8)
    base = random_affinity(rng, 4)
    s = base[np.ix_([0, 1, 2, 3, 3], [0, 1, 2, 3, 3])]
    u = s.sum(axis=1)
    u[4] += 0.5  # same behaviour, higher utility: the optimum leaves the copy at 0
    model = TaskMixtureMRF(0.5).fit(s, utility=u)
    _, best = cvxpy_minimum(s, 0.5 * u, None)
    assert model.energy_ == pytest.approx(best, abs=1e-9)
    assert model.weights_[3] == 0.0


def test_closed_form_is_the_interior_optimum():
    rng = np.random.default_rng(9)
    s = random_affinity(rng, 6)
    t = s.shape[0]
    rho = 1.0 / t
    np.testing.assert_allclose(closed_form(s, rho), np.full(t, 1.0 / t), atol=1e-12)
    # An interior optimum near uniform: the closed form and the solver agree.
    rho = 1.0 / t + 0.002
    p = closed_form(s, rho)
    assert p.min() > 0
    np.testing.assert_allclose(TaskMixtureMRF(rho).fit(s).weights_, p, atol=1e-12)
    with pytest.raises(InvalidInputError, match="singular"):
        closed_form(np.ones((3, 3)), 0.1)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 10), st.integers(0, 2**31 - 1))
def test_uniform_at_rho_one_over_t(t, seed):
    s = random_affinity(np.random.default_rng(seed), t)
    model = TaskMixtureMRF(1.0 / t).fit(s)
    np.testing.assert_allclose(model.weights_, np.full(t, 1.0 / t), atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 10), st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.05, 0.4]),
       st.booleans())
def test_permuting_tasks_permutes_the_weights(t, seed, rho, with_caps):
    rng = np.random.default_rng(seed)
    s = random_affinity(rng, t)
    caps = random_caps(rng, t) if with_caps else None
    perm = rng.permutation(t)
    w = TaskMixtureMRF(rho, caps=caps).fit(s).weights_
    w_perm = TaskMixtureMRF(rho, caps=None if caps is None else caps[perm]).fit(
        s[np.ix_(perm, perm)]).weights_
    np.testing.assert_allclose(w_perm, w[perm], atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 10), st.integers(0, 2**31 - 1), st.floats(0, 2))
def test_weights_on_simplex_and_symmetric_input_only(t, seed, rho):
    s = random_affinity(np.random.default_rng(seed), t)
    w = TaskMixtureMRF(rho).fit(s).weights_
    assert w.min() >= 0 and w.sum() == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------- budget


def test_budget_of_every_task_is_the_plain_solve_with_its_certificate():
    rng = np.random.default_rng(7)
    s = random_affinity(rng, 5)
    plain = TaskMixtureMRF(0.2).fit(s)
    full = TaskMixtureMRF(0.2, budget=5).fit(s)  # k = T used to fail in its certificate
    np.testing.assert_allclose(full.weights_, plain.weights_, atol=1e-12)
    assert full.selected_ is None and full.kkt_residual_ < 1e-9


def plain_greedy(s, c, caps, k):
    """Greedy forward selection, every candidate solved from scratch."""
    n = c.shape[0]
    caps = np.full(n, np.inf) if caps is None else caps
    order: list[int] = []
    energies: list[float] = []
    mass = 0.0
    while len(order) < k:
        values = np.full(n, np.inf)
        masses = {}
        for j in range(n):
            if j in order:
                continue
            rest = sorted(caps[[i for i in range(n) if i not in order and i != j]])[::-1]
            left = k - len(order) - 1
            if caps[[*order, j]].sum() + sum(rest[:left]) < 1 - 1e-12:
                continue  # the budget could no longer hold the whole mass
            ix = np.array(sorted([*order, j]))
            m = min(1.0, caps[ix].sum())
            res = solve_simplex_qp(s[np.ix_(ix, ix)], c[ix], caps[ix], mass=m)
            values[j] = energy(res.p, s[np.ix_(ix, ix)], 1.0, c[ix])
            masses[j] = m
        low = values.min()
        best = int(np.flatnonzero(values <= low + 1e-12 * (1 + abs(low)))[0])
        if order and mass >= 1 - 1e-12 and energies[-1] - values[best] <= 1e-13 * (1 + abs(low)):
            break
        order.append(best)
        energies.append(float(values[best]))
        mass = masses[best]
    return order, energies


@pytest.mark.parametrize("seed", range(24))
def test_greedy_against_exhaustive_and_plain_greedy(seed):
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(3, 13))
    s = random_affinity(rng, n, rank=int(rng.integers(2, n + 1)) if seed % 3 == 0 else None)
    rho = float(rng.choice([0.0, 0.05, 0.2, 1.0]))
    k = int(rng.integers(1, n if n <= 9 else 5))  # keeps the exhaustive search small
    caps = rng.uniform(0.1, 0.9, size=n) if seed % 2 else None
    if caps is not None and np.sort(caps)[::-1][:k].sum() < 1:
        caps = None
    c = rho * s.sum(axis=1)
    model = TaskMixtureMRF(rho, caps=caps, budget=k).fit(s)
    assert len(model.selected_) <= k
    assert set(model.support_) <= set(model.selected_)
    # Greedy is greedy: the same choices as re-solving every candidate from scratch.
    order, energies = plain_greedy(s, c, caps, k)
    assert model.selected_ == order
    assert model.energy_ == pytest.approx(energies[-1], abs=1e-10)
    # No support of at most k tasks beats the exhaustive optimum; k = 1 is exact.
    best, _ = exhaustive_select(s, c, caps, k)
    assert model.energy_ >= best - 1e-10
    if k == 1:
        assert model.energy_ == pytest.approx(best, abs=1e-12)
    # The weights are the exact optimum on the chosen support (cvxpy on that support).
    ix = np.array(sorted(model.selected_))
    sub_caps = None if caps is None else caps[ix]
    _, sub_best = cvxpy_minimum(s[np.ix_(ix, ix)], c[ix], sub_caps)
    assert model.energy_ == pytest.approx(sub_best, abs=1e-9)
    assert model.weights_[np.setdiff1d(np.arange(n), ix)].max(initial=0.0) == 0.0
    # Each step's gain is the drop of the exact optimum.
    assert len(model.greedy_gains_) == len(model.selected_)
    assert -sum(model.greedy_gains_) == pytest.approx(model.energy_, abs=1e-9)


def test_exhaustive_search_agrees_with_an_independent_solver_on_every_subset():
    """The oracle's best support and energy, against cvxpy run on each subset itself."""
    rng = np.random.default_rng(11)
    s = random_affinity(rng, 6)
    c = 0.1 * s.sum(axis=1)
    caps = np.full(6, 0.6)  # a single task cannot hold the mass: only pairs are feasible
    best, best_set = exhaustive_select(s, c, caps, 2)
    by_cvxpy = {}
    for pair in itertools.combinations(range(6), 2):
        ix = np.array(pair)
        by_cvxpy[pair] = cvxpy_minimum(s[np.ix_(ix, ix)], c[ix], caps[ix])[1]
    want = min(by_cvxpy, key=lambda k: by_cvxpy[k])
    assert best_set == want
    assert best == pytest.approx(by_cvxpy[want], abs=1e-8)


def test_kkt_certificate_flags_points_that_are_not_optimal():
    """S = I, c = 0: the optimum is (½, ½); each residual worked out by hand."""
    s, c, caps = np.eye(2), np.zeros(2), np.full(2, np.inf)
    at_optimum = kkt_certificate(s, c, caps, np.array([0.5, 0.5]))
    assert max(at_optimum.values()) == pytest.approx(0.0, abs=1e-15)
    # Both interior, g = p = (0.7, 0.3), ν = mean g = 0.5: |g_i − ν| = 0.2.
    off = kkt_certificate(s, c, caps, np.array([0.7, 0.3]))
    assert off["stationarity"] == pytest.approx(0.2)
    assert off["primal"] == pytest.approx(0.0, abs=1e-15)
    # p = (1, 0): task 1 at its lower bound with g_1 = 0 < ν = g_0 = 1, dual violation 1.
    corner = kkt_certificate(s, c, caps, np.array([1.0, 0.0]))
    assert corner["dual"] == pytest.approx(1.0)
    # Off the simplex: a negative entry and a wrong sum are primal violations.
    assert kkt_certificate(s, c, caps, np.array([1.2, -0.2]))["primal"] == pytest.approx(0.2)
    assert kkt_certificate(s, c, caps, np.array([0.6, 0.6]))["primal"] == pytest.approx(0.2)
    # A task above its cap (cap 0.6 on task 0) is a primal violation of 0.1.
    capped = kkt_certificate(s, c, np.array([0.6, 1.0]), np.array([0.7, 0.3]))
    assert capped["primal"] == pytest.approx(0.1)


# --------------------------------------------------------------------------- contract and errors


def test_estimator_contract():
    model = TaskMixtureMRF(0.1, caps=None, budget=None)
    assert model.get_params() == {"rho": 0.1, "caps": None, "budget": None, "anchor": 0.0,
                                  "prior": None}
    assert not hasattr(model, "weights_")
    s = random_affinity(np.random.default_rng(12), 4)
    assert model.fit(s) is model
    for name in ("weights_", "energy_", "support_", "kkt_residual_", "certificate_", "n_iter_"):
        assert hasattr(model, name)
    assert model.greedy_gains_ is None
    assert model.set_params(rho=0.2).rho == 0.2


@pytest.mark.parametrize(
    ("kwargs", "s", "error", "fragment"),
    [
        ({}, np.array([[1.0, np.nan], [np.nan, 1.0]]), InvalidInputError, "non-finite entry nan"),
        ({}, np.ones((2, 3)), InvalidInputError, "square"),
        ({}, np.array([[1.0, 0.5], [0.2, 1.0]]), InvalidInputError, "symmetric"),
        ({}, np.array([[1.0, 2.0], [2.0, 1.0]]), InvalidInputError, "positive semi-definite"),
        ({"caps": [0.5, -0.1]}, np.eye(2), InvalidInputError, "caps[1] = -0.1"),
        ({"caps": [0.3, 0.3]}, np.eye(2), InfeasibleError, "caps sum to 0.6"),
        ({"budget": 3}, np.eye(2), InfeasibleError, "larger than the number of tasks"),
        ({"budget": 0}, np.eye(2), InvalidInputError, "positive integer"),
        ({"budget": 1, "caps": [0.6, 0.6]}, np.eye(2), InfeasibleError, "budget k=1"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs, s, error, fragment):
    with pytest.raises(error) as info:
        TaskMixtureMRF(0.1, **kwargs).fit(s)
    assert fragment in str(info.value)


def test_bad_rho_and_utility():
    s = np.eye(3)
    with pytest.raises(InvalidInputError, match="rho"):
        TaskMixtureMRF(float("nan")).fit(s)
    with pytest.raises(InvalidInputError, match="rho must be >= 0"):
        TaskMixtureMRF(-1.0).fit(s)
    with pytest.raises(InvalidInputError, match=r"utility must have shape \(3,\)"):
        TaskMixtureMRF(0.1).fit(s, utility=[1.0, 2.0])
    with pytest.raises(InvalidInputError, match="NaN"):
        TaskMixtureMRF(0.1).fit(s, utility=[1.0, np.nan, 2.0])
