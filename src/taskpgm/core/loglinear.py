"""Olmix's log-linear mixing law, fitted on a swarm, and its KL-anchored exact proposer.

**Law** (Ye et al. 2024's data mixing law in the form Olmix fits), one per task j:

    L_j(x) = exp(a_j) + exp(t_jᵀ x),

the task's loss after training on the mixture x (here the gold choice's length-normalized
negative log-probability, in nats). A bias inside the exponent would be redundant on the
simplex (t_jᵀx + b = (t_j + b·1)ᵀx when Σ x = 1), so the law has T + 1 parameters a task.

**Fit** (:func:`fit_law`): the Huber loss (``delta``, Olmix's 0.02) of the law's residuals
over the swarm's mixtures, minimized from several starting points (Olmix's: exp(a_j) from
e^-2 to e^1.5, the task's own coefficient negative and the others small and positive),
keeping the start with the lowest loss. Deterministic for a seed.

**Proposer** (:func:`propose`): the law's macro loss plus a KL anchor to the swarm's prior,

    min_x  Σ_j w_j exp(t_jᵀ x) + λ KL(x ‖ q)   over {0 ≤ x ≤ caps, Σ x = 1},

(the constants exp(a_j) do not move the minimizer; Olmix's shipped λ is 0.05). Each
exp(t_jᵀx) is convex (its Hessian e_j t_j t_jᵀ is PSD), so the problem is convex, strictly
for λ > 0, and :func:`taskpgm.core.convex.minimize` solves it to a certified duality gap,
where Olmix's own code hands it to a generic conic solver.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from taskpgm.core.convex import ConvexResult, check_prior, kl_divergence, minimize
from taskpgm.core.qp import FloatArray, _fill, check_caps
from taskpgm.errors import InvalidInputError

#: Olmix's Huber threshold for the fit's residuals (its losses are bits per byte, ours nats
#: per token: the same scale, about 1-2).
HUBER_DELTA = 0.02
#: Olmix's anchor strength in its shipped configs.
OLMIX_STRENGTH = 0.05
#: exp(a_j) at the fit's starting points: Olmix's e^-2 .. e^1.5.
START_LOG_C = tuple(float(v) for v in np.linspace(-2.0, 1.5, 10))
EXP_MAX = 50.0


@dataclass(frozen=True)
class LogLinearLaw:
    """Fitted laws of several tasks: L_j(x) = exp(a_j) + exp(t_jᵀ x).

    Attributes:
        log_c: (K,) a_j.
        slopes: (K, T) t_j.
        huber: (K,) each fit's Huber loss on the swarm (the lowest over its starts).
    """

    log_c: FloatArray
    slopes: FloatArray
    huber: FloatArray

    def predict(self, x: ArrayLike) -> FloatArray:
        """(n, K) predicted losses of the mixtures x (n, T)."""
        xa = np.atleast_2d(np.asarray(x, dtype=np.float64))
        out: FloatArray = np.exp(self.log_c)[None, :] + np.exp(xa @ self.slopes.T)
        return out


def _huber_fit(x: FloatArray, y: FloatArray, start: FloatArray, delta: float
               ) -> tuple[FloatArray, float]:
    from scipy.optimize import least_squares

    def residuals(theta: FloatArray) -> FloatArray:  # exponents held under e^50: a wild
        r: FloatArray = (np.exp(min(theta[0], EXP_MAX))  # trial step stays finite
                         + np.exp(np.minimum(x @ theta[1:], EXP_MAX)) - y)
        return r

    def jacobian(theta: FloatArray) -> FloatArray:
        e = np.exp(np.minimum(x @ theta[1:], EXP_MAX))
        return np.hstack([np.full((x.shape[0], 1), np.exp(min(theta[0], EXP_MAX))),
                          e[:, None] * x])

    got = least_squares(residuals, start, jac=jacobian, loss="huber", f_scale=delta,
                        max_nfev=200, x_scale="jac")
    r = residuals(got.x)
    a = np.abs(r)
    loss = float(np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta)).sum())
    return got.x, loss


def fit_law(weights: ArrayLike, losses: ArrayLike, *, delta: float = HUBER_DELTA,
            starts: int = 5, seed: int = 0) -> LogLinearLaw:
    """Fit one law per column of ``losses`` on the swarm's mixtures.

    Args:
        weights: (n, T) the swarm's mixtures.
        losses: (n, K) each mixture's loss on each of K tasks; task j < T is taken to be
            mixture component j for the starting points (its own coefficient starts
            negative), as in Olmix.
        delta: the Huber loss's threshold.
        starts: random slope vectors per exp(a_j) start (Olmix: 30; 10 × ``starts`` in all).
        seed: the starting points' seed.
    """
    x = np.asarray(weights, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or y.shape[0] != x.shape[0] or x.shape[0] < 2:
        raise InvalidInputError(f"the log-linear law needs (n, T) mixtures and (n, K) losses "
                                f"with n >= 2, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InvalidInputError("the log-linear law needs finite mixtures and losses")
    if starts < 1 or not delta > 0:
        raise InvalidInputError(f"need starts >= 1 and delta > 0, got {starts}, {delta}")
    rng = np.random.default_rng(seed)
    n_tasks = x.shape[1]
    log_c: list[float] = []
    slopes: list[FloatArray] = []
    huber: list[float] = []
    for j in range(y.shape[1]):
        best: tuple[float, FloatArray] | None = None
        for a0 in START_LOG_C:
            for _ in range(starts):
                t0 = np.asarray(rng.random(n_tasks), dtype=np.float64) * 0.1
                if j < n_tasks:
                    t0[j] = -float(rng.random())
                theta, loss = _huber_fit(x, y[:, j], np.concatenate([[a0], t0]), delta)
                if best is None or loss < best[0]:
                    best = (loss, theta)
        assert best is not None
        huber.append(best[0])
        log_c.append(float(best[1][0]))
        slopes.append(best[1][1:])
    return LogLinearLaw(np.array(log_c), np.array(slopes), np.array(huber))


@dataclass(frozen=True)
class ExpSumLoss:
    """f(x) = Σ_j w_j exp(t_jᵀ x) + λ KL(x ‖ q): the law's loss without its constants.

    ∇f = Tᵀ(w ⊙ e) with e_j = exp(t_jᵀx), ∇²f = Tᵀ diag(w ⊙ e) T (PSD), plus the KL
    term's λ (log(x / q) + 1) and λ diag(1 / x).
    """

    slopes: FloatArray
    w: FloatArray
    strength: float = 0.0
    prior: FloatArray | None = None

    def _terms(self, p: FloatArray) -> FloatArray:
        e: FloatArray = self.w * np.exp(self.slopes @ p)
        return e

    def value(self, p: FloatArray) -> float:
        out = float(self._terms(p).sum())
        if self.strength and self.prior is not None:
            out += self.strength * kl_divergence(p, self.prior)
        return out

    def smooth_gradient(self, p: FloatArray) -> FloatArray:
        g: FloatArray = self.slopes.T @ self._terms(p)
        return g

    def gradient(self, p: FloatArray) -> FloatArray:
        g = self.smooth_gradient(p)
        if self.strength and self.prior is not None:
            with np.errstate(divide="ignore"):
                g = g + self.strength * (np.log(p / self.prior) + 1.0)
        return g

    def hessian(self, p: FloatArray) -> FloatArray:
        h: FloatArray = (self.slopes.T * self._terms(p)) @ self.slopes
        if self.strength and self.prior is not None:
            h = h + np.diag(self.strength / p)
        return h


def propose(law: LogLinearLaw, *, strength: float = OLMIX_STRENGTH,
            prior: ArrayLike | None = None, caps: ArrayLike | None = None,
            task_weights: ArrayLike | None = None) -> ConvexResult:
    """Olmix's exact proposer: argmin of the law's weighted loss + λ KL(x ‖ q), certified.

    Args:
        law: the fitted laws of K tasks over T mixture components.
        strength: λ ≥ 0 (0: the law alone, whose minimizer may sit on a face).
        prior: q on the simplex (default uniform); components with q_i = 0 get 0 when λ > 0.
        caps: (T,) caps, or None.
        task_weights: (K,) w_j ≥ 0 (default 1/K: the macro mean over tasks).

    Returns the mixture (``p``), the objective's value and its certificate.
    """
    slopes = np.asarray(law.slopes, dtype=np.float64)
    k, t = slopes.shape
    cap = check_caps(caps, t)
    w = np.full(k, 1.0 / k) if task_weights is None else np.asarray(task_weights, np.float64)
    if w.shape != (k,) or (w < 0).any() or not np.isfinite(w).all():
        raise InvalidInputError(f"need {k} non-negative task weights, got shape {w.shape}")
    if not strength >= 0 or not np.isfinite(strength):
        raise InvalidInputError(f"the anchor's strength must be >= 0, got {strength!r}")
    q = np.full(t, 1.0 / t) if prior is None else check_prior(prior, t)
    on = np.flatnonzero(q > 0) if strength > 0 else np.arange(t)
    if float(cap[on].sum()) < 1.0 - 1e-12:
        raise InvalidInputError("the components the prior gives weight cannot hold the whole "
                                "mixture under their caps; widen the prior or the caps")
    obj = ExpSumLoss(slopes[:, on], w, float(strength), q[on] if strength > 0 else None)
    start = _fill(q[on] / q[on].sum(), cap[on], 1.0)
    got = minimize(obj, cap[on], start=start, interior=strength > 0)
    p = np.zeros(t)
    p[on] = got.p
    return ConvexResult(p, got.value, got.certificate, got.n_iter)
