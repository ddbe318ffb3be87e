"""Bootstrap intervals: stratified draws, relations recomputed under them, weights summarized."""

from __future__ import annotations

import numpy as np
import pytest

from taskpgm.bootstrap import (
    balance,
    block_draws,
    draw_counts,
    example_weights,
    per_example_replicates,
    probe_blocks,
    relations_with_replicates,
    weight_intervals,
)
from taskpgm.core.relations import affinity, jsd_block_sums, jsd_matrices, jsd_matrix
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


def test_block_sums_add_up_to_the_mean_matrix_in_one_pass():
    rng = np.random.default_rng(1)
    dists = rng.dirichlet(np.ones(4), size=(5, 40))
    block_of = rng.integers(0, 6, size=40)
    w = rng.dirichlet(np.ones(40))
    other = rng.random(40)
    total, sums = jsd_block_sums(dists, block_of, 6, weights=w, block_bytes=512)
    np.testing.assert_allclose(total, jsd_matrix(dists, weights=w), atol=1e-15)
    assert sums.dtype == np.float32
    np.testing.assert_allclose(sums.sum(axis=0), total, atol=1e-6)
    for k in range(6):  # each block's sum is the weighted JSD of its rows alone
        rows = block_of == k
        part = jsd_matrix(dists[:, rows], weights=w[rows] / w[rows].sum()) * w[rows].sum()
        np.testing.assert_allclose(sums[k], part, atol=1e-7)
    total2, sums2 = jsd_block_sums(dists, block_of, 6, weights=w, block_weights=other)
    np.testing.assert_allclose(total2, total, atol=1e-15)  # the mean keeps w
    for k in range(6):
        rows = block_of == k
        part = jsd_matrix(dists[:, rows], weights=other[rows] / other[rows].sum())
        np.testing.assert_allclose(sums2[k], part * other[rows].sum(), atol=1e-6)


def test_blocks_are_stratified_and_balanced():
    task_of = np.repeat(np.arange(3), [130, 64, 7])
    block_of = probe_blocks(task_of, 16, seed=2)
    sizes = np.bincount(block_of, minlength=16)
    assert sizes.max() - sizes.min() <= 1
    factor = balance(task_of, block_of, 16)
    for j, n in ((0, 130), (1, 64)):  # every block carries 1/16 of these tasks' weight
        per_block = np.bincount(block_of[task_of == j], weights=factor[task_of == j],
                                minlength=16)
        np.testing.assert_allclose(per_block, n / 16)
    assert np.unique(block_of[task_of == 2]).size == 7  # a small task: one example per block
    np.testing.assert_allclose(factor[task_of == 2], 1.0)
    draws = block_draws(16, 30, seed=3)
    assert (draws.sum(axis=1) == 16).all() and len({tuple(d) for d in draws}) == 30
    w = example_weights(block_of, draws, task_of, factor)
    for j, n in ((0, 130), (1, 64)):  # so any draw keeps each such task's total weight
        np.testing.assert_allclose(w[:, task_of == j].sum(axis=1), n)


def test_a_task_in_no_drawn_block_keeps_its_probe_set():
    task_of = np.array([0, 0, 0, 1])
    block_of = np.array([0, 1, 2, 3])
    draws = np.array([[2, 1, 1, 0], [1, 1, 1, 1]])
    w = example_weights(block_of, draws, task_of, np.ones(4))
    np.testing.assert_array_equal(w, [[2, 1, 1, 1], [1, 1, 1, 1]])


def test_each_block_replicate_is_the_relations_of_its_weighted_probe_set():
    """Draw b's matrices equal the plain computation with example x weighted c_b,k(x) times
    its balance factor (so the one-pass block sums are exact, up to float32)."""
    rng = np.random.default_rng(3)
    pred = predictions(rng, t=3, per=12)
    jsd, got = relations_with_replicates(pred, alpha=0.5, kernel="displacement",
                                         pmi_form="symmetric", draws=4, blocks=5, seed=7)
    np.testing.assert_allclose(jsd, jsd_matrix(pred.rows), atol=1e-15)
    block_of = probe_blocks(pred.task_of, 5, seed=7)
    factor = balance(pred.task_of, block_of, 5)
    weights = example_weights(block_of, block_draws(5, 4, seed=8), pred.task_of, factor)
    for b in range(4):
        w = weights[b]
        jsd_b = jsd_matrix(pred.rows, weights=w / w.sum())
        np.testing.assert_allclose(got["boot_jsd"][b], jsd_b, atol=1e-7)
        gain = pred.loglik[1:] - pred.loglik[0]
        pmi = np.array([[np.average(gain[i, pred.task_of == j], weights=w[pred.task_of == j])
                         for j in range(3)] for i in range(3)])  # a plain weighted mean
        np.testing.assert_allclose(got["boot_pmi"][b], pmi, atol=1e-12)
        np.testing.assert_allclose(got["boot_affinity"][b], affinity(got["boot_jsd"][b], pmi,
                                                                     0.5), atol=1e-10)


def test_each_per_example_replicate_is_the_relations_of_its_resampled_probe_set():
    """The reference bootstrap: draw b equals the plain computation on the examples
    repeated c_bx times."""
    rng = np.random.default_rng(3)
    pred = predictions(rng)
    got = per_example_replicates(pred, alpha=0.5, kernel="displacement", pmi_form="symmetric",
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


def test_block_intervals_match_the_per_example_bootstrap():
    """At T = 12, 200 probe examples per task, 1,000 draws and the default 64 blocks, each
    relation's bootstrap sd is within the stated tolerance of the per-example bootstrap's:
    median ratio within 0.95-1.05 and 90% of the entries within 0.8-1.25 (the per-example
    bootstrap against itself at another seed: 0.96-1.06; measured at 64 blocks: 0.86-1.14
    on the JSD, 0.82-1.11 on the PMI, 0.87-1.13 on the affinity)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from bench_scale import synthetic  # the scale benchmark's pool: families of 5

    pred = synthetic(12, 2400)
    ref = per_example_replicates(pred, alpha=0.5, kernel="displacement", pmi_form="symmetric",
                                 draws=1000, seed=5)
    _, got = relations_with_replicates(pred, alpha=0.5, kernel="displacement",
                                       pmi_form="symmetric", draws=1000, blocks=64)
    upper = np.triu_indices(13, 1)
    off = ~np.eye(12, dtype=bool)
    for key, sel in (("boot_jsd", upper), ("boot_pmi", off), ("boot_affinity", off)):
        ratio = got[key].std(axis=0)[sel] / ref[key].std(axis=0)[sel]
        assert 0.95 <= np.median(ratio) <= 1.05, (key, np.median(ratio))
        lo, hi = np.quantile(ratio, [0.05, 0.95])
        assert lo >= 0.8 and hi <= 1.25, (key, lo, hi)


def test_intervals_and_dropped_tasks():
    draws = np.array([[0.5, 0.5, 0.0]] * 92 + [[0.4, 0.4, 0.2]] * 8)
    out = weight_intervals(draws, ["a", "b", "c"])
    assert out["draws"] == 100
    assert out["tasks"]["c"]["p_positive"] == pytest.approx(0.08)
    assert out["dropped"] == ["c"]  # no weight in 92% >= 90% of the draws
    assert out["tasks"]["a"]["lo"] == pytest.approx(0.4) and out["tasks"]["a"]["hi"] == 0.5
    kept = weight_intervals(np.array([[0.5, 0.5, 0.0]] * 85 + [[0.4, 0.4, 0.2]] * 15), "abc")
    assert kept["dropped"] == []  # dropped in only 85% of the draws
