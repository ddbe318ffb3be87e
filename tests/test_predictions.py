"""predictions: choice distributions, generative coarsening and gold log-likelihoods by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from taskpgm.core.relations import jsd_matrix, transfer_pmi
from taskpgm.errors import DataError
from taskpgm.predictions import from_arrays


def shard(mc_lls, mc_tokens, gen_topk_ids, gen_topk_lp, gen_target_lp, gen_gold_ll, gen_tokens):
    """Arrays in the layout of taskpgm.signals.score for [mc..., gen...] examples."""
    choice_ll = [v for lls in mc_lls for v in lls] + [gen_gold_ll]
    choice_tokens = [v for t in mc_tokens for v in t] + [gen_tokens]
    offsets = np.cumsum([0] + [len(x) for x in mc_lls] + [1])
    n_mc = len(mc_lls)
    return {
        "gold_ll": np.array([0.0] * n_mc + [gen_gold_ll]),
        "gold_tokens": np.array([1] * n_mc + [gen_tokens], dtype=np.int32),
        "choice_offsets": offsets.astype(np.int64),
        "choice_ll": np.array(choice_ll),
        "choice_tokens": np.array(choice_tokens, dtype=np.int32),
        "position_offsets": np.array([0] * (n_mc + 1) + [len(gen_topk_ids)], dtype=np.int64),
        "topk_ids": np.array(gen_topk_ids, dtype=np.int32),
        "topk_logprobs": np.array(gen_topk_lp, dtype=np.float32),
        "tail_mass": np.zeros(len(gen_topk_ids), dtype=np.float32),
        "target_logprobs": np.array(gen_target_lp, dtype=np.float32),
    }


PROBE = {"tasks": ["a", "b", "g"], "kinds": ["mc", "mc", "gen"], "gold": [0, 1, 0]}


def shards():
    lp = np.log
    base = shard([[-1.0, -2.0], [-3.0, -1.0, -2.0]], [[1, 2], [1, 1, 4]],
                 [[5, 6], [7, 8]], [[lp(0.5), lp(0.3)], [lp(0.6), lp(0.2)]],
                 [lp(0.5), lp(0.2)], -2.3, 2)
    expert = shard([[-0.1, -5.0], [-4.0, -0.5, -3.0]], [[1, 2], [1, 1, 4]],
                   [[5, 9], [8, 7]], [[lp(0.7), lp(0.2)], [lp(0.5), lp(0.4)]],
                   [lp(0.7), lp(0.5)], -1.0, 2)
    return {"base": base, "expert:a": expert, "expert:b": base, "expert:g": expert}


MODELS = ["base", "expert:a", "expert:b", "expert:g"]


def test_choice_distributions_and_gold_loglik():
    pred = from_arrays(PROBE, shards(), MODELS, ["a", "b", "g"])
    q = np.exp([-1.0, -2.0]) / np.exp([-1.0, -2.0]).sum()
    np.testing.assert_allclose(pred.rows[0, 0, :2], q)
    assert pred.loglik[0, 0] == pytest.approx(math.log(q[0]))
    assert pred.loglik[1, 2] == -1.0 and pred.tokens[2] == 2  # generative: summed, n tokens
    assert pred.correct[0, 0] and pred.correct[0, 1]  # base: argmax is the gold choice
    assert pred.row_weights.sum() == pytest.approx(1.0)
    assert pred.task_of.tolist() == [0, 1, 2]


def test_length_normalization_divides_by_tokens():
    pred = from_arrays(PROBE, shards(), MODELS, ["a", "b", "g"], normalization="length")
    z = np.array([-3.0, -1.0, -2.0 / 4])
    np.testing.assert_allclose(pred.rows[0, 1, :3], np.exp(z) / np.exp(z).sum())


def test_generative_rows_use_the_common_top_tokens_plus_a_bucket():
    pred = from_arrays(PROBE, shards(), MODELS, ["a", "b", "g"])
    # position 0: common ids {5}: base (0.5, 0.5), expert (0.7, 0.3); position 1: {7, 8}
    np.testing.assert_allclose(pred.rows[0, 2, :2], [0.5, 0.5])
    np.testing.assert_allclose(pred.rows[1, 2, :2], [0.7, 0.3])
    np.testing.assert_allclose(pred.rows[0, 3, :3], [0.6, 0.2, 0.2])
    np.testing.assert_allclose(pred.rows[1, 3, :3], [0.4, 0.5, 0.1], atol=1e-7)
    np.testing.assert_allclose(pred.row_weights, [1 / 3, 1 / 3, 1 / 6, 1 / 6])
    # the expert's target is greedy at both positions, the base's is not at position 1
    assert pred.correct[1, 2] and not pred.correct[0, 2]
    # everything feeds the relations as is
    jsd = jsd_matrix(pred.rows, weights=pred.row_weights)
    assert jsd.shape == (4, 4) and (jsd >= 0).all()
    assert transfer_pmi(pred.loglik, pred.tokens, pred.task_of).shape == (3, 3)


def test_accuracy_and_multiple_correct_answers():
    pred = from_arrays(PROBE, shards(), MODELS, ["a", "b", "g"], correct_sets=[[0, 1], [2], [0]])
    assert pred.correct[0, 0] and not pred.correct[0, 1]
    np.testing.assert_allclose(pred.accuracy()[0], [1.0, 0.0, 0.0])


def test_unknown_task_is_an_error():
    with pytest.raises(DataError, match="without an expert"):
        from_arrays(PROBE, shards(), MODELS[:2], ["a"])
