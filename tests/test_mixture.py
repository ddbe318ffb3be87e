"""Tests of taskpgm.core.mixture against hand computations and properties."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskpgm.core.mixture import (
    apply_caps,
    baseline_weights,
    caps_from_budget,
    example_counts,
    keyed_mixture,
    sample_mixture,
)
from taskpgm.errors import InfeasibleError, InvalidInputError
from taskpgm.tasks.schema import Example


def test_caps_from_budget_formula_and_infeasible_budget():
    caps = caps_from_budget([100, 50], [10.0, 20.0], token_budget=4000, max_repeat=2)
    np.testing.assert_allclose(caps, [2 * 100 * 10 / 4000, 2 * 50 * 20 / 4000])
    with pytest.raises(InfeasibleError, match=r"mixture\.token_budget or raise mrf\.max_repeat"):
        caps_from_budget([10, 10], [10.0, 10.0], token_budget=1000, max_repeat=2)


def test_apply_caps_water_fills():
    w = apply_caps([0.7, 0.2, 0.1], [0.4, 1.0, 1.0])
    # 0.3 of excess spread 2:1 over the other two.
    np.testing.assert_allclose(w, [0.4, 0.4, 0.2])
    np.testing.assert_allclose(apply_caps([0.5, 0.5], None), [0.5, 0.5])
    with pytest.raises(InfeasibleError):
        apply_caps([0.5, 0.5], [0.3, 0.3])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.01, 1.0), min_size=2, max_size=12), st.integers(0, 2**31 - 1))
def test_apply_caps_feasible_and_sums_to_one(raw, seed):
    rng = np.random.default_rng(seed)
    caps = rng.uniform(0.05, 1.0, size=len(raw))
    if caps.sum() < 1:
        caps = caps / caps.sum() * 1.01
    w = apply_caps(raw, caps)
    assert w.sum() == pytest.approx(1.0)
    assert (w <= caps + 1e-12).all() and (w >= 0).all()


def test_baselines():
    sizes = [100, 400, 900]
    np.testing.assert_allclose(baseline_weights("uniform", sizes), [1 / 3] * 3)
    np.testing.assert_allclose(baseline_weights("size", sizes), np.array(sizes) / 1400)
    np.testing.assert_allclose(baseline_weights("temperature", sizes, tau=2.0),
                               np.array([10, 20, 30]) / 60)
    np.testing.assert_allclose(baseline_weights("temperature", sizes, tau=1.0),
                               baseline_weights("size", sizes))
    capped = baseline_weights("uniform", sizes, caps=[0.1, 1.0, 1.0])
    np.testing.assert_allclose(capped, [0.1, 0.45, 0.45])
    with pytest.raises(InvalidInputError, match="unknown baseline"):
        baseline_weights("random", sizes)  # type: ignore[arg-type]


def test_example_counts_by_hand():
    # targets: 0.5*1000/10 = 50, 0.3*1000/20 = 15, 0.2*1000/30 = 6.67 -> total round(71.67) = 72
    counts = example_counts([0.5, 0.3, 0.2], [100, 100, 100], [10, 20, 30], 1000, 4)
    assert counts.tolist() == [50, 15, 7]
    # a task at its repeat limit passes its share on
    counts = example_counts([0.5, 0.3, 0.2], [10, 100, 100], [10, 20, 30], 1000, 2)
    assert counts[0] == 20 and counts.sum() == 72


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 10), st.integers(0, 2**31 - 1), st.floats(1e3, 1e6))
def test_example_counts_properties(t, seed, budget):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(t))
    sizes = rng.integers(50, 5000, size=t)
    tokens = rng.uniform(5, 200, size=t)
    target = w * budget / tokens
    repeat = 10.0
    if target.sum() > (repeat * sizes).sum():
        return
    counts = example_counts(w, sizes, tokens, budget, repeat)
    assert counts.sum() == round(target.sum())
    assert (counts <= np.floor(repeat * sizes)).all()
    if (target < np.floor(repeat * sizes)).all():  # nothing at its limit: pure rounding
        assert (np.abs(counts - target) < 1.0).all()


def test_example_counts_rejects_non_distribution():
    with pytest.raises(InvalidInputError, match="distribution"):
        example_counts([0.5, 0.6], [10, 10], [1, 1], 100, 1)


def make_examples(task: str, n: int) -> list[Example]:
    return [Example(task=task, id=f"{task}-{i}", prompt=f"q{i}", choices=("a", "b"), correct=(0,))
            for i in range(n)]


def test_sample_mixture_counts_determinism_and_repeats():
    train = {"a": make_examples("a", 5), "b": make_examples("b", 40)}
    mixed = sample_mixture(train, {"a": 12, "b": 7}, seed=3)
    per_task = Counter(ex.task for ex in mixed)
    assert per_task == {"a": 12, "b": 7}
    ids_a = Counter(ex.id for ex in mixed if ex.task == "a")
    assert sorted(ids_a.values()) == [2, 2, 2, 3, 3]  # two whole passes + 2 sampled
    assert len({ex.id for ex in mixed if ex.task == "b"}) == 7  # no repeats below one pass
    again = sample_mixture(train, {"a": 12, "b": 7}, seed=3)
    assert [ex.id for ex in again] == [ex.id for ex in mixed]
    other = sample_mixture(train, {"a": 12, "b": 7}, seed=4)
    assert [ex.id for ex in other] != [ex.id for ex in mixed]


# ----------------------------------------------------------- common random numbers (crn)
POOL = {name: make_examples(name, size) for name, size in (("a", 7), ("b", 23), ("c", 40))}
counts_strategy = st.fixed_dictionaries({t: st.integers(0, 3 * len(POOL[t])) for t in POOL})


def is_subsequence(short: list[tuple[str, str]], long: list[tuple[str, str]]) -> bool:
    """Whether ``short`` appears in ``long`` in order (repeats count as separate entries)."""
    it = iter(long)
    return all(any(item == other for other in it) for item in short)


def keys(mixed: list[Example]) -> list[tuple[str, str]]:
    return [(ex.task, ex.id) for ex in mixed]


@settings(max_examples=150, deadline=None)
@given(counts_strategy, st.data(), st.integers(0, 10_000))
def test_crn_smaller_counts_are_a_subsequence_of_larger_ones(counts, data, seed):
    bigger = {t: n + data.draw(st.integers(0, 60), label=f"extra {t}") for t, n in counts.items()}
    small = sample_mixture(POOL, counts, seed)
    large = sample_mixture(POOL, bigger, seed)
    assert Counter(ex.task for ex in small) == {t: n for t, n in counts.items() if n}
    assert is_subsequence(keys(small), keys(large))


def test_the_subsequence_check_can_fail():
    assert not is_subsequence([("a", "1"), ("a", "2")], [("a", "2"), ("a", "1")])
    assert not is_subsequence([("a", "1"), ("a", "1")], [("a", "1")])
    # the independent sampler of version 1 shares almost nothing between two counts
    small = sample_mixture(POOL, {"a": 5, "b": 20, "c": 30}, 3, "independent")
    large = sample_mixture(POOL, {"a": 5, "b": 21, "c": 30}, 3, "independent")
    assert not is_subsequence(keys(small), keys(large))


@settings(max_examples=60, deadline=None)
@given(counts_strategy, st.integers(0, 10_000))
def test_crn_same_counts_and_seed_give_the_same_bytes(counts, seed):
    import json

    def dump(mixed: list[Example]) -> bytes:
        return json.dumps([[ex.task, ex.id, ex.prompt, ex.answer_text] for ex in mixed]).encode()

    assert dump(sample_mixture(POOL, counts, seed)) == dump(sample_mixture(POOL, counts, seed))


@settings(max_examples=60, deadline=None)
@given(counts_strategy, st.integers(0, 10_000))
def test_a_tasks_draw_ignores_the_other_tasks(counts, seed):
    """Adding or removing a task changes nothing of another task's draw or relative order."""
    full = sample_mixture(POOL, counts, seed)
    without_c = sample_mixture({t: POOL[t] for t in ("a", "b")},
                               {t: counts[t] for t in ("a", "b")}, seed)
    for task in ("a", "b"):
        assert ([k for k in keys(full) if k[0] == task]
                == [k for k in keys(without_c) if k[0] == task])
    assert [k for k in keys(full) if k[0] != "c"] == keys(without_c)


def test_crn_takes_whole_passes_first_and_spreads_every_task_over_the_order():
    mixed = sample_mixture(POOL, {"a": 16, "b": 23, "c": 10}, seed=5)
    a_ids = Counter(ex.id for ex in mixed if ex.task == "a")
    assert sorted(a_ids.values()) == [2, 2, 2, 2, 2, 3, 3]  # 16 = 2 passes of 7, then 2
    assert len({ex.id for ex in mixed if ex.task == "b"}) == 23  # exactly one pass
    # the keys order tasks independently of their counts: the 10 "c" entries are not
    # bunched at the start (they would be if the order key were also the position key)
    where = [i for i, ex in enumerate(mixed) if ex.task == "c"]
    assert max(where) > len(mixed) / 2
    assert sample_mixture(POOL, {"a": 16, "b": 23, "c": 10}, seed=6) != mixed


def test_crn_repeated_ids_in_a_pool_are_drawn_as_distinct_entries():
    twice = {"a": make_examples("a", 3) * 2}
    mixed = sample_mixture(twice, {"a": 6}, seed=0)
    assert Counter(ex.id for ex in mixed) == {"a-0": 2, "a-1": 2, "a-2": 2}


@settings(max_examples=50, deadline=None)
@given(counts_strategy, st.integers(0, 10_000))
def test_keyed_mixture_is_the_crn_set_with_its_ascending_keys(counts, seed):
    """The keys a crn-keyed training cuts by: one per entry, in [0, 1), ascending, each
    the entry's own (an entry keeps its key when other tasks' counts change)."""
    mixed, key_list = keyed_mixture(POOL, counts, seed)
    assert mixed == sample_mixture(POOL, counts, seed)
    assert len(key_list) == len(mixed) and key_list == sorted(key_list)
    assert all(0.0 <= k < 1.0 for k in key_list)
    more = {**counts, "c": counts["c"] + 5}
    mixed2, keys2 = keyed_mixture(POOL, more, seed)
    first = {}
    for ex, k in zip(mixed2, keys2, strict=True):
        first.setdefault((ex.task, ex.id), []).append(k)
    for ex, k in zip(mixed, key_list, strict=True):
        if ex.task != "c":
            assert k in first[(ex.task, ex.id)]


def test_unknown_sampler_and_missing_train_data_are_clear_errors():
    with pytest.raises(InvalidInputError, match="unknown sampler"):
        sample_mixture(POOL, {"a": 1}, 0, "bogus")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="no train data"):
        sample_mixture({"a": []}, {"a": 2}, 0)
