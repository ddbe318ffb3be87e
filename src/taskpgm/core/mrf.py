"""The MRF energy over task proportions, its utility, and the estimator that minimizes it.

Energy, for proportions p in Δ = {p ≥ 0, Σ p = 1} with optional caps p ≤ c
(docs/design.md, "The energy"):

    E(p) = ½ pᵀ S p − ρ uᵀ p,

S the task affinity (symmetric PSD), u a per-task utility (default the
representativeness u = S 1), ρ = β / λ the trade-off. With every task free and
u = S 1 the minimizer is p* = ρ 1 + (1 − T ρ) S⁻¹ 1 / (1ᵀ S⁻¹ 1)
(:func:`closed_form`), uniform at ρ = 1/T. :class:`TaskMixtureMRF` minimizes E
exactly in every case (:mod:`taskpgm.core.qp`), with the budgeted variant of
:mod:`taskpgm.core.budget`; :func:`solve_trusted` solves on the tasks whose expert
learned while the others hold a fixed share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from taskpgm.core.budget import greedy_select, support_certificate
from taskpgm.core.convex import anchored_solve, check_prior, kl_divergence
from taskpgm.core.qp import (
    FloatArray,
    IntArray,
    blas_threads_for,
    check_affinity,
    check_caps,
    check_psd,
    check_vector,
    kkt_certificate,
    solve_simplex_qp,
)
from taskpgm.errors import InfeasibleError, InvalidInputError


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
    sa = check_affinity(S)
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
        anchor: λ ≥ 0, the strength of the KL anchor: minimize E(p) + λ KL(p ‖ prior)
            instead (:func:`taskpgm.core.convex.anchored_solve`; 0 is the plain energy).
            Strictly convex for λ > 0 since S is PSD; not with a budget.
        prior: the anchor's prior q on the simplex (default uniform).

    Attributes:
        weights_: (T,) the minimizer, on the simplex and under the caps.
        energy_: E(weights_).
        support_: indices of the tasks with positive weight.
        kkt_residual_: the largest KKT residual (see :func:`kkt_certificate`).
        certificate_: every residual by name, plus ``unique`` (False when S is
            singular on the optimal face and ``weights_`` is one of several optima).
        n_iter_: active-set iterations of the final solve (Newton iterations anchored).
        kl_: KL(weights_ ‖ prior) (0 without an anchor); the anchored objective is
            energy_ + anchor · kl_, and its certificate holds the Frank–Wolfe ``gap``.
        selected_: budget only: the tasks in the order greedy selection added them.
        greedy_gains_: budget only: the energy decrease of each greedy step.
    """

    def __init__(
        self, rho: float, *, caps: ArrayLike | None = None, budget: int | None = None,
        anchor: float = 0.0, prior: ArrayLike | None = None,
    ) -> None:
        self.rho = rho
        self.caps = caps
        self.budget = budget
        self.anchor = anchor
        self.prior = prior

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"rho": self.rho, "caps": self.caps, "budget": self.budget,
                "anchor": self.anchor, "prior": self.prior}

    def set_params(self, **params: Any) -> TaskMixtureMRF:
        for key, value in params.items():
            if key not in ("rho", "caps", "budget", "anchor", "prior"):
                raise InvalidInputError(f"unknown parameter {key!r} for TaskMixtureMRF")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        anchor = f", anchor={self.anchor!r}" if self.anchor else ""
        return (f"TaskMixtureMRF(rho={self.rho!r}, caps={self.caps!r}, budget={self.budget!r}"
                f"{anchor})")

    def fit(self, S: ArrayLike, utility: ArrayLike | None = None) -> TaskMixtureMRF:
        """Validate S (and the utility), then solve; returns ``self``."""
        sa = check_affinity(S)
        n = sa.shape[0]
        rho = self.rho
        if isinstance(rho, bool) or not isinstance(rho, int | float) or not math.isfinite(rho):
            raise InvalidInputError(f"rho must be a finite number, got {rho!r}")
        if rho < 0:
            raise InvalidInputError(f"rho must be >= 0, got {rho}")
        u = sa.sum(axis=1) if utility is None else check_vector(utility, n, "utility")
        if not np.isfinite(u).all():
            raise InvalidInputError("utility has a non-finite entry")
        caps = check_caps(self.caps, n)
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
        anchor = self.anchor
        if isinstance(anchor, bool) or not isinstance(anchor, int | float) \
                or not math.isfinite(anchor) or anchor < 0:
            raise InvalidInputError(f"anchor must be a finite number >= 0, got {anchor!r}")
        if anchor > 0:
            return self._fit_anchored(sa, c, caps, float(anchor))
        self.kl_: float = 0.0
        with blas_threads_for(n):
            if budget is None or budget >= n:
                result = solve_simplex_qp(sa, c, caps)  # checks that S is PSD on the way
                self.selected_: list[int] | None = None
                self.greedy_gains_: list[float] | None = None
            else:
                check_psd(sa)
                result, order, gains = greedy_select(sa, c, caps, int(budget))
                self.selected_ = order
                self.greedy_gains_ = gains
        p = result.p
        self.weights_: FloatArray = p
        self.energy_: float = float(0.5 * p @ sa @ p - c @ p)
        self.support_: IntArray = np.flatnonzero(p > 0).astype(np.int64)
        # k = T is the plain solve, whose certificate is the plain one
        cert: dict[str, Any] = dict(kkt_certificate(sa, c, caps, p)) if self.selected_ is None \
            else support_certificate(sa, c, caps, p, self.selected_)
        cert["unique"] = result.unique
        self.certificate_ = cert
        self.kkt_residual_: float = max(v for k, v in cert.items() if k != "unique")
        self.n_iter_: int = result.n_iter
        return self

    def _fit_anchored(self, sa: FloatArray, c: FloatArray, caps: FloatArray, strength: float
                      ) -> TaskMixtureMRF:
        n = sa.shape[0]
        if self.budget is not None and self.budget < n:
            raise InvalidInputError(
                "mrf.anchor and mrf.budget do not combine: the anchor keeps every task the "
                "prior weighs above zero, while the budget keeps at most k; drop one of them")
        prior = np.full(n, 1.0 / n) if self.prior is None else check_prior(self.prior, n)
        with blas_threads_for(n):
            got = anchored_solve(sa, c, strength, prior, caps)
        p = got.p
        self.selected_ = None
        self.greedy_gains_ = None
        self.weights_ = p
        self.energy_ = float(0.5 * p @ sa @ p - c @ p)
        self.kl_ = kl_divergence(p, prior)
        self.support_ = np.flatnonzero(p > 0).astype(np.int64)
        cert: dict[str, Any] = dict(got.certificate)
        cert["unique"] = True  # strictly convex
        self.certificate_ = cert
        self.kkt_residual_ = max(v for k, v in cert.items() if k != "unique")
        self.n_iter_ = got.n_iter
        return self


@dataclass(frozen=True)
class TrustedSolution:
    """Weights of every task from :func:`solve_trusted`, and the certificate of its solve."""

    weights: FloatArray
    energy: float
    kkt_residual: float
    certificate: dict[str, Any]
    selected: list[int] | None = None
    greedy_gains: list[float] | None = None
    kl: float = 0.0  # KL(weights ‖ prior) with an anchor


def solve_trusted(
    rho: float, trusted: ArrayLike,
    terms: Callable[[IntArray], tuple[FloatArray, FloatArray]], *,
    caps: ArrayLike | None = None, budget: int | None = None, hold_uniform: bool = False,
    anchor: float = 0.0, prior: ArrayLike | None = None,
) -> TrustedSolution:
    """Minimize E over the trusted tasks F while every other task holds a fixed share.

    ``terms(F)`` gives the quadratic matrix and the linear term of the energy computed on
    F alone (S_FF and u_F; R_FF and t_F for the split energy). An untrusted task i holds
    f_i = min(1/T, c_i) with ``hold_uniform`` (and no budget), else f_i = 0. The trusted
    tasks share m = 1 − Σ f. Since

        E(m q) = m² (½ qᵀ S_FF q − (ρ/m) u_Fᵀ q),

    their weights are m q*, q* the exact minimizer on the simplex at ρ/m under caps
    c_F/m (with the budget min(k, |F|)). At ρ = 1/T and u = S 1, q* is uniform on F,
    so every task gets 1/T with ``hold_uniform``: the path through uniform survives.
    The returned energy is m² E_F(q*); selected indices are in the full task order.

    With ``anchor`` λ > 0 and ``prior`` π (default uniform) it minimizes E(p) + λ KL(p ‖ π)
    with the same held shares: KL(m q + f ‖ π) = m KL(q ‖ π_F / π(F)) + a constant, so the
    trusted tasks solve at strength λ / m against π restricted to F and renormalized.

    Raises:
        InfeasibleError: no task is trusted, or the trusted caps cannot hold m.
    """
    mask = np.asarray(trusted, dtype=bool)
    t = mask.size
    cap = np.full(t, np.inf) if caps is None else np.asarray(caps, dtype=np.float64)
    fixed = np.zeros(t)
    if hold_uniform and budget is None:
        fixed[~mask] = np.minimum(1.0 / t, cap[~mask])
    free = np.flatnonzero(mask).astype(np.int64)
    mass = 1.0 - float(fixed.sum())
    if free.size == 0:
        raise InfeasibleError("no task is trusted, so there is nothing to solve on")
    if float(cap[free].sum()) < mass - 1e-12:
        raise InfeasibleError(f"the {free.size} trusted tasks cannot hold weight {mass:.3f} "
                              "under their caps")
    s_ff, u = terms(free)
    k = None if budget is None else min(budget, free.size)
    pi = np.full(t, 1.0 / t) if prior is None else np.asarray(prior, dtype=np.float64)
    pi_f = pi[free]
    if anchor > 0 and float(pi_f.sum()) <= 0:
        raise InfeasibleError("the anchor's prior gives no weight to any trusted task")
    model = TaskMixtureMRF(rho / mass, caps=cap[free] / mass, budget=k, anchor=anchor / mass,
                           prior=pi_f / pi_f.sum() if anchor > 0 else None
                           ).fit(s_ff, utility=u)
    weights = fixed.copy()
    weights[free] = mass * model.weights_
    selected = None if model.selected_ is None else [int(free[j]) for j in model.selected_]
    return TrustedSolution(weights, mass * mass * model.energy_, model.kkt_residual_,
                           model.certificate_, selected, model.greedy_gains_,
                           kl_divergence(weights, pi) if anchor > 0 else 0.0)
