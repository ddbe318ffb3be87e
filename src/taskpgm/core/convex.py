"""Smooth convex objectives on the capped simplex, minimized to a certified gap.

The problem, for f convex and twice differentiable where it is finite:

    min f(p)   subject to  0 ≤ p ≤ caps,  Σ p = 1.

Two objectives live here: the KL-anchored quadratic energy (:class:`AnchoredQuadratic`,
``mrf.anchor``) and MixMin's ensemble loss (:class:`MixtureLoss`, ``mrf.energy: mixmin``),
optionally anchored too.

**Method** (:func:`minimize`): projected Newton by quadratic models. At p, with
g = ∇f(p) and H = ∇²f(p), the model f(p) + gᵀ(x − p) + ½ (x − p)ᵀ H (x − p) is
minimized *exactly* over the capped simplex by the active-set solver of
:mod:`taskpgm.core.qp` (``S = H, c = H p − g``), and an Armijo backtracking line search
along d = x − p sets the step. d is a descent direction (gᵀd ≤ −½ dᵀHd ≤ 0), so f
falls every iteration; once the model's face is the optimum's face, the steps are
Newton's and converge quadratically. With a KL term the step stops short of the
boundary (a fraction 0.99 of the way to the first p_i = 0), since its optimum keeps
every prior task above 0.

**Certificate** (:func:`certificate`): a duality gap G(p) ≥ f(p) − f*, from linearizing
the smooth part h of f = h + λ KL at p: f* ≥ min_x h(p) + ∇h(p)ᵀ(x − p) + λ KL(x ‖ q).
Without a KL term that is the Frank–Wolfe gap ∇h(p)ᵀp − min_{s ∈ Δ} ∇h(p)ᵀs; with one,
the inner minimum is closed-form up to one scalar (:func:`entropic_minimum`). A point is
accepted when G(p) ≤ ``tol``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from taskpgm.core.qp import (
    SolverError,
    _fill,
    check_caps,
    check_psd,
    gradient_certificate,
    solve_simplex_qp,
)
from taskpgm.errors import InvalidInputError

FloatArray = NDArray[np.float64]
#: The accepted Frank–Wolfe gap: f(p) − f* ≤ this.
GAP_TOLERANCE = 1e-10
#: With a KL term, a step goes at most this fraction of the way to the first zero.
TO_BOUNDARY = 0.99
#: With a KL term, coordinates below TINY · min(1, λ) leave the Newton model
#: (:func:`_newton_direction`): there λ / p_i exceeds 1e9 (a weak anchor keeps its small
#: coordinates in the model, where their closed form would rest on too rough a multiplier).
TINY = 1e-9


def _tiny(obj: Objective, p: FloatArray) -> NDArray[np.bool_]:
    return p < TINY * min(1.0, float(obj.strength))


class Objective(Protocol):
    """f = h + λ KL(· ‖ q): its value, gradient and Hessian at a feasible p, and the
    gradient of the smooth part h alone (for the certificate; λ = 0: no KL term)."""

    @property
    def strength(self) -> float: ...
    @property
    def prior(self) -> FloatArray | None: ...

    def value(self, p: FloatArray) -> float: ...
    def gradient(self, p: FloatArray) -> FloatArray: ...
    def hessian(self, p: FloatArray) -> FloatArray: ...
    def smooth_gradient(self, p: FloatArray) -> FloatArray: ...


def kl_divergence(p: ArrayLike, q: ArrayLike) -> float:
    """KL(p ‖ q) = Σ_i p_i log(p_i / q_i), with 0 · log 0 = 0 (inf where p_i > 0 = q_i)."""
    pa, qa = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    pos = pa > 0
    if (qa[pos] <= 0).any():
        return math.inf
    return float((pa[pos] * np.log(pa[pos] / qa[pos])).sum())


def check_prior(prior: ArrayLike, n: int) -> FloatArray:
    """A prior on the simplex: n non-negative numbers summing to 1 (within 1e-9)."""
    q = np.asarray(prior, dtype=np.float64)
    if q.shape != (n,) or not np.isfinite(q).all() or (q < 0).any():
        raise InvalidInputError(f"the anchor's prior must be {n} non-negative numbers, got "
                                f"shape {q.shape}")
    if abs(float(q.sum()) - 1.0) > 1e-9:
        raise InvalidInputError(f"the anchor's prior must sum to 1, got {float(q.sum()):.9g}")
    return q


class KLAnchored:
    """The λ KL(p ‖ q) term on top of a smooth part h: ``value``, ``gradient`` and
    ``hessian`` of f = h + λ KL from the subclass's ``smooth_value``, ``smooth_gradient`` and
    ``smooth_hessian`` (λ = 0 or no prior: h alone). ∇ KL = log(p / q) + 1, ∇² KL =
    diag(1 / p)."""

    strength: float
    prior: FloatArray | None

    def smooth_value(self, p: FloatArray) -> float:
        raise NotImplementedError

    def smooth_gradient(self, p: FloatArray) -> FloatArray:
        raise NotImplementedError

    def smooth_hessian(self, p: FloatArray) -> FloatArray:
        raise NotImplementedError

    def value(self, p: FloatArray) -> float:
        out = self.smooth_value(p)
        if self.strength and self.prior is not None:
            out += self.strength * kl_divergence(p, self.prior)
        return out

    def gradient(self, p: FloatArray) -> FloatArray:
        g = self.smooth_gradient(p)
        if self.strength and self.prior is not None:
            with np.errstate(divide="ignore"):
                g = g + self.strength * (np.log(p / self.prior) + 1.0)
        return g

    def hessian(self, p: FloatArray) -> FloatArray:
        h = self.smooth_hessian(p)
        if self.strength and self.prior is not None:
            h = h + np.diag(self.strength / p)
        return h


@dataclass(frozen=True)
class AnchoredQuadratic(KLAnchored):
    """f(p) = ½ pᵀ S p − cᵀ p + λ KL(p ‖ q), for q > 0 (restrict to q's support first).

    ∇f = S p − c + λ (log(p / q) + 1), ∇²f = S + λ diag(1 / p): strictly convex on the
    simplex's interior for λ > 0 when S is PSD.
    """

    S: FloatArray
    c: FloatArray
    strength: float
    prior: FloatArray

    def smooth_value(self, p: FloatArray) -> float:
        return float(0.5 * p @ self.S @ p - self.c @ p)

    def smooth_gradient(self, p: FloatArray) -> FloatArray:
        g: FloatArray = self.S @ p - self.c
        return g

    def smooth_hessian(self, p: FloatArray) -> FloatArray:
        return self.S


@dataclass(frozen=True)
class MixtureLoss(KLAnchored):
    """f(p) = −Σ_x w_x log(b_x + Σ_i p_i P_ix) + λ KL(p ‖ q): MixMin's ensemble loss.

    P (T, N): each source model's probability of example x's gold answer; w (N,) the
    examples' weights (Σ w = 1); b (N,) the probability mass of tasks held outside the
    solve (0 by default). ∇f = −P (w / m) with m = b + Pᵀp, ∇²f = P diag(w / m²) Pᵀ
    (PSD: convex), plus the KL term's as in :class:`AnchoredQuadratic`.
    """

    P: FloatArray
    w: FloatArray
    b: FloatArray
    strength: float = 0.0
    prior: FloatArray | None = None

    def _mix(self, p: FloatArray) -> FloatArray:
        m: FloatArray = self.b + self.P.T @ p
        return m

    def smooth_value(self, p: FloatArray) -> float:
        with np.errstate(divide="ignore"):
            return -float(self.w @ np.log(self._mix(p)))

    def smooth_gradient(self, p: FloatArray) -> FloatArray:
        g: FloatArray = -(self.P @ (self.w / self._mix(p)))
        return g

    def smooth_hessian(self, p: FloatArray) -> FloatArray:
        m = self._mix(p)
        h: FloatArray = (self.P * (self.w / (m * m))) @ self.P.T
        return h


def frank_wolfe_gap(g: FloatArray, p: FloatArray, caps: FloatArray) -> float:
    """gᵀp − min over {0 ≤ s ≤ caps, Σ s = 1} of gᵀs (the minimum fills the smallest g_i
    first, each up to its cap)."""
    order = np.argsort(g, kind="stable")
    left, best = 1.0, 0.0
    for i in order:
        take = min(left, float(caps[i]))
        best += take * float(g[i])
        left -= take
        if left <= 0.0:
            break
    return float(g @ p) - best


def entropic_minimum(a: FloatArray, strength: float, prior: FloatArray, caps: FloatArray
                     ) -> FloatArray:
    """argmin over {0 ≤ x ≤ caps, Σ x = 1} of aᵀx + λ KL(x ‖ q), exactly: x_i =
    min(c_i, exp(z_i − s)) with z_i = log q_i − a_i / λ − 1 and s set so that Σ x = 1
    (the capped set only grows while s is re-solved on the rest: at most T rounds)."""
    return _entropic(a, strength, prior, caps)[0]


def entropic_gap(a: FloatArray, strength: float, prior: FloatArray, caps: FloatArray,
                 p: FloatArray) -> float:
    """aᵀp + λ KL(p ‖ q) − min_x [aᵀx + λ KL(x ‖ q)] over the capped simplex, without the
    cancellation of subtracting the two: with x the minimizer (:func:`entropic_minimum`)
    it equals λ KL(p ‖ x) + Σ_capped μ_i (c_i − p_i), μ_i = λ (z_i − s − log c_i) ≥ 0 the
    caps' multipliers. KL(p ‖ x) is summed as Σ x_i φ(p_i / x_i − 1), φ(u) = (1 + u)
    log1p(u) − u ≥ 0, so a p within δ of x costs ~ε δ of rounding, not ~ε λ (which at
    λ = 1e8 is 2e-8, above the accepted gap)."""
    x, log_x, capped, z, s = _entropic(a, strength, prior, caps)
    live = x > 1e-300
    u = np.where(live, p / np.where(live, x, 1.0) - 1.0, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        near = np.where(live, x * ((1.0 + u) * np.log1p(u) - u), 0.0)
        far = np.where(~live & (p > 0), p * (np.log(np.where(p > 0, p, 1.0)) - log_x) - p, 0.0)
    mu = strength * (z[capped] - s - log_x[capped])
    gap = strength * float(near.sum() + far.sum()) + float(mu @ (caps[capped] - p[capped]))
    return gap if math.isfinite(gap) else math.inf


def _entropic(a: FloatArray, strength: float, prior: FloatArray, caps: FloatArray
              ) -> tuple[FloatArray, FloatArray, NDArray[np.bool_], FloatArray, float]:
    """:func:`entropic_minimum`'s x with log x, the capped set, z and s."""
    with np.errstate(divide="ignore"):
        z = np.log(prior) - a / strength - 1.0
    log_cap = np.log(np.where(np.isfinite(caps), caps, np.inf))
    capped = np.zeros(z.size, dtype=bool)
    for _ in range(z.size + 1):
        room = 1.0 - float(caps[capped].sum())
        free = ~capped
        top = float(z[free].max())
        s = top + math.log(float(np.exp(z[free] - top).sum())) - math.log(room)
        now = (z - s >= log_cap) | capped
        if (now == capped).all():
            break
        capped = now
    log_x: FloatArray = np.where(capped, log_cap, z - s)
    x: FloatArray = np.where(capped, caps, np.exp(z - s))
    return x, log_x, capped, z, s


def certificate(obj: Objective, p: FloatArray, caps: FloatArray) -> dict[str, float]:
    """The duality ``gap``, an upper bound on f(p) − f*, and the ``primal`` violation.

    f* ≥ min_x h(p) + ∇h(p)ᵀ(x − p) + λ KL(x ‖ q) over the capped simplex (h convex): the
    Frank–Wolfe gap when λ = 0 (the minimum sits at a vertex of the caps), the entropic one
    when λ > 0 (:func:`entropic_minimum`). Linearizing only h keeps the bound tight where an
    optimal p_i is 1e-14, where |∂f/∂p_i − ν| stays large while its effect on f does not;
    so the KKT residuals of :func:`taskpgm.core.qp.gradient_certificate` are not used."""
    primal = gradient_certificate(np.zeros_like(p), caps, p)["primal"]
    a = obj.smooth_gradient(p)
    if not np.isfinite(a).all():
        return {"gap": math.inf, "primal": primal}
    if not obj.strength or obj.prior is None:
        return {"gap": max(0.0, frank_wolfe_gap(a, p, caps)), "primal": primal}
    return {"gap": max(0.0, entropic_gap(a, obj.strength, obj.prior, caps, p)),
            "primal": primal}


@dataclass(frozen=True)
class ConvexResult:
    """Output of :func:`minimize`."""

    p: FloatArray
    value: float
    certificate: dict[str, float]
    n_iter: int


def minimize(obj: Objective, caps: FloatArray, *, start: FloatArray | None = None,
             interior: bool = False, tol: float = GAP_TOLERANCE, max_iter: int = 200
             ) -> ConvexResult:
    """Minimize ``obj`` over {0 ≤ p ≤ caps, Σ p = 1} until the Frank–Wolfe gap ≤ ``tol``.

    ``interior``: the objective is infinite-gradient at p_i = 0 (a KL term), so every
    iterate stays strictly positive. Raises :class:`taskpgm.core.qp.SolverError` when
    ``max_iter`` iterations do not reach ``tol``.
    """
    n = caps.shape[0]
    p = _fill(np.full(n, 1.0 / n), caps, 1.0) if start is None else start.copy()
    if interior and (p <= 0).any():
        p = _fill(0.5 * p + 0.5 * _fill(np.full(n, 1.0 / n), caps, 1.0), caps, 1.0)
    value = obj.value(p)
    steps = 0  # Newton steps taken
    for _ in range(max_iter):
        cert = certificate(obj, p, caps)
        if cert["gap"] <= tol:
            return ConvexResult(p, value, cert, steps)
        g, h = obj.gradient(p), obj.hessian(p)
        # Σ d = 0 for every step on the simplex, so gᵀd = (g − ḡ)ᵀd: centred, the slope
        # keeps its digits where a strong anchor adds λ to every g_i (λ = 1e8: gᵀd would
        # cancel 1e8-sized terms down to a slope of 1e-9)
        gc = g - float(g.mean())
        face = _face_direction(obj, p, caps, g, h) if interior and obj.prior is not None \
            else None
        d = face if face is not None and float(gc @ face) < 0.0 else _newton_direction(
            obj, p, caps, interior, g, h)
        slope = float(gc @ d)
        if not slope < 0.0 and interior and obj.prior is not None:
            # the model sees no descent (a weak anchor on a singular S leaves it too badly
            # conditioned to resolve the last 1e-8): step towards the linearized problem's
            # minimizer instead, a descent direction whenever the gap is positive
            d = entropic_minimum(obj.smooth_gradient(p), obj.strength, obj.prior, caps) - p
            slope = float(gc @ d)
        if not slope < 0.0:  # no descent left: p is optimal to rounding
            break
        t = 1.0
        if interior:
            down = d < 0
            if down.any():
                t = min(1.0, TO_BOUNDARY * float((p[down] / -d[down]).min()))
            up = (d > 0) & np.isfinite(caps)  # the face step may run into a cap
            if up.any():
                t = min(t, float(((caps[up] - p[up]) / d[up]).min()))
        while True:
            trial = p + t * d
            trial_value = obj.value(trial)
            if trial_value <= value + 1e-4 * t * slope or t < 1e-12:
                break
            t *= 0.5
        if t < 1e-12 and trial_value > value:
            break  # no decrease left to find at this precision
        p = np.clip(trial, 0.0, caps)
        p /= p.sum()
        value = obj.value(p)
        steps += 1
    cert = certificate(obj, p, caps)
    if cert["gap"] <= max(tol, 1e-9 * max(1.0, abs(value))):
        return ConvexResult(p, value, cert, steps)  # stalled by rounding within the bound
    raise SolverError(f"the projected Newton method stopped with a Frank-Wolfe gap of "
                      f"{cert['gap']:.2e} > {tol:.0e}; please report this with its input")


def _tiny_values(obj: Objective, p: FloatArray, caps: FloatArray, g: FloatArray,
                 tiny: NDArray[np.bool_], among: NDArray[np.bool_]) -> FloatArray:
    """The closed-form values of the coordinates below :data:`TINY` under a KL term:
    q_i exp(−(∂h/∂p_i + ν)/λ − 1) under the cap, ν the sum's multiplier read as minus the
    mean gradient over ``among``. A coordinate rises at most to 10 p_i or to the model's
    threshold, whichever is larger: away from the optimum ν is rough, and under a weak
    anchor (λ ≪ the gradients' spread) the closed form would send a coordinate that
    belongs at 0 up to q_i; once above the threshold Newton's model moves it."""
    assert obj.prior is not None
    nu = -float(g[among].mean())
    a = obj.smooth_gradient(p)[tiny]
    with np.errstate(over="ignore"):
        out: FloatArray = np.minimum(caps[tiny], obj.prior[tiny] * np.exp(
            np.minimum(-(a + nu) / obj.strength - 1.0, 0.0)))
    rise = np.maximum(10.0 * p[tiny], 2.0 * TINY * min(1.0, float(obj.strength)))
    return np.minimum(out, rise)


def _face_direction(obj: Objective, p: FloatArray, caps: FloatArray, g: FloatArray,
                    h: FloatArray) -> FloatArray | None:
    """Under a KL term (no p_i reaches 0): the Newton step on the face of the tasks at their
    cap, one bordered Cholesky solve instead of a QP. Coordinates below :data:`TINY` move to
    their closed-form value (as in :func:`_newton_direction`); a capped task whose model
    multiplier says it would rather decrease is released (the most violating first) and
    the step solved again; free tasks the step would carry past their cap are taken
    exactly to it (all of them at once) and the rest solved again, so a step can meet
    many caps. None when the face system is singular."""
    from scipy.linalg import cho_factor, cho_solve

    assert obj.prior is not None
    d = np.zeros_like(p)
    tiny = _tiny(obj, p)
    capped = ~tiny & (p >= caps - 1e-12)
    clamped = np.zeros(p.size, dtype=bool)  # free tasks the step takes exactly to their cap
    for _ in range(2 * p.size + 2):
        free = ~tiny & ~capped & ~clamped
        if not free.any():
            return None
        if tiny.any():
            d[tiny] = _tiny_values(obj, p, caps, g, tiny, free) - p[tiny]
        d[capped] = 0.0
        d[clamped] = caps[clamped] - p[clamped]
        fixed = tiny | clamped
        rhs = g[free] + h[np.ix_(free, fixed)] @ d[fixed]
        try:
            factor = cho_factor(h[np.ix_(free, free)])
        except np.linalg.LinAlgError:
            return None
        a = cho_solve(factor, rhs)
        b = cho_solve(factor, np.ones(int(free.sum())))
        r = -float(d[fixed].sum())  # Σ d_F = r keeps Σ p = 1
        nu = -(r + float(a.sum())) / float(b.sum())
        d[free] = -(a + nu * b)
        # tasks the step would carry past their cap are taken to it and the rest solved again
        # (all at once: one step, not one a cap, where many caps bind)
        over = free & np.isfinite(caps) & (p + d > caps + 1e-15)
        if over.any():
            clamped |= over
            continue
        held = capped | clamped
        if not held.any():
            return d
        wants = (g + h @ d)[held] + nu  # > 0: the model would lower this held task
        worst = int(np.argmax(wants))
        if wants[worst] <= 1e-12 * max(1.0, float(np.abs(g).max())):
            return d
        i = np.flatnonzero(held)[worst]
        capped[i] = clamped[i] = False
    return None


def _newton_direction(obj: Objective, p: FloatArray, caps: FloatArray, interior: bool,
                      g: FloatArray, h: FloatArray) -> FloatArray:
    """x − p, x the exact minimizer of the quadratic model over the capped simplex.

    Under a KL term a coordinate below :data:`TINY` would put λ / p_i ≥ 1e9 λ on the
    model's diagonal and spoil the QP's tolerances; those coordinates take their
    closed-form value instead, q_i exp(−(∂h/∂p_i + ν)/λ − 1) under the cap, ν the sum's
    multiplier read from the other coordinates, and the model is solved on the rest."""
    tiny = _tiny(obj, p) if interior and obj.prior is not None else np.zeros(p.size, dtype=bool)
    big = ~tiny
    target = p.copy()
    if tiny.any():
        inner = big & (p < caps - 1e-12)
        target[tiny] = _tiny_values(obj, p, caps, g, tiny, inner if inner.any() else big)
    hb = h[np.ix_(big, big)]
    hb = 0.5 * (hb + hb.T)
    mass = 1.0 - float(target[tiny].sum())
    target[big] = solve_simplex_qp(hb, hb @ p[big] - g[big], caps[big], mass=mass).p
    d: FloatArray = target - p
    return d


def anchored_solve(S: ArrayLike, c: ArrayLike, strength: float, prior: ArrayLike,
                   caps: ArrayLike | None = None) -> ConvexResult:
    """min ½ pᵀ S p − cᵀ p + λ KL(p ‖ q) over the capped simplex, S PSD, λ > 0.

    Tasks with q_i = 0 get p_i = 0 (the KL term is infinite otherwise); the rest are
    solved by :func:`minimize`. λ → ∞ gives the KL projection of q onto the caps (q itself
    when q fits under them).
    """
    sa = np.asarray(S, dtype=np.float64)
    n = sa.shape[0]
    ca = np.asarray(c, dtype=np.float64)
    q = check_prior(prior, n)
    cap = check_caps(caps, n)
    if not strength > 0:
        raise InvalidInputError(f"the anchor's strength must be > 0 here, got {strength!r}")
    check_psd(sa)
    on = np.flatnonzero(q > 0)
    if float(cap[on].sum()) < 1.0 - 1e-12:
        raise InvalidInputError("the tasks the anchor's prior gives weight cannot hold the "
                                "whole mixture under their caps; widen the prior or the caps")
    obj = AnchoredQuadratic(sa[np.ix_(on, on)], ca[on], float(strength), q[on])
    start = _fill(q[on], cap[on], 1.0)
    got = minimize(obj, cap[on], start=start, interior=True)
    p = np.zeros(n)
    p[on] = got.p
    return ConvexResult(p, got.value, got.certificate, got.n_iter)
