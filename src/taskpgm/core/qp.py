"""The exact minimizer of a convex quadratic on the (capped) simplex, and its certificate.

The problem, for S symmetric PSD, a linear term c and caps p ≤ caps:

    min ½ pᵀ S p − cᵀ p   subject to  p ≥ 0, p ≤ caps, Σ p = m    (m = 1 by default).

It is convex, so a point is a minimizer exactly when it satisfies the KKT
conditions: with g = S p − c and one multiplier ν for Σ p = m,

    g_i = ν where 0 < p_i < c_i,   g_i ≥ ν where p_i = 0,   g_i ≤ ν where p_i = c_i.

On a fixed face (free set F, the other tasks at 0 or at their cap) the
minimizer is the closed form

    p_F = S_FF⁻¹ (h_F + ν 1),  ν = (r − 1ᵀ S_FF⁻¹ h_F) / (1ᵀ S_FF⁻¹ 1),

with h_F = c_F − S_FU c_U and r = m − Σ_U c_U. :func:`solve_simplex_qp` finds the
face: a primal–dual active-set guess (many tasks change sides per iteration)
followed by the primal active-set method, which moves from a feasible point
towards each face's closed form, stops at the first blocking bound, and releases
the bound with the most negative multiplier, until every KKT condition holds.
Nothing is clipped or projected. A singular S_FF (duplicated tasks) is solved on
its range by an eigendecomposition: the optimum is then a set, one point of it is
returned, and ``unique`` is false. :func:`kkt_certificate` measures every KKT
condition at a point from the point alone. The derivation: docs/design.md,
"The exact solver".
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import ThreadpoolController

from taskpgm.errors import InfeasibleError, InvalidInputError, TaskPGMError

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

FREE, LOWER, UPPER = 0, 1, 2
#: A pivot of the Cholesky factor below this (relative) marks S_FF as singular.
_SINGULAR_PIVOT = 1e-9
#: Eigenvalues of the reduced Hessian below this (relative) are treated as zero.
_NULL_EIGENVALUE = 1e-10
#: Up to this many tasks the solver runs BLAS on one thread: its factorizations
#: are small, and threads only add synchronization (measured 3x slower at T=300).
SINGLE_THREAD_MAX_TASKS = 1500


_THREADPOOLS: list[ThreadpoolController] = []


def blas_threads_for(n: int) -> contextlib.AbstractContextManager[object]:
    """One BLAS thread for problems of at most SINGLE_THREAD_MAX_TASKS tasks, else as set."""
    if n > SINGLE_THREAD_MAX_TASKS:
        return contextlib.nullcontext()
    if not _THREADPOOLS:  # scanning the loaded libraries costs milliseconds: do it once
        _THREADPOOLS.append(ThreadpoolController())
    limiter: contextlib.AbstractContextManager[object] = _THREADPOOLS[0].limit(
        limits=1, user_api="blas")
    return limiter


class SolverError(TaskPGMError, RuntimeError):
    """The active-set method did not converge (a bug or a pathological input)."""


# --------------------------------------------------------------------------- validation


def check_affinity(S: ArrayLike) -> FloatArray:
    try:
        sa = np.asarray(S, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"S must be a matrix of numbers: {err}") from err
    if sa.ndim != 2 or sa.shape[0] != sa.shape[1] or sa.shape[0] == 0:
        raise InvalidInputError(f"S must be a non-empty square matrix, got shape {sa.shape}")
    bad = ~np.isfinite(sa)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise InvalidInputError(f"S has a non-finite entry {sa[i, j]} at [{i}, {j}]")
    scale = max(1.0, float(np.abs(sa).max()))
    asym = np.abs(sa - sa.T) > 1e-9 * scale
    if asym.any():
        i, j = (int(v) for v in np.argwhere(asym)[0])
        raise InvalidInputError(
            f"S must be symmetric: S[{i}, {j}] = {sa[i, j]:.6g} but S[{j}, {i}] = {sa[j, i]:.6g}"
        )
    return 0.5 * (sa + sa.T)


def check_psd(sa: FloatArray) -> None:
    """Cholesky of S + δ I, δ tiny: fails exactly when S has a clearly negative eigenvalue."""
    n = sa.shape[0]
    delta = 1e-9 * max(1.0, float(np.trace(sa)) / n)
    try:
        np.linalg.cholesky(sa + delta * np.eye(n))
    except np.linalg.LinAlgError as err:
        low = float(np.linalg.eigvalsh(sa)[0])
        raise InvalidInputError(
            f"S must be positive semi-definite (its smallest eigenvalue is {low:.3g}); "
            "build it with taskpgm.core.relations.affinity, which projects onto the PSD cone"
        ) from err


def check_vector(x: ArrayLike, n: int, name: str) -> FloatArray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"{name} must be an array of numbers: {err}") from err
    if arr.shape != (n,):
        raise InvalidInputError(f"{name} must have shape ({n},), got {arr.shape}")
    if np.isnan(arr).any():
        raise InvalidInputError(f"{name} has NaN at index {int(np.argmax(np.isnan(arr)))}")
    return arr


def check_caps(caps: ArrayLike | None, n: int) -> FloatArray:
    if caps is None:
        return np.full(n, np.inf)
    arr = check_vector(caps, n, "caps")
    if (arr < 0).any():
        i = int(np.argmax(arr < 0))
        raise InvalidInputError(f"caps must be >= 0; caps[{i}] = {arr[i]:g}")
    total = float(arr.sum())
    if total < 1.0 - 1e-12:
        raise InfeasibleError(
            f"the caps sum to {total:.6g} < 1, so no mixture fits under them; "
            "raise the caps (a larger max_repeat or token budget) or add tasks"
        )
    return arr


# --------------------------------------------------------------------------- one face


@dataclass
class Face:
    """Solution of the equality-constrained problem on one face.

    ``x`` is the minimizer over the free set (``ray`` None), or ``ray`` is a
    direction of zero curvature and strict descent along which the face
    problem is unbounded (``x`` None). ``chol`` caches the factor of S_FF.
    """

    x: FloatArray | None
    nu: float
    ray: FloatArray | None = None
    singular: bool = False
    chol: FloatArray | None = None
    a: FloatArray | None = None  # S_FF⁻¹ h_F
    b: FloatArray | None = None  # S_FF⁻¹ 1


def cho_solve(chol: FloatArray, rhs: FloatArray) -> FloatArray:
    from scipy.linalg import solve_triangular

    y = solve_triangular(chol, rhs, lower=True, check_finite=False)
    out: FloatArray = solve_triangular(chol.T, y, lower=False, check_finite=False)
    return out


def _solve_face(s_ff: FloatArray, h: FloatArray, r: float) -> Face:
    """Minimize ½ xᵀ S_FF x − hᵀ x subject to 1ᵀ x = r (no bounds)."""
    n = h.shape[0]
    ones = np.ones(n)
    scale = max(float(np.abs(np.diag(s_ff)).max(initial=0.0)), 1e-300)
    try:
        chol: FloatArray = np.linalg.cholesky(s_ff).astype(np.float64, copy=False)
        pivots = np.diag(chol) ** 2
        if pivots.min() > _SINGULAR_PIVOT * scale:
            rhs = cho_solve(chol, np.column_stack([h, ones]))
            a, b = rhs[:, 0], rhs[:, 1]
            nu = (r - a.sum()) / b.sum()
            x = a + nu * b
            resid = np.abs(s_ff @ x - nu - h).max()
            if resid <= 1e-9 * (scale * np.abs(x).max(initial=0.0) + np.abs(h).max() + abs(nu)):
                return Face(x=x, nu=float(nu), chol=chol, a=a, b=b)
    except np.linalg.LinAlgError:
        pass
    return _solve_face_singular(s_ff, h, r)


def _solve_face_singular(s_ff: FloatArray, h: FloatArray, r: float) -> Face:
    """The face problem for a singular S_FF, on an orthonormal basis Z of {1ᵀ x = 0}.

    x = x₀ + Z y with x₀ = (r/n) 1; the reduced problem is ½ yᵀ R y + bᵀ y with
    R = Zᵀ S_FF Z and b = Zᵀ (S_FF x₀ − h). If b has a component in the null
    space of R the problem is unbounded along −Z (that component): a ray.
    Otherwise y = −R⁺ b gives one minimizer (the minimum-norm one).
    """
    n = h.shape[0]
    x0 = np.full(n, r / n)
    if n == 1:
        return Face(x=x0, nu=float(s_ff[0, 0] * x0[0] - h[0]))
    # Householder reflection H with H e₁ = −1/√n: its columns 2..n span 1⊥.
    w = np.zeros(n)
    w[0] = 1.0
    w += 1.0 / math.sqrt(n)
    w /= np.linalg.norm(w)
    z = np.eye(n)[:, 1:] - 2.0 * np.outer(w, w[1:])
    red = z.T @ s_ff @ z
    grad = z.T @ (s_ff @ x0 - h)
    vals, vecs = np.linalg.eigh(0.5 * (red + red.T))
    top = max(float(np.abs(vals).max()), 1e-300)
    null = vals <= _NULL_EIGENVALUE * top
    coef = vecs.T @ grad
    gscale = max(float(np.abs(h).max()), float(np.abs(s_ff @ x0).max()), 1e-300)
    if null.any() and np.abs(coef[null]).max() > 1e-9 * gscale:
        ray = -(z @ (vecs[:, null] @ coef[null]))
        return Face(x=None, nu=math.nan, ray=ray, singular=True)
    y = -(vecs[:, ~null] @ (coef[~null] / vals[~null]))
    x = x0 + z @ y
    nu = float(np.mean(s_ff @ x - h))
    return Face(x=x, nu=nu, singular=bool(null.any()))


# --------------------------------------------------------------------------- the QP


@dataclass
class QPResult:
    """Output of :func:`solve_simplex_qp`."""

    p: FloatArray
    nu: float
    status: NDArray[np.int8]
    n_iter: int
    unique: bool
    face: Face | None = field(default=None, repr=False)


def _face_problem(
    S: FloatArray, c: FloatArray, caps: FloatArray, status: NDArray[np.int8], mass: float
) -> tuple[IntArray, FloatArray, float]:
    free = np.flatnonzero(status == FREE)
    upper = np.flatnonzero(status == UPPER)
    h = c[free] - S[np.ix_(free, upper)] @ caps[upper]
    r = mass - float(caps[upper].sum())
    return free, h, r


def _fill(values: FloatArray, caps: FloatArray, target: float) -> FloatArray:
    """A point of {0 ≤ v ≤ caps, Σ v = target} near ``values``: clip, then spread the gap."""
    v = np.clip(values, 0.0, caps)
    gap = target - float(v.sum())
    if gap > 0:
        room = caps - v
        unbounded = np.isinf(room)
        if unbounded.any():
            v[unbounded] += gap / int(unbounded.sum())
        else:
            v += gap * room / room.sum()
    elif gap < 0:
        v += gap * v / v.sum()
    return np.clip(v, 0.0, caps)


def _multipliers(
    S: FloatArray, c: FloatArray, p: FloatArray, status: NDArray[np.int8], nu: float
) -> FloatArray:
    """Sign-corrected bound multipliers: g_i − ν at a lower bound, ν − g_i at an upper one."""
    g = S @ p - c
    out = np.zeros_like(p)
    low = status == LOWER
    up = status == UPPER
    out[low] = g[low] - nu
    out[up] = nu - g[up]
    return out


def _pdas_guess(
    S: FloatArray, c: FloatArray, caps: FloatArray, mass: float, max_iter: int = 40
) -> tuple[NDArray[np.int8], QPResult | None]:
    """Primal–dual active-set iterations: a good working set in a few linear solves.

    Each iteration solves the current face, then moves every free task whose
    weight left [0, c_i] onto that bound and frees every bound task whose
    multiplier is negative. It stops when nothing moves (the point then
    satisfies every KKT condition and is returned as a result) or on a cycle;
    the primal active-set method finishes from there.
    """
    n = c.shape[0]
    status = np.zeros(n, dtype=np.int8)
    seen: set[bytes] = set()
    for it in range(max_iter):
        free, h, r = _face_problem(S, c, caps, status, mass)
        face = _solve_face(S[np.ix_(free, free)], h, r)
        if it == 0 and face.chol is None:
            # The first face is all of S: a Cholesky factor proves S positive definite for
            # free; without one, check that S is at least positive semi-definite.
            check_psd(S)
        if face.x is None:
            break
        p = np.where(status == UPPER, caps, 0.0)
        p[free] = face.x
        mult = _multipliers(S, c, p, status, face.nu)
        new = status.copy()
        new[free[face.x < 0]] = LOWER
        new[free[face.x > caps[free]]] = UPPER
        new[(status != FREE) & (mult < 0)] = FREE
        if np.array_equal(new, status):
            return status, QPResult(p=p, nu=face.nu, status=status, n_iter=0,
                                    unique=not face.singular, face=face)
        if not (new == FREE).any():
            break
        key = new.tobytes()
        if key in seen:
            break
        seen.add(key)
        status = new
    return status, None


def _start_from(
    status: NDArray[np.int8], caps: FloatArray, mass: float, guess: FloatArray | None = None
) -> tuple[FloatArray, NDArray[np.int8]] | None:
    """A feasible point with every task of the working set at its bound, or None."""
    free = status == FREE
    if not free.any():
        return None
    r = mass - float(caps[status == UPPER].sum())
    if r < 0 or r > float(caps[free].sum()):
        return None
    p = np.where(status == UPPER, caps, 0.0)
    seed = guess[free] if guess is not None else np.full(int(free.sum()), r / int(free.sum()))
    p[free] = _fill(seed, caps[free], r)
    return p, status.copy()


def solve_simplex_qp(
    S: FloatArray,
    c: FloatArray,
    caps: FloatArray,
    *,
    mass: float = 1.0,
    start: tuple[FloatArray, NDArray[np.int8]] | None = None,
    max_iter: int | None = None,
) -> QPResult:
    """Exact minimizer of ½ pᵀ S p − cᵀ p over {0 ≤ p ≤ caps, Σ p = mass}.

    S must be symmetric, ``caps`` may hold ``inf``. ``start`` is a feasible
    point and a working set of tasks at their bounds (a warm start; the caller
    vouches that S is PSD); without it the primal–dual guess supplies one and
    S is checked to be PSD on the way (a Cholesky factor of the first face,
    which is all of S, proves it for free).
    """
    n = c.shape[0]
    if start is None:
        guess_status, solved = _pdas_guess(S, c, caps, mass)
        if solved is not None:
            return solved
        start = _start_from(guess_status, caps, mass)
        if start is None:
            p0 = _fill(np.full(n, mass / n), caps, mass)
            start = (p0, np.zeros(n, dtype=np.int8))
    p, status = start[0].copy(), start[1].copy()
    limit = max_iter if max_iter is not None else 20 * n + 100
    for it in range(1, limit + 1):
        free, h, r = _face_problem(S, c, caps, status, mass)
        face = _solve_face(S[np.ix_(free, free)], h, r)
        if face.x is not None:
            if free.size == 1:  # Σ p = mass pins a lone free task; only rounding could move it
                face.x = p[free].copy()
            d = face.x - p[free]
            full_step = 1.0
        else:
            assert face.ray is not None
            d = face.ray
            full_step = math.inf
        step, block, to_upper = _blocking(p[free], d, caps[free], full_step)
        p[free] += step * d
        if block >= 0:
            j = free[block]
            status[j] = UPPER if to_upper else LOWER
            p[j] = caps[j] if to_upper else 0.0
            continue
        # Full step: p is the face optimum; check the multipliers of the working set.
        p[free] = face.x
        mult = _multipliers(S, c, p, status, face.nu)
        scale = 1e-11 * (1.0 + float(np.abs(c).max()) + float(np.abs(S).max()))
        worst = int(np.argmin(mult))
        if mult[worst] >= -scale:
            return QPResult(p=p, nu=face.nu, status=status, n_iter=it,
                            unique=not face.singular, face=face)
        status[worst] = FREE
    raise SolverError(
        f"the active-set method did not converge in {limit} iterations; "
        "please report this with the affinity matrix that caused it"
    )


def _blocking(
    x: FloatArray, d: FloatArray, caps: FloatArray, full: float
) -> tuple[float, int, bool]:
    """Largest step in [0, full] keeping 0 ≤ x + t d ≤ caps; the blocking index or −1."""
    step, block, to_upper = full, -1, False
    down = d < 0
    if down.any():
        ratios = np.where(down, -x / np.where(down, d, -1.0), np.inf)
        i = int(np.argmin(ratios))
        if ratios[i] < step:
            step, block, to_upper = float(max(ratios[i], 0.0)), i, False
    up = (d > 0) & np.isfinite(caps)
    if up.any():
        ratios = np.where(up, (caps - x) / np.where(up, d, 1.0), np.inf)
        i = int(np.argmin(ratios))
        if ratios[i] < step:
            step, block, to_upper = float(max(ratios[i], 0.0)), i, True
    if math.isinf(step):
        raise SolverError("unbounded face direction with no blocking bound (cannot happen on Δ)")
    return step, block, to_upper


def kkt_certificate(
    S: FloatArray, c: FloatArray, caps: FloatArray, p: FloatArray, mass: float = 1.0
) -> dict[str, float]:
    """Residuals of every KKT condition at p, computed from p alone (g = S p − c):
    :func:`gradient_certificate`."""
    return gradient_certificate(S @ p - c, caps, p, mass)


def gradient_certificate(
    g: FloatArray, caps: FloatArray, p: FloatArray, mass: float = 1.0
) -> dict[str, float]:
    """Residuals of the KKT conditions of min f over the capped simplex at p, g = ∇f(p).

    ν is the mean gradient over strictly interior tasks (or, when none is
    interior, the midpoint of the interval the bound tasks allow). Returns
    ``primal`` (bound and sum violations), ``stationarity`` (max |g_i − ν| over
    interior tasks), ``dual`` (max violation of g_i ≥ ν at 0, g_i ≤ ν at the cap)
    and ``complementarity`` (max of p_i (g_i − ν)⁺ and (c_i − p_i)(ν − g_i)⁺).
    """
    tol = 1e-12
    at_low = p <= tol
    at_up = p >= caps - tol
    interior = ~at_low & ~at_up
    if interior.any():
        nu = float(g[interior].mean())
    else:
        lo = float(g[at_up].max()) if at_up.any() else -math.inf
        hi = float(g[at_low].min()) if at_low.any() else math.inf
        nu = 0.5 * (lo + hi) if math.isfinite(lo) and math.isfinite(hi) else (
            lo if math.isfinite(lo) else hi)
    primal = max(float(np.clip(-p, 0, None).max()), float(np.clip(p - caps, 0, None).max()),
                 abs(float(p.sum()) - mass))
    stationarity = float(np.abs(g[interior] - nu).max()) if interior.any() else 0.0
    dual = max(float(np.clip(nu - g[at_low], 0, None).max(initial=0.0)),
               float(np.clip(g[at_up] - nu, 0, None).max(initial=0.0)))
    room = np.where(np.isfinite(caps), caps - p, 0.0)
    comp = max(float((p * np.clip(g - nu, 0, None)).max()),
               float((room * np.clip(nu - g, 0, None)).max()))
    return {"primal": primal, "stationarity": stationarity, "dual": dual, "complementarity": comp}
