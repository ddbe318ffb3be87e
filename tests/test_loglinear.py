"""Olmix's log-linear law and its KL-anchored proposer (core/loglinear.py).

Oracles: cvxpy's exponential-cone solver (Clarabel) on the proposer's problem; a law with
known parameters recovered from noiseless swarm data; λ → ∞ returns the prior; the gradient
and Hessian against finite differences; the Huber fit ignoring one wild swarm point.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from taskpgm.core.convex import certificate
from taskpgm.core.loglinear import ExpSumLoss, LogLinearLaw, fit_law, propose
from taskpgm.errors import InvalidInputError


def random_law(rng: np.random.Generator, t: int, k: int | None = None) -> LogLinearLaw:
    k = t if k is None else k
    slopes = rng.normal(0.0, 1.0, size=(k, t))
    slopes[np.arange(min(k, t)), np.arange(min(k, t))] -= 2.0  # its own data helps a task
    return LogLinearLaw(rng.uniform(-1.0, 0.5, size=k), slopes, np.zeros(k))


def cvxpy_propose(law: LogLinearLaw, lam: float, q, caps, w):
    x = cp.Variable(law.slopes.shape[1])
    objective = cp.sum(cp.multiply(w, cp.exp(law.slopes @ x)))
    if lam:
        objective = objective + lam * cp.sum(cp.rel_entr(x, q))
    problem = cp.Problem(cp.Minimize(objective), [cp.sum(x) == 1, x >= 0, x <= caps])
    problem.solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    p = np.clip(np.asarray(x.value), 0.0, caps)
    p /= p.sum()
    return ExpSumLoss(law.slopes, w, lam, q if lam else None).value(p)


@pytest.mark.parametrize("seed", range(6))
def test_the_proposer_matches_cvxpy(seed):
    rng = np.random.default_rng(seed)
    t = [3, 8, 12, 20, 30, 50][seed]
    law = random_law(rng, t, k=[3, 8, 6, 20, 10, 50][seed])
    lam = [0.0, 0.05, 0.5, 0.0, 0.05, 2.0][seed]
    q = rng.dirichlet(np.ones(t))
    caps = rng.uniform(1.5 / t, 4.0 / t, size=t)
    caps *= max(1.0, 1.05 / caps.sum())
    w = rng.dirichlet(np.ones(law.slopes.shape[0]))
    got = propose(law, strength=lam, prior=q, caps=caps, task_weights=w)
    assert got.certificate["gap"] <= 1e-9 and got.certificate["primal"] <= 1e-12
    assert got.p.sum() == pytest.approx(1.0) and (got.p <= caps + 1e-12).all()
    ours = ExpSumLoss(law.slopes, w, lam, q if lam else None).value(got.p)
    theirs = cvxpy_propose(law, lam, q, caps, w)
    assert ours <= theirs + 1e-7  # never worse than the conic solver, to its tolerance
    assert abs(ours - theirs) <= 1e-7 * max(1.0, abs(theirs))


def test_a_strong_anchor_returns_the_prior_and_uniform_is_the_default():
    rng = np.random.default_rng(3)
    law = random_law(rng, 6)
    q = rng.dirichlet(np.ones(6))
    assert propose(law, strength=1e8, prior=q).p == pytest.approx(q, abs=1e-6)
    assert propose(law, strength=1e8).p == pytest.approx(np.full(6, 1 / 6), abs=1e-6)
    zero = np.array([0.5, 0.5, 0, 0, 0, 0])  # components outside the prior get nothing
    assert propose(law, strength=0.05, prior=zero).p[2:].max() == 0.0


def test_the_certificate_flags_a_point_that_is_not_optimal():
    rng = np.random.default_rng(4)
    law = random_law(rng, 8)
    caps = np.full(8, 0.4)
    got = propose(law, strength=0.05, caps=caps)
    obj = ExpSumLoss(law.slopes, np.full(8, 1 / 8), 0.05, np.full(8, 1 / 8))
    worse = 0.8 * got.p + 0.2 * np.full(8, 1 / 8)
    gap = certificate(obj, worse, caps)["gap"]
    assert gap > 1e-6 and gap >= obj.value(worse) - got.value - 1e-12


def test_gradient_and_hessian_against_finite_differences():
    rng = np.random.default_rng(5)
    law = random_law(rng, 5, k=4)
    obj = ExpSumLoss(law.slopes, rng.dirichlet(np.ones(4)), 0.3, rng.dirichlet(np.ones(5)))
    p = rng.dirichlet(np.ones(5) * 3)
    h = 1e-6
    eye = np.eye(5)
    grad = np.array([(obj.value(p + h * e) - obj.value(p - h * e)) / (2 * h) for e in eye])
    assert obj.gradient(p) == pytest.approx(grad, rel=1e-6, abs=1e-7)
    hess = np.array([(obj.gradient(p + h * e) - obj.gradient(p - h * e)) / (2 * h) for e in eye])
    assert obj.hessian(p) == pytest.approx(hess, rel=1e-5, abs=1e-5)


def test_the_fit_recovers_a_known_law_and_shrugs_off_one_wild_point():
    rng = np.random.default_rng(6)
    t, n = 5, 40
    truth = random_law(rng, t)
    x = rng.dirichlet(np.ones(t), size=n)
    y = truth.predict(x)
    law = fit_law(x, y)
    assert np.abs(law.predict(x) - y).max() < 1e-3  # noiseless data: an exact fit
    fresh = rng.dirichlet(np.ones(t), size=200)  # and it generalizes over the simplex
    assert np.abs(law.predict(fresh) - truth.predict(fresh)).max() < 1e-2
    wild = y.copy()
    wild[0, 0] += 5.0  # one swarm run gone wrong: the Huber loss caps its pull
    robust = fit_law(x, wild)
    assert np.abs(robust.predict(x[1:, :])[:, 0] - y[1:, 0]).max() < 0.02


def test_bad_input_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="needs"):
        fit_law(np.ones((1, 3)) / 3, np.ones((1, 3)))
    with pytest.raises(InvalidInputError, match="finite"):
        fit_law(np.full((3, 2), 0.5), np.array([[1.0, np.nan]] * 3))
    law = random_law(np.random.default_rng(0), 3)
    with pytest.raises(InvalidInputError, match="strength"):
        propose(law, strength=-1.0)
    with pytest.raises(InvalidInputError, match="caps"):
        propose(law, prior=[1.0, 0.0, 0.0], caps=[0.5, 1.0, 1.0])


def test_olmix_on_a_swarm_gives_a_noise_task_little_weight():
    """A known answer: component 3's data is noise that raises every task's loss, the others
    each lower their own task's. Olmix, fitted on a swarm of 24 noisy mixtures, keeps the noise
    task far below uniform's 1/4 (the anchor to uniform at λ 0.05 keeps it above 0)."""
    from taskpgm.swarm import draw_around, olmix

    rng = np.random.default_rng(7)
    t = 4
    slopes = np.full((t, t), 0.2)
    np.fill_diagonal(slopes, -1.5)
    slopes[:, 3] = 1.0  # the noise component hurts every task, its own included
    truth = LogLinearLaw(np.full(t, 0.3), slopes, np.zeros(t))
    q = np.full(t, 1 / t)
    x = draw_around(q, 24, seed=1)
    y = truth.predict(x) + rng.normal(0.0, 0.01, size=(24, t))
    got = olmix(x, y, caps=np.ones(t), prior=None, names=["a", "b", "c", "noise"], seed=0)
    assert got["weights"]["noise"] < 0.05
    assert min(got["weights"][k] for k in "abc") > 0.25
    assert got["certificate"]["gap"] <= 1e-9 and got["strength"] == 0.05
    assert got["predicted_loss"] < truth.predict(q).mean()


def test_the_task_loss_is_bits_per_byte_for_generative_tasks_else_minus_logprob():
    from taskpgm.swarm import olmix, task_loss

    assert task_loss({"logprob": -1.25}) == 1.25
    assert task_loss({"logprob": -40.0, "bpb": 0.9}) == 0.9
    skipped = olmix(np.full((3, 2), 0.5), np.array([[1.0, np.nan]] * 3), caps=np.ones(2),
                    prior=None, names=["a", "b"])
    assert "skipped" in skipped and "finite" in skipped["skipped"]
