"""The split energy: a redundancy kernel R and a signed benefit t, instead of one affinity S.

    E(p) = ½ pᵀ R p − ρ tᵀ p      on the simplex (docs/design.md, "The split energy").

In a user's words: the quadratic term is the diminishing return of data that
teaches the same thing twice (R_ij is large when experts i and j move the model
the same way); the linear term is what a unit of a task's data does, good or
bad (t_i counts its own gain and what it does to every other task, interference
negative). The affinity energy blends both into one signed S, so that there two
tasks that hurt each other (S_ij < 0) *lower* ½ pᵀSp when mixed; R is
non-negative, so the split energy never rewards mixing them.

Two constructions, both PSD by construction:

* :func:`split_terms` (``mrf.energy: split``):
  R_ij = exp(−JSD_ij / σ) on the JSD between experts (σ the median
  off-diagonal JSD; exp(−d/σ) of the negative-type JSD is PSD with unit
  diagonal and entries in (0, 1]), and
  t_i = (PMI_ii + Σ_{j≠i} PMI_ij) / ḡ with ḡ the mean self-gain
  mean_i PMI_ii: t_i = 1 is one task's typical own gain, so ρ is the benefit,
  in units of that gain, that one unit of redundancy is worth.
* :func:`gain_model_terms` (``mrf.energy: gain-model``): the second-order
  expansion around uniform of the mixture's total gain
  G(p) = Σ_j f_j(T Σ_i a_ij p_i), with a_ij = PMI_ij / PMI_jj the transfer of
  task i's data to task j in units of j's own (a_jj = 1, clipped to [−1, 1]) and
  f_j(x) = h_j (1 − e^{−x}) a concave return with headroom h_j = 1 − the base
  model's probe accuracy on j. With f′, f″ at the uniform point x̄_j = max(Σ_i a_ij, 0),

      −G(p) ≈ const + ½ pᵀ R p − tᵀ p,   R = T² A diag(|f″|) Aᵀ,   t = T A f′ + R p̄,

  p̄ = 1/T; both are divided by the mean of diag(R), so ρ = 1 is the gain
  model's own trade-off.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from taskpgm.errors import InvalidInputError

FloatArray = NDArray[np.float64]


def _square(x: ArrayLike, name: str, n: int | None = None) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or (n is not None and arr.shape[0] != n):
        want = f"({n}, {n})" if n is not None else "square"
        raise InvalidInputError(f"{name} must be {want}, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{name} has a non-finite entry")
    return arr


def redundancy_kernel(jsd: ArrayLike) -> tuple[FloatArray, float]:
    """R = exp(−JSD_experts / σ), σ the median positive off-diagonal JSD; returns (R, σ).

    ``jsd`` is the (T+1, T+1) matrix with the base model at index 0.
    """
    d = _square(jsd, "jsd")
    experts = d[1:, 1:]
    t = experts.shape[0]
    off = experts[~np.eye(t, dtype=bool)]
    positive = off[off > 1e-12]  # identical experts come out at ~1e-17, not exactly 0
    sigma = float(np.median(positive)) if positive.size else 1.0
    r: FloatArray = np.exp(-experts / sigma)
    r = 0.5 * (r + r.T)
    np.fill_diagonal(r, 1.0)
    return r, sigma


def benefit(pmi: ArrayLike) -> tuple[FloatArray, float]:
    """t_i = (PMI_ii + Σ_{j≠i} PMI_ij) / ḡ, ḡ = mean_i PMI_ii; returns (t, ḡ).

    When no expert gained on its own task (ḡ ≤ 0) the scale is max |raw| instead,
    so t keeps its sign and stays bounded.
    """
    p = _square(pmi, "pmi")
    return in_self_gain_units(p.sum(axis=1), p)  # own gain plus the effect on every other


def in_self_gain_units(raw: ArrayLike, pmi: ArrayLike) -> tuple[FloatArray, float]:
    """raw / ḡ with ḡ = mean_i PMI_ii, or / max |raw| when ḡ ≤ 0; returns (scaled, scale)."""
    values = np.asarray(raw, dtype=np.float64)
    scale = float(np.diag(np.asarray(pmi, dtype=np.float64)).mean())
    if scale <= 0:
        top = float(np.abs(values).max())
        scale = top if top > 0 else 1.0
    out: FloatArray = values / scale
    return out, scale


def split_terms(jsd: ArrayLike, pmi: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """(R, t) of ``mrf.energy: split``: :func:`redundancy_kernel` and :func:`benefit`."""
    r, _ = redundancy_kernel(jsd)
    t, _ = benefit(pmi)
    if t.shape[0] != r.shape[0]:
        raise InvalidInputError(f"pmi is {t.shape[0]} tasks but jsd {r.shape[0]}")
    return r, t


def gain_model_terms(pmi: ArrayLike, base_accuracy: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """(R, t) of ``mrf.energy: gain-model``: the second-order gain expansion above.

    Args:
        pmi: (T, T) transfer PMI, PMI_ij = expert i on task j's probe examples.
        base_accuracy: (T,) the base model's probe accuracy on each task (headroom
            h_j = 1 − it, at least 0.01 so every task keeps some curvature).
    """
    p = _square(pmi, "pmi")
    n = p.shape[0]
    acc = np.asarray(base_accuracy, dtype=np.float64)
    if acc.shape != (n,):
        raise InvalidInputError(f"base_accuracy must have shape ({n},), got {acc.shape}")
    if not np.isfinite(acc).all():
        raise InvalidInputError("base_accuracy has a non-finite entry")
    self_gain = np.diag(p)
    a = np.zeros_like(p)
    learned = self_gain > 0
    # No other task's data counts for more than j's own, either way: a tiny self-gain
    # would otherwise blow a_ij up (and e^{−x̄} with it).
    a[:, learned] = np.clip(p[:, learned] / self_gain[learned], -1.0, 1.0)
    np.fill_diagonal(a, 1.0)  # a task's own data counts fully even if its expert did not learn
    head = np.clip(1.0 - acc, 0.01, 1.0)
    # x̄_j = Σ_i a_ij: task j's effective data at the uniform mixture, at least none.
    at = np.maximum(a.sum(axis=0), 0.0)
    d1 = head * np.exp(-at)  # f′_j
    d2 = head * np.exp(-at)  # |f″_j|
    r = (n * n) * (a * d2[None, :]) @ a.T
    t = n * (a @ d1) + r @ np.full(n, 1.0 / n)
    scale = float(np.diag(r).mean())
    scale = scale if scale > 0 else 1.0
    r = 0.5 * (r + r.T) / scale
    return r, t / scale
