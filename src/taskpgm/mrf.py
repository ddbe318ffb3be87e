"""The MRF energy over task proportions and its exact minimizer on the simplex.

Energy (DESIGN.md, "Energy"), for proportions p in Δ = {p ≥ 0, Σ p = 1} with
optional caps p ≤ c:

    E(p) = ½ pᵀ S p − ρ uᵀ p,

S the task affinity (symmetric PSD), u a per-task utility (default the
representativeness u = S 1), ρ = β / λ the trade-off. E is convex, so a point
is a minimizer exactly when it satisfies the KKT conditions: with g = S p − ρ u
and one multiplier ν for Σ p = 1,

    g_i = ν where 0 < p_i < c_i,   g_i ≥ ν where p_i = 0,   g_i ≤ ν where p_i = c_i.

On a fixed face (free set F, the other tasks at 0 or at their cap) the
minimizer is the closed form

    p_F = S_FF⁻¹ (h_F + ν 1),  ν = (r − 1ᵀ S_FF⁻¹ h_F) / (1ᵀ S_FF⁻¹ 1),

with h_F = ρ u_F − S_FU c_U and r = 1 − Σ_U c_U; with every task free and
u = S 1 it is DESIGN.md's p* = ρ 1 + (1 − T ρ) S⁻¹ 1 / (1ᵀ S⁻¹ 1)
(:func:`closed_form`). :func:`solve_simplex_qp` finds the face: a
primal–dual active-set guess (many tasks change sides per iteration) followed
by the primal active-set method, which moves from a feasible point towards each
face's closed form, stops at the first blocking bound, and releases the bound
with the most negative multiplier, until every KKT condition holds. Nothing is
clipped or projected. A singular S_FF (duplicated tasks) is solved on its range
by an eigendecomposition: the optimum is then a set, one point of it is
returned, and ``unique`` is false in the certificate.

:class:`TaskMixtureMRF` wraps it in the scikit-learn estimator contract and
adds the budgeted variant: greedy forward selection of at most k tasks, each
candidate solved exactly, warm-started from the current support by a bordered
(Schur complement) update of the face solution.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Literal

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


# --------------------------------------------------------------------------- energy


def energy(p: ArrayLike, S: ArrayLike, rho: float, utility: ArrayLike | None = None) -> float:
    """E(p) = ½ pᵀ S p − ρ uᵀ p, with u = S 1 when ``utility`` is None."""
    pa = np.asarray(p, dtype=np.float64)
    sa = np.asarray(S, dtype=np.float64)
    u = sa.sum(axis=1) if utility is None else np.asarray(utility, dtype=np.float64)
    return float(0.5 * pa @ sa @ pa - rho * u @ pa)


def closed_form(S: ArrayLike, rho: float) -> FloatArray:
    """The interior minimizer p* = ρ 1 + (1 − T ρ) S⁻¹ 1 / (1ᵀ S⁻¹ 1) for u = S 1.

    It is the minimizer of E on the affine hull {Σ p = 1}. It is the minimizer
    on the simplex only when S is invertible, the utility is S 1, there are no
    caps and every entry of the result is ≥ 0 (the optimum is interior); at
    ρ = 1/T it is uniform for every invertible S. Otherwise use
    :class:`TaskMixtureMRF`, which is exact in every case.

    Raises:
        InvalidInputError: S is not square, not finite or singular.
    """
    sa = _check_affinity(S)
    try:
        inv_one = np.linalg.solve(sa, np.ones(sa.shape[0]))
    except np.linalg.LinAlgError as err:
        raise InvalidInputError(
            "S is singular, so the closed form does not exist; use TaskMixtureMRF"
        ) from err
    n = sa.shape[0]
    out: FloatArray = rho * np.ones(n) + (1.0 - n * rho) * inv_one / inv_one.sum()
    return out


def utility(
    kind: Literal["representativeness", "transfer", "gain"],
    S: ArrayLike,
    pmi: ArrayLike | None = None,
) -> FloatArray:
    """Per-task utility u for the unary term.

    * ``representativeness``: u = S 1 (tasks that stand for many others).
    * ``transfer``: t_i = mean over j ≠ i of PMI_ij (how much expert i helps the
      other tasks), centered and scaled to max |u| = 1.
    * ``gain``: t_i = PMI_ii (how learnable task i is), centered and scaled the same way.
    """
    sa = np.asarray(S, dtype=np.float64)
    if kind == "representativeness":
        rep: FloatArray = sa.sum(axis=1)
        return rep
    if pmi is None:
        raise InvalidInputError(f"utility {kind!r} needs the transfer PMI matrix")
    pm = np.asarray(pmi, dtype=np.float64)
    if pm.shape != sa.shape:
        raise InvalidInputError(f"pmi has shape {pm.shape}, S has shape {sa.shape}")
    n = pm.shape[0]
    if kind == "transfer":
        raw = (pm.sum(axis=1) - np.diag(pm)) / max(1, n - 1)
    elif kind == "gain":
        raw = np.diag(pm).copy()
    else:
        raise InvalidInputError(
            f"unknown utility {kind!r}; choose representativeness, transfer or gain"
        )
    centered = raw - raw.mean()
    top = float(np.abs(centered).max())
    out: FloatArray = centered / top if top > 0 else centered
    return out


# --------------------------------------------------------------------------- validation


def _check_affinity(S: ArrayLike) -> FloatArray:
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


def _check_psd(sa: FloatArray) -> None:
    """Cholesky of S + δ I, δ tiny: fails exactly when S has a clearly negative eigenvalue."""
    n = sa.shape[0]
    delta = 1e-9 * max(1.0, float(np.trace(sa)) / n)
    try:
        np.linalg.cholesky(sa + delta * np.eye(n))
    except np.linalg.LinAlgError as err:
        low = float(np.linalg.eigvalsh(sa)[0])
        raise InvalidInputError(
            f"S must be positive semi-definite (its smallest eigenvalue is {low:.3g}); "
            "build it with taskpgm.relations.affinity, which projects onto the PSD cone"
        ) from err


def _check_vector(x: ArrayLike, n: int, name: str) -> FloatArray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InvalidInputError(f"{name} must be an array of numbers: {err}") from err
    if arr.shape != (n,):
        raise InvalidInputError(f"{name} must have shape ({n},), got {arr.shape}")
    if np.isnan(arr).any():
        raise InvalidInputError(f"{name} has NaN at index {int(np.argmax(np.isnan(arr)))}")
    return arr


def _check_caps(caps: ArrayLike | None, n: int) -> FloatArray:
    if caps is None:
        return np.full(n, np.inf)
    arr = _check_vector(caps, n, "caps")
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
class _Face:
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


def _cho_solve(chol: FloatArray, rhs: FloatArray) -> FloatArray:
    from scipy.linalg import solve_triangular

    y = solve_triangular(chol, rhs, lower=True, check_finite=False)
    out: FloatArray = solve_triangular(chol.T, y, lower=False, check_finite=False)
    return out


def _solve_face(s_ff: FloatArray, h: FloatArray, r: float) -> _Face:
    """Minimize ½ xᵀ S_FF x − hᵀ x subject to 1ᵀ x = r (no bounds)."""
    n = h.shape[0]
    ones = np.ones(n)
    scale = max(float(np.abs(np.diag(s_ff)).max(initial=0.0)), 1e-300)
    try:
        chol: FloatArray = np.linalg.cholesky(s_ff).astype(np.float64, copy=False)
        pivots = np.diag(chol) ** 2
        if pivots.min() > _SINGULAR_PIVOT * scale:
            rhs = _cho_solve(chol, np.column_stack([h, ones]))
            a, b = rhs[:, 0], rhs[:, 1]
            nu = (r - a.sum()) / b.sum()
            x = a + nu * b
            resid = np.abs(s_ff @ x - nu - h).max()
            if resid <= 1e-9 * (scale * np.abs(x).max(initial=0.0) + np.abs(h).max() + abs(nu)):
                return _Face(x=x, nu=float(nu), chol=chol, a=a, b=b)
    except np.linalg.LinAlgError:
        pass
    return _solve_face_singular(s_ff, h, r)


def _solve_face_singular(s_ff: FloatArray, h: FloatArray, r: float) -> _Face:
    """The face problem for a singular S_FF, on an orthonormal basis Z of {1ᵀ x = 0}.

    x = x₀ + Z y with x₀ = (r/n) 1; the reduced problem is ½ yᵀ R y + bᵀ y with
    R = Zᵀ S_FF Z and b = Zᵀ (S_FF x₀ − h). If b has a component in the null
    space of R the problem is unbounded along −Z (that component): a ray.
    Otherwise y = −R⁺ b gives one minimizer (the minimum-norm one).
    """
    n = h.shape[0]
    x0 = np.full(n, r / n)
    if n == 1:
        return _Face(x=x0, nu=float(s_ff[0, 0] * x0[0] - h[0]))
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
        return _Face(x=None, nu=math.nan, ray=ray, singular=True)
    y = -(vecs[:, ~null] @ (coef[~null] / vals[~null]))
    x = x0 + z @ y
    nu = float(np.mean(s_ff @ x - h))
    return _Face(x=x, nu=nu, singular=bool(null.any()))


# --------------------------------------------------------------------------- the QP


@dataclass
class QPResult:
    """Output of :func:`solve_simplex_qp`."""

    p: FloatArray
    nu: float
    status: NDArray[np.int8]
    n_iter: int
    unique: bool
    face: _Face | None = field(default=None, repr=False)


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
            _check_psd(S)
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
    """Residuals of every KKT condition at p, computed from p alone.

    ν is the mean gradient over strictly interior tasks (or, when none is
    interior, the midpoint of the interval the bound tasks allow). Returns
    ``primal`` (bound and sum violations), ``stationarity`` (max |g_i − ν| over
    interior tasks), ``dual`` (max violation of g_i ≥ ν at 0, g_i ≤ ν at the cap)
    and ``complementarity`` (max of p_i (g_i − ν)⁺ and (c_i − p_i)(ν − g_i)⁺).
    """
    g = S @ p - c
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


# --------------------------------------------------------------------------- the estimator


class TaskMixtureMRF:
    """Minimize E(p) = ½ pᵀ S p − ρ uᵀ p over the simplex, exactly.

    Follows the scikit-learn estimator contract: ``__init__`` only stores the
    parameters, :meth:`fit` validates its input, learns, sets the attributes
    that end in ``_`` and returns ``self``.

    Args:
        rho: ρ = β / λ ≥ 0, the weight of the utility against the diversity term.
        caps: per-task upper bounds c_i (sum ≥ 1), or None for none.
        budget: at most this many tasks get weight (greedy forward selection),
            or None for no limit.

    Attributes:
        weights_: (T,) the minimizer, on the simplex and under the caps.
        energy_: E(weights_).
        support_: indices of the tasks with positive weight.
        kkt_residual_: the largest KKT residual (see :func:`kkt_certificate`).
        certificate_: every residual by name, plus ``unique`` (False when S is
            singular on the optimal face and ``weights_`` is one of several optima).
        n_iter_: active-set iterations of the final solve.
        selected_: budget only: the tasks in the order greedy selection added them.
        greedy_gains_: budget only: the energy decrease of each greedy step.
    """

    def __init__(
        self, rho: float, *, caps: ArrayLike | None = None, budget: int | None = None
    ) -> None:
        self.rho = rho
        self.caps = caps
        self.budget = budget

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"rho": self.rho, "caps": self.caps, "budget": self.budget}

    def set_params(self, **params: Any) -> TaskMixtureMRF:
        for key, value in params.items():
            if key not in ("rho", "caps", "budget"):
                raise InvalidInputError(f"unknown parameter {key!r} for TaskMixtureMRF")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        return f"TaskMixtureMRF(rho={self.rho!r}, caps={self.caps!r}, budget={self.budget!r})"

    def fit(self, S: ArrayLike, utility: ArrayLike | None = None) -> TaskMixtureMRF:
        """Validate S (and the utility), then solve; returns ``self``."""
        sa = _check_affinity(S)
        n = sa.shape[0]
        rho = self.rho
        if isinstance(rho, bool) or not isinstance(rho, int | float) or not math.isfinite(rho):
            raise InvalidInputError(f"rho must be a finite number, got {rho!r}")
        if rho < 0:
            raise InvalidInputError(f"rho must be >= 0, got {rho}")
        u = sa.sum(axis=1) if utility is None else _check_vector(utility, n, "utility")
        if not np.isfinite(u).all():
            raise InvalidInputError("utility has a non-finite entry")
        caps = _check_caps(self.caps, n)
        budget = self.budget
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
                raise InvalidInputError(f"budget must be a positive integer, got {budget!r}")
            if budget > n:
                raise InfeasibleError(
                    f"budget k={budget} is larger than the number of tasks ({n}); "
                    "lower it or leave it unset"
                )
            top = float(np.sort(caps)[::-1][: int(budget)].sum())
            if top < 1.0 - 1e-12:
                raise InfeasibleError(
                    f"with budget k={budget} at most {top:.4g} of the mass fits under the caps "
                    "(the k largest caps); raise k or the caps"
                )
        c = float(rho) * u
        with blas_threads_for(n):
            if budget is None or budget >= n:
                result = solve_simplex_qp(sa, c, caps)  # checks that S is PSD on the way
                self.selected_: list[int] | None = None
                self.greedy_gains_: list[float] | None = None
            else:
                _check_psd(sa)
                result, order, gains = greedy_select(sa, c, caps, int(budget))
                self.selected_ = order
                self.greedy_gains_ = gains
        p = result.p
        self.weights_: FloatArray = p
        self.energy_: float = float(0.5 * p @ sa @ p - c @ p)
        self.support_: IntArray = np.flatnonzero(p > 0).astype(np.int64)
        cert: dict[str, Any] = dict(kkt_certificate(sa, c, caps, p)) if budget is None else (
            _support_certificate(sa, c, caps, p, self.selected_ or []))
        cert["unique"] = result.unique
        self.certificate_ = cert
        self.kkt_residual_: float = max(v for k, v in cert.items() if k != "unique")
        self.n_iter_: int = result.n_iter
        return self


def _support_certificate(
    S: FloatArray, c: FloatArray, caps: FloatArray, p: FloatArray, support: list[int]
) -> dict[str, float]:
    idx = np.asarray(sorted(support), dtype=np.int64)
    mass = min(1.0, float(caps[idx].sum()))
    return kkt_certificate(S[np.ix_(idx, idx)], c[idx], caps[idx], p[idx], mass)


# --------------------------------------------------------------------------- budget


def greedy_select(
    S: FloatArray, c: FloatArray, caps: FloatArray, k: int
) -> tuple[QPResult, list[int], list[float]]:
    """Greedy forward selection of at most k tasks; weights exact on the final support.

    F(K) = −min {E(p) : p ∈ Δ, support(p) ⊆ K}. Each step adds the task with
    the largest decrease of the minimum energy. While the caps of K hold less
    than the whole mass, the problem on K is solved with Σ p = Σ_K c (every
    task of K at its cap), and only tasks after which the remaining picks can
    still fill the mass are candidates. Candidates are evaluated exactly: a bordered
    (Schur complement) update of the current face's factorization gives the
    new face optimum for every candidate at once; a candidate whose optimum
    leaves the current face is finished by the active-set method warm-started
    from the current solution. Stops early when no task lowers the energy.

    Returns:
        The solution on the selected support (indices in the full problem),
        the selection order, and each step's energy decrease.
    """
    n = c.shape[0]
    # Step 1: a single task j carries mass m_j = min(1, c_j), energy ½ S_jj m² − c_j m.
    m1 = np.minimum(1.0, caps)
    e1 = 0.5 * np.diag(S) * m1**2 - c * m1
    e1[~_can_still_fill(caps, [], k)] = np.inf
    first = _first_min(e1)
    order, gains = [first], [float(-e1[first])]
    sub = _SubSolution.single(first, float(m1[first]), S, c)
    while len(order) < k:
        energies, points = _candidate_energies(S, c, caps, sub)
        energies[order] = np.inf
        energies[~_can_still_fill(caps, order, k)] = np.inf
        best = _first_min(energies)
        gain = sub.energy - float(energies[best])
        if sub.mass >= 1.0 - 1e-12 and gain <= 1e-13 * (1.0 + abs(sub.energy)):
            break
        order.append(best)
        gains.append(gain)
        sub = points[best] if best in points else _solve_support(S, c, caps, order, sub, best)
    full = np.zeros(n)
    full[sub.idx] = sub.result.p
    status = np.full(n, LOWER, dtype=np.int8)
    status[sub.idx] = sub.result.status
    result = QPResult(p=full, nu=sub.result.nu, status=status, n_iter=sub.result.n_iter,
                      unique=sub.result.unique, face=None)
    return result, order, gains


def _can_still_fill(caps: FloatArray, order: list[int], k: int) -> NDArray[np.bool_]:
    """Mask of tasks j after which the budget can still reach a full mixture.

    True when Σ_{K ∪ j} c plus the largest caps of the k − |K| − 1 picks left is ≥ 1,
    so greedy never paints itself into a support that cannot hold the whole mass.
    """
    caps = np.minimum(caps, 1.0)  # a cap of 1 or more (or none) can hold the whole mass
    n = caps.shape[0]
    left = k - len(order) - 1
    taken = float(caps[order].sum()) if order else 0.0
    outside = np.setdiff1d(np.arange(n), order)
    ranked = outside[np.argsort(-caps[outside], kind="stable")]
    rank = np.empty(n, dtype=np.int64)
    rank[ranked] = np.arange(ranked.size)
    top = np.concatenate(([0.0], np.cumsum(caps[ranked])))
    best_rest = np.where(rank < left, top[min(left + 1, ranked.size)] - caps, top[left])
    ok: NDArray[np.bool_] = taken + caps + best_rest >= 1.0 - 1e-12
    ok[order] = False
    return ok


def _first_min(values: FloatArray) -> int:
    """Index of the minimum; ties within rounding go to the lowest index."""
    low = float(values.min())
    return int(np.flatnonzero(values <= low + 1e-12 * (1.0 + abs(low)))[0])


@dataclass
class _SubSolution:
    """The exact solution restricted to a support ``idx`` (sorted task indices)."""

    idx: IntArray
    result: QPResult
    energy: float
    mass: float

    @staticmethod
    def single(j: int, m: float, S: FloatArray, c: FloatArray) -> _SubSolution:
        p = np.array([m])
        sjj = float(S[j, j])
        face = None
        if sjj > 0:  # the one-task face, so the next step can use the bordered update
            face = _Face(x=p, nu=sjj * m - float(c[j]), chol=np.array([[math.sqrt(sjj)]]),
                         a=np.array([c[j] / sjj]), b=np.array([1.0 / sjj]))
        res = QPResult(p=p, nu=float(S[j, j] * m - c[j]), status=np.zeros(1, dtype=np.int8),
                       n_iter=0, unique=True, face=face)
        return _SubSolution(np.array([j], dtype=np.int64), res, 0.5 * S[j, j] * m * m - c[j] * m, m)


def _solve_support(
    S: FloatArray,
    c: FloatArray,
    caps: FloatArray,
    support: list[int] | IntArray,
    warm: _SubSolution,
    new: int,
) -> _SubSolution:
    """Exact solve on ``support`` (= warm.idx ∪ {new}), warm-started from ``warm``."""
    idx = np.asarray(sorted(int(i) for i in support), dtype=np.int64)
    pos_new = int(np.searchsorted(idx, new))
    s_sub, c_sub, caps_sub = S[np.ix_(idx, idx)], c[idx], caps[idx]
    mass = min(1.0, float(caps_sub.sum()))
    p0 = np.insert(warm.result.p, pos_new, 0.0)
    status = np.insert(warm.result.status, pos_new, LOWER).astype(np.int8)
    gap = mass - float(p0.sum())
    if gap > 1e-15:  # the new task carries the mass the caps of the old support could not
        p0[pos_new] = min(gap, caps_sub[pos_new])
        status[pos_new] = FREE
    if not (status == FREE).any():
        status[pos_new] = FREE
    res = solve_simplex_qp(s_sub, c_sub, caps_sub, mass=mass, start=(p0, status))
    e = float(0.5 * res.p @ s_sub @ res.p - c_sub @ res.p)
    return _SubSolution(idx, res, e, mass)


def _candidate_energies(
    S: FloatArray, c: FloatArray, caps: FloatArray, sub: _SubSolution
) -> tuple[FloatArray, dict[int, _SubSolution]]:
    """Minimum energy on sub.idx ∪ {j} for every task j (inf for tasks already in).

    Candidates with a non-negative multiplier at p_j = 0 cannot lower the
    energy (the current point stays optimal). The others get the bordered
    face solution; if it is feasible it is the optimum on the new support,
    otherwise the warm-started active-set method finishes. Returns the
    energies and the solutions computed by the active-set method.
    """
    n = c.shape[0]
    idx = sub.idx
    res = sub.result
    energies = np.full(n, sub.energy)
    energies[idx] = np.inf
    solved: dict[int, _SubSolution] = {}
    outside = np.setdiff1d(np.arange(n), idx)
    p_full = np.zeros(n)
    p_full[idx] = res.p
    g = S[outside] @ p_full - c[outside]
    mass_next = np.minimum(1.0, float(caps[idx].sum()) + caps[outside])
    grows = mass_next > sub.mass + 1e-15
    improving = outside[(g - res.nu < 0) | grows]
    if improving.size == 0:
        return energies, solved
    fast = _bordered(S, c, caps, sub, improving) if not grows.any() else None
    for pos, j in enumerate(improving):
        if fast is not None and fast[1][pos]:
            energies[j] = fast[0][pos]
            continue
        cand = _solve_support(S, c, caps, [*idx.tolist(), int(j)], sub, int(j))
        energies[j] = cand.energy
        solved[int(j)] = cand
    return energies, solved


def _bordered(
    S: FloatArray, c: FloatArray, caps: FloatArray, sub: _SubSolution, cand: IntArray
) -> tuple[FloatArray, NDArray[np.bool_]] | None:
    """Face optimum on F ∪ {j} for all candidates j at once, by the Schur complement.

    With A = S_FF⁻¹, a = A h_F, b = A 1, w_j = A s_Fj, σ_j = S_jj − s_Fjᵀ w_j and
    γ_j = 1ᵀ w_j, the new face optimum solves
        [σ_j, γ_j − 1; 1 − γ_j, 1ᵀb] [x_j; ν] = [h_j − s_Fjᵀ a; r − 1ᵀa],
    then x_F = a − w_j x_j + ν b. Returns energies and a mask of candidates
    whose solution is feasible and leaves every bound multiplier of the support
    non-negative (hence optimal on the new support).
    """
    face = sub.result.face
    status = sub.result.status
    if face is None or face.chol is None or face.a is None or face.b is None:
        return None
    idx = sub.idx
    free = idx[status == FREE]
    upper = idx[status == UPPER]
    a, b, chol = face.a, face.b, face.chol
    h_c = c[cand] - S[np.ix_(cand, upper)] @ caps[upper]
    r = sub.mass - float(caps[upper].sum())
    s_fc = S[np.ix_(free, cand)]
    w = _cho_solve(chol, s_fc)
    sigma = S[cand, cand] - np.einsum("ij,ij->j", s_fc, w)
    gamma = w.sum(axis=0)
    bb = float(b.sum())
    rhs1 = h_c - s_fc.T @ a
    rhs2 = r - float(a.sum())
    det = sigma * bb + (1.0 - gamma) ** 2
    ok = np.abs(det) > 1e-12 * (np.abs(sigma * bb) + (1.0 - gamma) ** 2 + 1e-300)
    safe = np.where(ok, det, 1.0)
    xj = (rhs1 * bb - (gamma - 1.0) * rhs2) / safe
    nu = (sigma * rhs2 - (1.0 - gamma) * rhs1) / safe
    xf = a[:, None] - w * xj[None, :] + b[:, None] * nu[None, :]
    feasible = ok & (xj >= 0) & (xj <= caps[cand])
    feasible &= (xf >= 0).all(axis=0) & (xf <= caps[free][:, None]).all(axis=0)
    # Optimal only if the support's bound tasks still want to stay at their bounds.
    lower = idx[status == LOWER]
    tol = 1e-11 * (1.0 + float(np.abs(c).max()) + float(np.abs(S).max()))
    for bound, sign in ((lower, 1.0), (upper, -1.0)):
        if bound.size:
            g_b = (S[np.ix_(bound, free)] @ xf + S[np.ix_(bound, cand)] * xj[None, :]
                   + (S[np.ix_(bound, upper)] @ caps[upper] - c[bound])[:, None])
            feasible &= (sign * (g_b - nu[None, :]) >= -tol).all(axis=0)
    # Energy at the face optimum: E = ½ zᵀ S z − cᵀ z with z = (x_F, x_j, caps_U).
    c_f = c[free]
    z_u = caps[upper]
    sfu = S[np.ix_(free, upper)]
    quad = (
        np.einsum("ij,ij->j", xf, S[np.ix_(free, free)] @ xf)
        + 2.0 * xj * np.einsum("ij,ij->j", s_fc, xf)
        + S[cand, cand] * xj**2
        + 2.0 * (sfu @ z_u) @ xf
        + 2.0 * xj * (S[np.ix_(cand, upper)] @ z_u)
        + float(z_u @ S[np.ix_(upper, upper)] @ z_u)
    )
    lin = c_f @ xf + c[cand] * xj + float(c[upper] @ z_u)
    return 0.5 * quad - lin, feasible


def exhaustive_select(S: ArrayLike, c: ArrayLike, caps: ArrayLike | None, k: int) -> tuple[
    float, tuple[int, ...]
]:
    """Best support of at most k tasks by trying every subset (for tests; small T only)."""
    sa = np.asarray(S, dtype=np.float64)
    ca = np.asarray(c, dtype=np.float64)
    n = ca.shape[0]
    cp = np.full(n, np.inf) if caps is None else np.asarray(caps, dtype=np.float64)
    best = math.inf
    best_set: tuple[int, ...] = ()
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(n), size):
            ix = np.asarray(subset)
            if cp[ix].sum() < 1.0 - 1e-12:
                continue
            res = solve_simplex_qp(sa[np.ix_(ix, ix)], ca[ix], cp[ix])
            e = float(0.5 * res.p @ sa[np.ix_(ix, ix)] @ res.p - ca[ix] @ res.p)
            if e < best - 1e-13:
                best, best_set = e, subset
    return best, best_set
