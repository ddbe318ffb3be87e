"""The paper's own setting, as its published code runs it, beside our exact solve of it.

What the authors' code does (docs/design.md, "The reference setting"):

* S_AB = ½ [mean over D_B of (ℓ_A − ℓ_B) + mean over D_A of (ℓ_B − ℓ_A)] on
  sequence log-likelihoods, no base model: entries ≤ 0 in the usual case, zero
  diagonal, near 0 meaning similar (:func:`taskpgm.core.relations.pairwise_transfer`
  of the PMI computed with n(x) = 1);
* S is symmetrized and, when not PSD, shifted by |λ_min| I (a ridge that pulls
  towards uniform) — :func:`reference_affinity`;
* u = β S 1 with β/λ = 0.2 (:data:`REFERENCE_RHO`), so E(p) = ½ pᵀ S p − 0.2 (S 1)ᵀ p;
* the equality-constrained KKT system is solved and the result projected onto
  the simplex (:func:`projected_solve`), which is not the minimizer on the
  simplex when the projection is active. We solve the same energy exactly
  (:class:`taskpgm.core.mrf.TaskMixtureMRF`); the report shows both.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from taskpgm.core.relations import pairwise_transfer
from taskpgm.errors import InvalidInputError

FloatArray = NDArray[np.float64]

#: β/λ of the authors' cluster code (β 0.25, λ 1.25).
REFERENCE_RHO = 0.2


def reference_affinity(pmi_sequence: ArrayLike) -> tuple[FloatArray, float]:
    """The authors' S from the sequence-level PMI matrix; returns (S, the shift added).

    S = sym(pairwise(PMI)) + |λ_min| I when λ_min < 0, else unchanged (shift 0).
    """
    s = pairwise_transfer(pmi_sequence)
    s = 0.5 * (s + s.T)
    low = float(np.linalg.eigvalsh(s)[0])
    shift = -low if low < 0 else 0.0
    out: FloatArray = s + shift * np.eye(s.shape[0])
    return out, shift


def project_to_simplex(v: ArrayLike) -> FloatArray:
    """The Euclidean projection of v onto {p ≥ 0, Σ p = 1} (sort and threshold)."""
    x = np.asarray(v, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise InvalidInputError(f"v must be a non-empty vector, got shape {x.shape}")
    u = np.sort(x)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, x.size + 1)
    rho = int(np.nonzero(u - css / k > 0)[0][-1])
    theta = css[rho] / (rho + 1)
    out: FloatArray = np.maximum(x - theta, 0.0)
    return out


def projected_solve(S: ArrayLike, rho: float) -> FloatArray:
    """The authors' solve: the minimizer of E on {Σ p = 1}, then projected onto the simplex.

    The KKT system [S 1; 1ᵀ 0] [p; −ν] = [ρ S 1; 1] is solved directly: it stays
    non-singular when S itself is singular (the |λ_min| I shift makes it so) as long
    as 1 is not orthogonal to S's range complement; least squares otherwise. Then
    :func:`project_to_simplex`.
    """
    sa = np.asarray(S, dtype=np.float64)
    n = sa.shape[0]
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = sa
    kkt[:n, n] = kkt[n, :n] = 1.0
    rhs = np.concatenate((rho * sa.sum(axis=1), [1.0]))
    try:
        sol = np.linalg.solve(kkt, rhs)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    return project_to_simplex(sol[:n])
