"""The KL-anchored energy and MixMin's loss on the capped simplex, against cvxpy.

Oracles: cvxpy's exponential-cone solver (Clarabel) on the same problems; λ → ∞ returns the
prior; the Frank–Wolfe gap flags a point that is not optimal; gradients and Hessians against
finite differences.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from taskpgm.core.convex import (
    AnchoredQuadratic,
    MixtureLoss,
    anchored_solve,
    certificate,
    frank_wolfe_gap,
    kl_divergence,
    minimize,
)
from taskpgm.core.mrf import TaskMixtureMRF, solve_trusted
from taskpgm.errors import InvalidInputError


def random_problem(rng: np.random.Generator, n: int, *, indefinite_part: bool = False):
    """A PSD S of low rank plus a signed part that stays PSD, a signed c, a prior, caps."""
    a = rng.normal(size=(n, max(2, n // 3)))
    s = a @ a.T / n
    if indefinite_part:  # entries of both signs, still PSD
        b = rng.normal(size=(n, n))
        s = s + 0.1 * (b @ b.T) / n
    c = rng.normal(size=n)
    q = rng.dirichlet(np.ones(n))
    caps = rng.uniform(1.5 / n, 4.0 / n, size=n)
    if caps.sum() < 1.05:
        caps *= 1.05 / caps.sum()
    return s, c, q, caps


def cvxpy_anchored(s, c, lam, q, caps):
    x = cp.Variable(s.shape[0])
    objective = 0.5 * cp.quad_form(x, cp.psd_wrap(s)) - c @ x + lam * cp.sum(cp.rel_entr(x, q))
    problem = cp.Problem(cp.Minimize(objective), [cp.sum(x) == 1, x >= 0, x <= caps])
    problem.solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    # its point, made exactly feasible, valued by the same formula as ours (cvxpy reports inf
    # when a coordinate it returns is -1e-13)
    p = np.clip(np.asarray(x.value), 0.0, caps)
    p /= p.sum()
    return p, AnchoredQuadratic(s, c, lam, q).value(p)


@pytest.mark.parametrize("seed", range(8))
def test_anchored_solve_matches_cvxpy(seed):
    rng = np.random.default_rng(seed)
    n = [3, 7, 12, 20, 30, 50, 50, 40][seed]
    s, c, q, caps = random_problem(rng, n, indefinite_part=seed % 2 == 1)
    lam = [0.01, 0.05, 0.3, 1.0, 3.0, 0.1, 0.02, 10.0][seed]
    got = anchored_solve(s, c, lam, q, caps)
    _, best = cvxpy_anchored(s, c, lam, q, caps)
    assert got.value == pytest.approx(best, abs=1e-7)
    assert got.value <= best + 1e-10  # ours is certified to 1e-10; cvxpy's, to its tolerance
    assert got.certificate["gap"] <= 1e-10
    p = got.p
    assert abs(p.sum() - 1) < 1e-12 and (p >= 0).all() and (p <= caps + 1e-12).all()
    assert (p > 0).all()  # the anchor keeps every prior task above zero


@pytest.mark.parametrize("lam", [1e-7, 3e-7, 1e-5, 1e6, 1e7, 1e8])
def test_very_weak_and_very_strong_anchors_are_certified(lam):
    """A singular PSD S (rank 3 of 8), as the split energy's redundancy matrix can be: at
    λ = 1e8 the gap's two terms (each ~λ KL) used to cancel into ~λ ε = 2e-8 of rounding,
    and at λ ≤ 1e-5 a coordinate that belongs at 0 was sent back up to q_i by a closed form
    on a rough multiplier, and at λ ≤ 3e-6 the Newton model saw no descent 1e-8 above the
    optimum; each stopped with a SolverError."""
    from taskpgm.core.qp import solve_simplex_qp

    for seed in range(60):
        rng = np.random.default_rng(seed)
        a = rng.normal(size=(8, 3))
        s, c, q = a @ a.T / 3, rng.normal(size=8) * 0.1, rng.dirichlet(np.ones(8))
        got = anchored_solve(s, c, lam, q, None)
        # minimize's acceptance: 1e-10, or 1e-9 of |f| where the line search's rounding
        # stops it first (at λ = 1e8, λ KL's rounding is above 1e-10)
        assert got.certificate["gap"] <= max(1e-10, 1e-9 * max(1.0, abs(got.value))), seed
        energy = 0.5 * got.p @ s @ got.p - c @ got.p
        plain = solve_simplex_qp(s, c, np.full(8, np.inf)).p
        e0 = 0.5 * plain @ s @ plain - c @ plain
        kl0 = float(np.sum(plain[plain > 0] * np.log(plain[plain > 0] / q[plain > 0])))
        # E(p_λ) + λ KL(p_λ) ≤ E(p_0) + λ KL(p_0), so E(p_λ) − E(p_0) ≤ λ KL(p_0 ‖ q)
        assert e0 - 1e-10 <= energy <= e0 + lam * kl0 + 1e-10, seed
        if lam >= 1e6:
            np.testing.assert_allclose(got.p, q, atol=1e-5)


def test_large_strength_returns_the_prior_and_zero_strength_the_plain_solve():
    rng = np.random.default_rng(5)
    s, c, q, _ = random_problem(rng, 10)
    got = anchored_solve(s, c, 1e9, q, None)
    np.testing.assert_allclose(got.p, q, atol=1e-7)
    s, c, q, _ = random_problem(rng, 10, indefinite_part=True)  # full rank: one minimizer
    plain = TaskMixtureMRF(0.0).fit(s, utility=c)
    weak = TaskMixtureMRF(0.0, anchor=1e-9, prior=q).fit(s, utility=c)
    np.testing.assert_allclose(weak.weights_, plain.weights_, atol=1e-6)
    assert abs(weak.energy_ - plain.energy_) < 1e-8


def test_the_certificate_flags_a_point_that_is_not_optimal():
    rng = np.random.default_rng(6)
    s, c, q, caps = random_problem(rng, 8)
    got = anchored_solve(s, c, 0.2, q, caps)
    obj = AnchoredQuadratic(s, c, 0.2, q)
    assert certificate(obj, got.p, caps)["gap"] <= 1e-10
    moved = got.p.copy()
    i, j = np.argsort(moved)[-1], np.argsort(moved)[0]
    moved[i] -= 0.01
    moved[j] += 0.01
    bad = certificate(obj, moved, caps)
    assert bad["gap"] > 1e-6 and bad["primal"] < 1e-12
    # the gap bounds the excess: f(moved) - f* <= gap(moved)
    assert obj.value(moved) - got.value <= bad["gap"] + 1e-12


def test_gradients_and_hessians_against_finite_differences():
    rng = np.random.default_rng(7)
    s, c, q, _ = random_problem(rng, 6)
    probs = rng.uniform(0.05, 1.0, size=(6, 40))
    w = rng.dirichlet(np.ones(40))
    p = rng.dirichlet(np.ones(6) * 3)
    for obj in (AnchoredQuadratic(s, c, 0.4, q),
                MixtureLoss(probs, w, np.zeros(40)),
                MixtureLoss(probs, w, np.full(40, 0.01), 0.3, q)):
        g, h = obj.gradient(p), obj.hessian(p)
        eps = 1e-6
        for i in range(6):
            e = np.zeros(6)
            e[i] = eps
            assert (obj.value(p + e) - obj.value(p - e)) / (2 * eps) == pytest.approx(
                g[i], abs=1e-6)
            np.testing.assert_allclose((obj.gradient(p + e) - obj.gradient(p - e)) / (2 * eps),
                                       h[:, i], atol=1e-5)


def test_frank_wolfe_gap_fills_the_cheapest_tasks_first():
    g = np.array([3.0, 1.0, 2.0])
    caps = np.array([1.0, 0.4, 0.5])
    # min over the capped simplex: 0.4 on task 1, 0.5 on task 2, 0.1 on task 0
    best = 0.4 * 1.0 + 0.5 * 2.0 + 0.1 * 3.0
    p = np.array([0.2, 0.4, 0.4])
    assert frank_wolfe_gap(g, p, caps) == pytest.approx(float(g @ p) - best)


def test_estimator_anchor_refuses_a_budget_and_bad_strengths():
    s = np.eye(4)
    with pytest.raises(InvalidInputError, match="do not combine"):
        TaskMixtureMRF(0.1, budget=2, anchor=0.5).fit(s)
    with pytest.raises(InvalidInputError, match="anchor must be"):
        TaskMixtureMRF(0.1, anchor=-1.0).fit(s)
    with pytest.raises(InvalidInputError, match="sum to 1"):
        TaskMixtureMRF(0.1, anchor=1.0, prior=[0.5, 0.5, 0.5, 0.5]).fit(s)
    model = TaskMixtureMRF(0.1, anchor=1.0).fit(s)
    assert model.kkt_residual_ < 1e-8 and model.certificate_["unique"]
    assert model.kl_ == pytest.approx(kl_divergence(model.weights_, np.full(4, 0.25)))


def test_trusted_tasks_solve_the_anchored_problem_with_held_shares():
    """solve_trusted with held uniform shares equals minimizing E + λ KL over the free tasks
    directly (cvxpy), the held shares fixed."""
    rng = np.random.default_rng(9)
    n = 6
    s, c, q, _ = random_problem(rng, n)
    trusted = np.array([True, True, False, True, True, False])
    free = np.flatnonzero(trusted)

    def terms(f):
        return s[np.ix_(f, f)], c[f]

    lam, rho = 0.3, 0.5
    got = solve_trusted(rho, trusted, terms, hold_uniform=True, anchor=lam, prior=q)
    fixed = np.where(trusted, 0.0, 1.0 / n)
    m = 1 - fixed.sum()
    x = cp.Variable(free.size)
    sf = s[np.ix_(free, free)]
    obj = 0.5 * cp.quad_form(x, cp.psd_wrap(sf)) - rho * c[free] @ x \
        + lam * cp.sum(cp.rel_entr(x, q[free]))
    cp.Problem(cp.Minimize(obj), [cp.sum(x) == m, x >= 0]).solve(
        solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    np.testing.assert_allclose(got.weights[free], x.value, atol=1e-6)
    np.testing.assert_allclose(got.weights[~trusted], 1.0 / n)
    assert got.kl == pytest.approx(kl_divergence(got.weights, q))


def cvxpy_mixmin(probs, w, caps, lam=0.0, q=None):
    x = cp.Variable(probs.shape[0])
    objective = -cp.sum(cp.multiply(w, cp.log(probs.T @ x)))
    if lam:
        objective = objective + lam * cp.sum(cp.rel_entr(x, q))
    cons = [cp.sum(x) == 1, x >= 0] + ([x <= caps] if caps is not None else [])
    problem = cp.Problem(cp.Minimize(objective), cons)
    problem.solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    p = np.clip(np.asarray(x.value), 0.0, None if caps is None else caps)
    p /= p.sum()
    return MixtureLoss(probs, w, np.zeros(w.size), lam, q).value(p)


@pytest.mark.parametrize("seed", range(5))
def test_mixture_loss_matches_cvxpy(seed):
    rng = np.random.default_rng(100 + seed)
    n, examples = [4, 8, 15, 30, 12][seed], 200
    probs = rng.beta(0.7, 1.5, size=(n, examples)) + 1e-4
    w = np.full(examples, 1.0 / examples)
    caps = None if seed % 2 else np.full(n, 3.0 / n)
    cap = np.full(n, np.inf) if caps is None else caps
    got = minimize(MixtureLoss(probs, w, np.zeros(examples)), cap)
    best = cvxpy_mixmin(probs, w, caps)
    assert got.value == pytest.approx(best, abs=1e-7) and got.value <= best + 1e-12
    # the solver's contract: 1e-10, or 1e-9 relative where rounding stalls it first (seed 2
    # stops at 2.1e-10 on an AVX-512 CPU: coordinates of 1e-10 the QP leaves at its tolerance)
    assert got.certificate["gap"] <= max(1e-10, 1e-9 * abs(got.value))
    assert got.n_iter < 50  # the steps taken, also where rounding stalls it (not max_iter)
    q = rng.dirichlet(np.ones(n))
    anchored = minimize(MixtureLoss(probs, w, np.zeros(examples), 0.05, q), cap,
                        start=q, interior=True)
    assert anchored.value == pytest.approx(cvxpy_mixmin(probs, w, caps, 0.05, q), abs=1e-7)
