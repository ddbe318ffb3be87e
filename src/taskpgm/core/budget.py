"""The budgeted variant: at most k tasks, chosen by greedy forward selection, solved exactly.

F(K) = −min {E(p) : p ∈ Δ, support(p) ⊆ K}. Each step adds the task whose
addition lowers the minimum energy most; every candidate is solved exactly,
warm-started from the current support by a bordered (Schur complement) update
of the face solution (:mod:`taskpgm.core.qp`). The final weights are the exact
minimizer on the selected support. See docs/design.md, "The budget".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from taskpgm.core.qp import (
    FREE,
    LOWER,
    UPPER,
    Face,
    FloatArray,
    IntArray,
    QPResult,
    cho_solve,
    kkt_certificate,
    solve_simplex_qp,
)


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
            face = Face(x=p, nu=sjj * m - float(c[j]), chol=np.array([[math.sqrt(sjj)]]),
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
    w = cho_solve(chol, s_fc)
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


def support_certificate(
    S: FloatArray, c: FloatArray, caps: FloatArray, p: FloatArray, support: list[int]
) -> dict[str, float]:
    idx = np.asarray(sorted(support), dtype=np.int64)
    mass = min(1.0, float(caps[idx].sum()))
    return kkt_certificate(S[np.ix_(idx, idx)], c[idx], caps[idx], p[idx], mass)
