"""MixMin (Thudi et al., ICML 2025) from the experts' own predictions.

With one model per source, the loss of the ensemble Σ_i p_i P_i(y | x) on the target
examples is convex in p, and MixMin chooses p to minimize it:

    L(p) = Σ_x w_x · −log(Σ_i p_i P_i(gold_x | x)),

here with P_i expert i's probability of the gold answer: its length-normalized choice
distribution's for a multiple-choice item, exp(ℓ_i(x) / n(x)) (the per-token geometric
mean) for a generative one; and w the mean over the target's tasks of the mean over
each task's probe items (:func:`task_mean_weights`). Solved exactly with
:func:`taskpgm.core.convex.minimize`, to a certified duality gap.

What it assumes: that the model trained on the mixture p predicts like the mixture
Σ p_i P_i of the experts. LoRA training on a mixed set at a small budget is not an
ensemble (one adapter must share its capacity; interference and transfer are not
additive), so the benchmark measures whether the assumption carries (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from taskpgm.core.convex import ConvexResult, MixtureLoss, check_prior, minimize
from taskpgm.core.qp import FloatArray, _fill, check_caps
from taskpgm.errors import InfeasibleError, InvalidInputError


def gold_probability(loglik: ArrayLike, tokens: ArrayLike) -> FloatArray:
    """(M, N) P_m(gold | x) = exp(ℓ_m(x) / n(x)): the choice probability for multiple choice
    (n = 1), the per-token geometric mean for generative examples."""
    ll = np.asarray(loglik, dtype=np.float64)
    n = np.asarray(tokens, dtype=np.float64)
    out: FloatArray = np.exp(ll / np.maximum(n, 1.0))
    return out


def task_mean_weights(task_of: NDArray[np.int64], tasks: Sequence[int]) -> FloatArray:
    """(N,) w_x = 1 / (K n_j) for x a probe item of task j among the K ``tasks``, else 0:
    the mean over those tasks of the mean over each task's items."""
    w = np.zeros(task_of.size)
    present = [j for j in tasks if (task_of == j).any()]
    if not present:
        raise InvalidInputError("MixMin needs probe items of the tasks it targets; none found")
    for j in present:
        idx = task_of == j
        w[idx] = 1.0 / (len(present) * idx.sum())
    return w


def mixmin_solve(gold: ArrayLike, weights: ArrayLike, *, caps: ArrayLike | None = None,
                 free: ArrayLike | None = None, held: ArrayLike | None = None,
                 strength: float = 0.0, prior: ArrayLike | None = None) -> ConvexResult:
    """min over the capped simplex of Σ_x w_x −log(Σ_i p_i P_ix) (+ λ KL(p ‖ π)).

    Args:
        gold: (T, N) P_i(gold | x) of each source model on each example.
        weights: (N,) non-negative example weights (they need not sum to 1).
        caps: (T,) caps on p, or None.
        free: (T,) which sources the solve may move (default all); the others hold
            ``held`` (default 0), and the free ones share the rest, m = 1 − Σ held.
        strength, prior: the KL anchor λ and π (default uniform); with held shares,
            KL(p ‖ π) = m KL(y ‖ π_F / π(F)) + const for p_F = m y, so the free part solves
            at strength λ m against π restricted to the free sources.

    Returns the weights of every source (``p``), the loss L(p) + λ KL (``value``) and the
    certificate (the duality ``gap``).
    """
    probs = np.asarray(gold, dtype=np.float64)
    t, n = probs.shape
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or (w < 0).any() or not np.isfinite(probs).all() or (probs < 0).any():
        raise InvalidInputError(f"MixMin needs gold probabilities (T, N) >= 0 and N weights >= 0,"
                                f" got {probs.shape} and {w.shape}")
    cap = check_caps(caps, t)
    mask = np.ones(t, dtype=bool) if free is None else np.asarray(free, dtype=bool)
    fixed = np.zeros(t) if held is None else np.asarray(held, dtype=np.float64) * ~mask
    mass = 1.0 - float(fixed.sum())
    idx = np.flatnonzero(mask)
    if idx.size == 0 or float(cap[idx].sum()) < mass - 1e-12:
        raise InfeasibleError("MixMin has no free source, or the free sources cannot hold "
                              f"weight {mass:.3f} under their caps")
    base = fixed @ probs
    pi = np.full(t, 1.0 / t) if prior is None else check_prior(prior, t)
    anchored = strength > 0
    pi_f = pi[idx] / pi[idx].sum() if anchored else None
    obj = MixtureLoss(mass * probs[idx], w, base, strength * mass if anchored else 0.0, pi_f)
    start = _fill(pi_f, cap[idx] / mass, 1.0) if pi_f is not None else None
    got = minimize(obj, cap[idx] / mass, start=start, interior=anchored)
    p = fixed.copy()
    p[idx] = mass * got.p
    return ConvexResult(p, got.value, got.certificate, got.n_iter)
