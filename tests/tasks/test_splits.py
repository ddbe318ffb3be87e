from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskpgm.errors import ConfigError, DataError
from taskpgm.tasks import load_collection, load_task
from taskpgm.tasks.schema import Example
from taskpgm.tasks.splits import Selector, SplitOptions, ranks, split_sizes

from .conftest import mc_records, write_jsonl


def _ids(examples: tuple[Example, ...]) -> list[str]:
    return [e.id for e in examples]


def test_splits_are_a_function_of_ids_and_seed_not_file_order(tmp_path: Path, home: Path):
    records = mc_records(600)
    a = write_jsonl(tmp_path / "t.jsonl", records)
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    b = write_jsonl(tmp_path / "u.jsonl", shuffled)
    x = load_task(str(a), name="t")
    y = load_task(str(b), name="t")
    assert _ids(x.probe) == _ids(y.probe) and _ids(x.eval) == _ids(y.eval)
    assert sorted(_ids(x.train)) == sorted(_ids(y.train))
    z = load_task(str(a), name="t", seed=1)
    assert set(_ids(z.probe)) != set(_ids(x.probe))
    assert (len(x.probe), len(x.eval), len(x.train)) == (100, 200, 300)


def test_accounting_identity_with_duplicates_and_cap(tmp_path: Path, home: Path):
    records = mc_records(700)
    records += [dict(r, answer=(r["answer"] + 1) % 4) for r in records[:50]]  # same prompts
    path = write_jsonl(tmp_path / "t.jsonl", records)
    t = load_task(str(path), max_train=100)
    assert t.examples == 750 and t.duplicates_dropped == 50
    assert (len(t.train), t.capped) == (100, 300)
    total = len(t.train) + len(t.probe) + len(t.eval) + t.duplicates_dropped + t.leaked_dropped
    assert total + t.capped == t.examples
    u = load_task(str(path), max_train=None)
    assert len(u.train) + 300 + 50 == 750 and u.capped == 0
    # The capped train split is a prefix (by rank) of the uncapped one.
    assert set(_ids(t.train)) <= set(_ids(u.train))


def test_disjoint_splits_and_prompts(tmp_path: Path, home: Path):
    t = load_task(str(write_jsonl(tmp_path / "t.jsonl", mc_records(1000))), max_train=None)
    prompts = [e.prompt for e in (*t.train, *t.probe, *t.eval)]
    assert len(prompts) == len(set(prompts)) == 1000


def test_fractions_and_shrink(tmp_path: Path, home: Path):
    path = write_jsonl(tmp_path / "t.jsonl", mc_records(100))
    t = load_task(str(path), probe=0.1, eval=0.2, max_train=None)
    assert (len(t.probe), len(t.eval), len(t.train)) == (10, 20, 70)
    small = load_task(str(path))  # 100 < 2 × 300: shrink to half the task
    assert (len(small.probe), len(small.eval), len(small.train)) == (16, 33, 51)
    with pytest.raises(DataError, match=r"has 100 examples .* fewer than probe \+ eval need"):
        load_task(str(path), shrink=False)
    assert split_sizes(600, SplitOptions(), task="x") == (100, 200)


def test_bad_split_options():
    with pytest.raises(ConfigError):
        load_collection(["x.jsonl"], probe=0.6, eval=0.5)
    with pytest.raises(ValueError):
        SplitOptions(probe=2.5)
    with pytest.raises(ValueError):
        SplitOptions(typo=1)  # type: ignore[call-arg]


def test_ranks_depend_on_seed_and_spread():
    ids = np.arange(10_000, dtype=np.uint64)
    r0, r1 = ranks(ids, 0), ranks(ids, 1)
    assert not np.array_equal(np.argsort(r0), np.argsort(r1))
    # Roughly uniform: each quarter of the 64-bit range gets about a quarter.
    quarters = np.bincount((r0 >> np.uint64(62)).astype(np.int64), minlength=4)
    assert quarters.min() > 2300


class _Chunk:
    def __init__(self, items: list[tuple[int, int]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def take(self, rows: np.ndarray) -> _Chunk:
        return _Chunk([self.items[i] for i in rows.tolist()])

    def examples(self, rows: list[int]) -> list[Example]:
        return [Example("t", str(self.items[i]), str(self.items[i][0])) for i in rows]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 2**64 - 1)), min_size=0, max_size=300),
    st.integers(1, 40),
    st.integers(1, 50),
)
def test_selector_matches_brute_force(rows, keep, batch):
    """Oracle: the best rank per prompt key, then the `keep` best ranks, in rank order."""
    rows = list({r: (k, r) for k, r in rows}.values())  # ranks are unique in practice
    sel = Selector(keep)
    for start in range(0, len(rows), batch):
        part = rows[start:start + batch]
        keys = np.array([k for k, _ in part], dtype=np.uint64)
        rank = np.array([r for _, r in part], dtype=np.uint64)
        sel.add(keys, rank, lambda idx, part=part: _Chunk(part).take(idx))
    out = sel.finish()
    best: dict[int, int] = {}
    for k, r in rows:
        best[k] = min(r, best.get(k, r))
    expected = sorted(best.items(), key=lambda kv: kv[1])[:keep]
    assert out.keys == [k for k, _ in expected]
    assert [e.id for e in out.examples] == [str((k, r)) for k, r in expected]
    assert out.distinct == len(best) and out.total == len(rows)


def test_cross_task_leakage_removed_from_train(tmp_path: Path, home: Path):
    a = write_jsonl(tmp_path / "a.jsonl", mc_records(700))
    b = write_jsonl(tmp_path / "b.jsonl", mc_records(700)[:400] + mc_records(300, prefix="B"))
    ta, tb = load_collection([str(a), str(b)], max_train=None)
    held_a = {e.prompt for e in (*ta.probe, *ta.eval)}
    held_b = {e.prompt for e in (*tb.probe, *tb.eval)}
    assert not {e.prompt for e in ta.train} & held_b
    assert not {e.prompt for e in tb.train} & held_a
    assert ta.leaked_dropped > 0 and tb.leaked_dropped > 0
    for t in (ta, tb):
        assert len(t.train) + len(t.probe) + len(t.eval) + t.duplicates_dropped \
            + t.leaked_dropped == t.examples
    # With a cap the leaked prompts are still replaced by other candidates.
    ca, cb = load_collection([str(a), str(b)], max_train=50)
    assert len(ca.train) == len(cb.train) == 50
    assert not {e.prompt for e in cb.train} & held_a
