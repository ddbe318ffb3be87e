"""Oracle and property tests of taskpgm.core.relations."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon as scipy_js

from taskpgm.core.jsd import jsd_pairs_numpy
from taskpgm.core.relations import (
    AffinityInfo,
    NotADistributionError,
    ZeroDisplacementError,
    affinity,
    displacement_cosine,
    displacement_gram,
    jensen_shannon,
    jsd_matrix,
    pairwise_transfer,
    transfer_pmi,
)
from taskpgm.errors import InvalidInputError, TaskPGMError
from taskpgm.jsd_torch import jsd_pairs_torch

KERNELS = {"numpy": jsd_pairs_numpy, "torch": functools.partial(jsd_pairs_torch, device="cpu")}


def random_dists(rng: np.random.Generator, shape: tuple[int, ...], zero_frac: float = 0.3):
    """Random distributions along the last axis with exact zeros (never an all-zero row)."""
    x = rng.gamma(0.5, size=shape)
    x[rng.random(shape) < zero_frac] = 0.0
    x[..., 0] += (x.sum(axis=-1) == 0)  # keep every row a distribution
    return x / x.sum(axis=-1, keepdims=True)


def scipy_jsd(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return scipy_js(p, q, axis=-1) ** 2


# --------------------------------------------------------------------------- jensen_shannon


def test_jensen_shannon_matches_scipy_with_exact_zeros():
    rng = np.random.default_rng(0)
    p = random_dists(rng, (7, 40, 9))
    q = random_dists(rng, (7, 40, 9))
    assert (p == 0).any() and (q == 0).any()
    np.testing.assert_allclose(jensen_shannon(p, q), scipy_jsd(p, q), rtol=0, atol=1e-12)


def test_jensen_shannon_zero_in_q_where_p_positive_is_finite():
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([0.0, 0.5, 0.5])
    value = float(jensen_shannon(p, q))
    assert math.isfinite(value)
    assert value == pytest.approx(float(scipy_jsd(p, q)), abs=1e-15)


def test_jensen_shannon_extremes():
    assert float(jensen_shannon([1.0, 0.0], [0.0, 1.0])) == pytest.approx(math.log(2), abs=1e-15)
    assert float(jensen_shannon([0.2, 0.8], [0.2, 0.8])) == 0.0


def test_padded_choices_contribute_nothing():
    rng = np.random.default_rng(1)
    p = random_dists(rng, (20, 4), zero_frac=0.0)
    q = random_dists(rng, (20, 4), zero_frac=0.0)
    pad = np.zeros((20, 3))
    padded = jensen_shannon(np.hstack([p, pad]), np.hstack([q, pad]))
    np.testing.assert_array_equal(padded, jensen_shannon(p, q))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_jensen_shannon_symmetric_and_bounded(c, seed):
    rng = np.random.default_rng(seed)
    p = random_dists(rng, (5, c))
    q = random_dists(rng, (5, c))
    forward, backward = jensen_shannon(p, q), jensen_shannon(q, p)
    np.testing.assert_allclose(forward, backward, atol=1e-15)
    assert (forward >= 0).all() and (forward <= math.log(2)).all()


@pytest.mark.parametrize(
    ("p", "fragment"),
    [
        ([[0.5, 0.5], [0.7, 0.2]], "row (1,) sums to 0.9"),
        ([[0.5, 0.5], [1.2, -0.2]], "negative probability -0.2 at index (1, 1)"),
        ([[0.5, np.nan], [0.5, 0.5]], "non-finite value nan at index (0, 1)"),
        ([[0.5, np.inf], [0.5, 0.5]], "non-finite value inf at index (0, 1)"),
    ],
)
def test_jensen_shannon_rejects_non_distributions(p, fragment):
    with pytest.raises(TaskPGMError, match=None) as info:
        jensen_shannon(p, [[0.5, 0.5], [0.5, 0.5]])
    assert fragment in str(info.value)
    assert isinstance(info.value, InvalidInputError | NotADistributionError)


def test_jensen_shannon_rejects_shape_mismatch():
    with pytest.raises(InvalidInputError, match="same shape"):
        jensen_shannon([0.5, 0.5], [0.2, 0.3, 0.5])


def test_rows_within_tolerance_are_accepted():
    p = np.array([0.5, 0.5 + 5e-7])
    assert math.isfinite(float(jensen_shannon(p, [0.5, 0.5])))


# --------------------------------------------------------------------------- jsd_matrix


def scipy_jsd_matrix(d: np.ndarray) -> np.ndarray:
    m = d.shape[0]
    out = np.zeros((m, m))
    for a in range(m):
        for b in range(m):
            if a != b:
                out[a, b] = np.mean(scipy_jsd(d[a], d[b]))
    return out


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("block_bytes", [1, 200, 4096, 2**22])
def test_jsd_matrix_matches_scipy_in_every_block_size(block_bytes, backend):
    rng = np.random.default_rng(2)
    d = random_dists(rng, (6, 57, 5))
    d[:, :10, 3:] = 0.0  # padded choices for the first ten examples
    d[:, :10, 0] += d[:, :10].sum(axis=-1) == 0
    d[:, :10] /= d[:, :10].sum(axis=-1, keepdims=True)
    got = jsd_matrix(d, block_bytes=block_bytes, pairs=KERNELS[backend])
    np.testing.assert_allclose(got, scipy_jsd_matrix(d), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got, got.T)
    assert (np.diag(got) == 0).all()


def test_jsd_matrix_weighted_rows():
    rng = np.random.default_rng(12)
    d = random_dists(rng, (4, 30, 3))
    w = rng.random(30)
    w /= w.sum()
    expected = np.zeros((4, 4))
    for a in range(4):
        for b in range(4):
            expected[a, b] = np.sum(w * scipy_jsd(d[a], d[b]))
    for pairs in KERNELS.values():
        np.testing.assert_allclose(jsd_matrix(d, weights=w, block_bytes=100, pairs=pairs),
                                   expected, atol=1e-12)
    with pytest.raises(InvalidInputError, match="sum to 1"):
        jsd_matrix(d, weights=w * 2)


@pytest.mark.parametrize("backend", list(KERNELS))
def test_group_sums_and_float32_on_both_kernels(backend):
    """bounds keeps each contiguous group's weighted sum apart in the same pass; float32
    stays within 1e-6 of float64 (relative, on entries above 1e-3)."""
    rng = np.random.default_rng(13)
    d = random_dists(rng, (5, 60, 4))
    w = np.full(60, 1 / 60)
    bounds = [0, 7, 7, 31]  # an empty group included
    kernel = KERNELS[backend]
    grouped = kernel(d, w, 400, bounds)
    assert grouped.shape == (5, 5, 4)
    edges = [*bounds, 60]
    for g in range(4):
        lo, hi = edges[g], edges[g + 1]
        expect = np.zeros((5, 5)) if lo == hi else np.triu(
            jsd_matrix(d[:, lo:hi]) * (hi - lo) / 60, 1)
        np.testing.assert_allclose(grouped[..., g], expect, atol=1e-15)
    single = functools.partial(kernel, dtype=np.float32) if backend == "numpy" else \
        functools.partial(jsd_pairs_torch, device="cpu", precision="float32")
    got = jsd_matrix(d, pairs=single)
    exact = scipy_jsd_matrix(d)
    big = exact > 1e-3
    assert got.dtype == np.float64
    np.testing.assert_allclose(got[big], exact[big], rtol=1e-6)
    assert np.abs(got - exact).max() < 1e-7


def test_jsd_matrix_rejects_bad_input():
    with pytest.raises(InvalidInputError, match="shape"):
        jsd_matrix(np.ones((3, 4)))
    bad = np.full((2, 3, 2), 0.5)
    bad[1, 2] = [0.9, 0.3]
    with pytest.raises(NotADistributionError, match=r"\(1, 2\)"):
        jsd_matrix(bad)


# --------------------------------------------------------------------------- displacements


def test_displacement_cosine_formula():
    jsd = np.array(
        [
            [0.0, 0.2, 0.3, 0.1],
            [0.2, 0.0, 0.1, 0.25],
            [0.3, 0.1, 0.0, 0.35],
            [0.1, 0.25, 0.35, 0.0],
        ]
    )
    # G_ij = (jsd[i+1,0] + jsd[j+1,0] - jsd[i+1,j+1]) / 2, written out by hand.
    g01 = (0.2 + 0.3 - 0.1) / 2
    g02 = (0.2 + 0.1 - 0.25) / 2
    g12 = (0.3 + 0.1 - 0.35) / 2
    expected = np.array(
        [
            [1.0, g01 / math.sqrt(0.2 * 0.3), g02 / math.sqrt(0.2 * 0.1)],
            [g01 / math.sqrt(0.2 * 0.3), 1.0, g12 / math.sqrt(0.3 * 0.1)],
            [g02 / math.sqrt(0.2 * 0.1), g12 / math.sqrt(0.3 * 0.1), 1.0],
        ]
    )
    np.testing.assert_allclose(displacement_cosine(jsd), expected, atol=1e-15)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_displacement_gram_of_real_jsd_is_psd(t, seed):
    rng = np.random.default_rng(seed)
    d = random_dists(rng, (t + 1, 30, 4), zero_frac=0.2)
    gram = displacement_gram(jsd_matrix(d))
    assert np.linalg.eigvalsh(gram).min() >= -1e-12
    k = displacement_cosine(jsd_matrix(d))
    assert np.abs(k).max() <= 1.0


def test_zero_displacement_names_the_task():
    rng = np.random.default_rng(3)
    d = random_dists(rng, (4, 20, 3))
    d[2] = d[0]  # the expert of task 1 equals the base model
    with pytest.raises(ZeroDisplacementError, match=r"task 1 \('navigate'\)"):
        displacement_cosine(jsd_matrix(d), names=["a", "navigate", "c"])


def test_displacement_rejects_non_symmetric_and_nonzero_diagonal():
    with pytest.raises(InvalidInputError, match="not symmetric"):
        displacement_cosine(np.array([[0.0, 0.1], [0.2, 0.0]]))
    with pytest.raises(InvalidInputError, match="zero diagonal"):
        displacement_cosine(np.array([[0.1, 0.1], [0.1, 0.0]]))


# --------------------------------------------------------------------------- transfer


def test_transfer_pmi_matches_a_plain_loop():
    rng = np.random.default_rng(4)
    t, n = 4, 50
    loglik = rng.normal(-3, 1, size=(t + 1, n))
    tokens = rng.integers(1, 6, size=n).astype(float)
    task_of = rng.permutation(np.arange(n) % t)
    expected = np.zeros((t, t))
    for i in range(t):
        for j in range(t):
            xs = [x for x in range(n) if task_of[x] == j]
            expected[i, j] = np.mean([(loglik[i + 1, x] - loglik[0, x]) / tokens[x] for x in xs])
    np.testing.assert_allclose(transfer_pmi(loglik, tokens, task_of), expected, atol=1e-13)


def test_transfer_pmi_errors():
    ll = np.zeros((3, 4))
    with pytest.raises(InvalidInputError, match="task 1 has no probe examples"):
        transfer_pmi(ll, np.ones(4), [0, 0, 0, 0])
    with pytest.raises(InvalidInputError, match=r"task_of\[2\] = 5"):
        transfer_pmi(ll, np.ones(4), [0, 1, 5, 0])
    with pytest.raises(InvalidInputError, match="tokens must be positive"):
        transfer_pmi(ll, [1, 0, 1, 1], [0, 1, 1, 0])
    ll[1, 2] = np.nan
    with pytest.raises(InvalidInputError, match=r"non-finite value nan at index \(1, 2\)"):
        transfer_pmi(ll, np.ones(4), [0, 1, 1, 0])


def test_pairwise_transfer_by_hand():
    # Two tasks: D_0 = {x0, x1}, D_1 = {x2}; x2's answer has 2 tokens. Experts' ℓ:
    #   expert 0: -1, -3, -5     expert 1: -2, -4, -2     (the base cancels: any values)
    # mean_{D_1}(ℓ_0 − ℓ_1)/n = (-5 + 2) / 2 = -1.5
    # mean_{D_0}(ℓ_1 − ℓ_0)/n = ((-2 + 1) + (-4 + 3)) / 2 = -1
    # S_01 = S_10 = ½ (-1.5 − 1) = -1.25, zero diagonal
    loglik = np.array([[-7.0, 0.5, 3.0], [-1.0, -3.0, -5.0], [-2.0, -4.0, -2.0]])
    pmi = transfer_pmi(loglik, [1.0, 1.0, 2.0], [0, 0, 1])
    np.testing.assert_allclose(pairwise_transfer(pmi), [[0.0, -1.25], [-1.25, 0.0]],
                               atol=1e-15)


def test_pairwise_transfer_matches_its_definition_in_a_plain_loop():
    # S_ij = ½ [mean_{D_j} (ℓ_i − ℓ_j) / n + mean_{D_i} (ℓ_j − ℓ_i) / n], from the examples.
    rng = np.random.default_rng(5)
    t, n = 4, 37
    loglik = rng.normal(-3, 1, size=(t + 1, n))
    tokens = rng.integers(1, 6, size=n).astype(float)
    task_of = rng.permutation(np.arange(n) % t)

    def mean_gap(i: int, j: int, task: int) -> float:
        xs = [x for x in range(n) if task_of[x] == task]
        return sum((loglik[i + 1, x] - loglik[j + 1, x]) / tokens[x] for x in xs) / len(xs)

    expected = np.array([[0.5 * (mean_gap(i, j, j) + mean_gap(j, i, i)) for j in range(t)]
                         for i in range(t)])
    got = pairwise_transfer(transfer_pmi(loglik, tokens, task_of))
    np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_array_equal(np.diag(got), 0.0)


# --------------------------------------------------------------------------- affinity


def relations_example(seed: int, t: int = 5):
    rng = np.random.default_rng(seed)
    d = random_dists(rng, (t + 1, 40, 4))
    pmi = rng.normal(0, 0.5, size=(t, t))
    return jsd_matrix(d), pmi


@pytest.mark.parametrize("kernel", ["displacement", "jsd"])
@pytest.mark.parametrize("pmi_form", ["symmetric", "pairwise"])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_affinity_is_symmetric_unit_diagonal_psd(kernel, pmi_form, alpha):
    jsd, pmi = relations_example(6)
    s = affinity(jsd, pmi, alpha, kernel=kernel, pmi_form=pmi_form)
    assert isinstance(s, np.ndarray)
    np.testing.assert_array_equal(s, s.T)
    np.testing.assert_allclose(np.diag(s), 1.0, atol=1e-15)
    assert np.linalg.eigvalsh(s).min() >= -1e-10


def test_affinity_alpha_one_is_the_displacement_cosine():
    jsd, pmi = relations_example(7)
    np.testing.assert_allclose(affinity(jsd, pmi, 1.0), displacement_cosine(jsd), atol=1e-12)


def test_affinity_records_the_psd_correction():
    jsd, _ = relations_example(8, t=3)
    # A PMI whose squashed form is indefinite: +1, +1 but -1 on the third pair.
    pmi = np.array([[0.0, 5.0, 5.0], [5.0, 0.0, -5.0], [5.0, -5.0, 0.0]])
    s, info = affinity(jsd, pmi, 0.0, return_info=True)
    assert isinstance(info, AffinityInfo)
    blend = np.tanh(pmi / 5.0)
    np.fill_diagonal(blend, 1.0)
    assert np.linalg.eigvalsh(blend).min() < 0
    assert info.clipped_eigenvalues and min(info.clipped_eigenvalues) < 0
    assert info.clipped_mass == pytest.approx(-np.linalg.eigvalsh(blend).min(), rel=1e-9)
    assert info.correction_norm == pytest.approx(np.linalg.norm(s - blend), rel=1e-12)
    assert info.pmi_scale == 5.0


def test_affinity_reports_no_correction_when_already_psd():
    jsd, pmi = relations_example(9)
    _, info = affinity(jsd, pmi * 0.0, 1.0, return_info=True)
    assert info.clipped_eigenvalues == ()
    assert info.correction_norm == pytest.approx(0.0, abs=1e-12)


def test_affinity_bad_input():
    jsd, pmi = relations_example(10)
    with pytest.raises(InvalidInputError, match="alpha"):
        affinity(jsd, pmi, 1.5)
    with pytest.raises(InvalidInputError, match="pmi must be"):
        affinity(jsd, pmi[:3, :3])
    with pytest.raises(InvalidInputError, match="kernel"):
        affinity(jsd, pmi, kernel="rbf")  # type: ignore[arg-type]
