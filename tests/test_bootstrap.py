"""Bootstrap intervals: stratified draws, relations recomputed under them, weights summarized."""

from __future__ import annotations

import numpy as np
import pytest

from taskpgm.bootstrap import draw_counts, relation_replicates, weight_intervals
from taskpgm.core.relations import affinity, jsd_matrices, jsd_matrix
from taskpgm.predictions import ProbePredictions


def test_draws_are_stratified_by_task():
    task_of = np.array([0] * 5 + [1] * 3 + [2] * 8)
    counts = draw_counts(task_of, 50, seed=1)
    for j, n in ((0, 5), (1, 3), (2, 8)):
        assert (counts[:, task_of == j].sum(axis=1) == n).all()  # each task keeps its count
    assert (counts >= 0).all() and len({tuple(c) for c in counts}) > 40  # draws differ
    np.testing.assert_array_equal(counts, draw_counts(task_of, 50, seed=1))


def test_jsd_matrices_equal_one_weighted_matrix_per_draw():
    rng = np.random.default_rng(0)
    dists = rng.dirichlet(np.ones(4), size=(4, 30))
    w = rng.dirichlet(np.ones(30), size=5)
    got = jsd_matrices(dists, w, block_bytes=512)  # several blocks
    for b in range(5):
        np.testing.assert_allclose(got[b], jsd_matrix(dists, weights=w[b]), atol=1e-15)


def predictions(rng: np.random.Generator, t: int = 3, per: int = 6) -> ProbePredictions:
    n = t * per
    task_of = np.repeat(np.arange(t), per)
    dists = rng.dirichlet(np.ones(3), size=(t + 1, n))
    gold = rng.integers(0, 3, size=n)
    loglik = np.log(dists[:, np.arange(n), gold])
    correct = dists.argmax(axis=-1) == gold[None, :]
    return ProbePredictions(["base", *(f"expert:{i}" for i in range(t))],
                            [f"t{i}" for i in range(t)], task_of, loglik, np.ones(n), correct,
                            dists, np.full(n, 1.0 / n), np.arange(n))


def test_each_replicate_is_the_relations_of_its_resampled_probe_set():
    """Draw b's matrices equal the plain computation on the examples repeated c_bx times."""
    rng = np.random.default_rng(3)
    pred = predictions(rng)
    got = relation_replicates(pred, alpha=0.5, kernel="displacement", pmi_form="symmetric",
                              draws=4, seed=7)
    counts = draw_counts(pred.task_of, 4, seed=7)
    for b in range(4):
        idx = np.repeat(np.arange(pred.task_of.size), counts[b])  # the resampled probe set
        jsd = jsd_matrix(pred.rows[:, idx])
        np.testing.assert_allclose(got["boot_jsd"][b], jsd, atol=1e-12)
        gain = pred.loglik[1:, idx] - pred.loglik[0, idx]
        pmi = np.array([[gain[i, pred.task_of[idx] == j].mean() for j in range(3)]
                        for i in range(3)])  # a plain loop over the resampled examples
        np.testing.assert_allclose(got["boot_pmi"][b], pmi, atol=1e-12)
        np.testing.assert_allclose(got["boot_affinity"][b], affinity(jsd, pmi, 0.5), atol=1e-10)


def test_intervals_and_dropped_tasks():
    draws = np.array([[0.5, 0.5, 0.0]] * 92 + [[0.4, 0.4, 0.2]] * 8)
    out = weight_intervals(draws, ["a", "b", "c"])
    assert out["draws"] == 100
    assert out["tasks"]["c"]["p_positive"] == pytest.approx(0.08)
    assert out["dropped"] == ["c"]  # no weight in 92% >= 90% of the draws
    assert out["tasks"]["a"]["lo"] == pytest.approx(0.4) and out["tasks"]["a"]["hi"] == 0.5
    kept = weight_intervals(np.array([[0.5, 0.5, 0.0]] * 85 + [[0.4, 0.4, 0.2]] * 15), "abc")
    assert kept["dropped"] == []  # dropped in only 85% of the draws
