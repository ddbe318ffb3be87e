"""From normalized rows (or Arrow columns) to the selected examples of one task.

Loaders hand rows to a :class:`TaskBuilder`; it hashes them in batches,
ranks them and feeds the streaming :class:`~taskpgm.tasks.splits.Selector`.
Problems found in the source are collected by :class:`Problems` and raised
together, so a user fixes a file in one round instead of one line at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from taskpgm.errors import DataError
from taskpgm.tasks.formatting import RS, US, canonical, example_id, hash64, id_low, rest
from taskpgm.tasks.schema import Example, Kind
from taskpgm.tasks.splits import Selected, Selector, ranks

BATCH = 8192
MAX_LISTED = 20  # problems listed in one message; the rest are counted


class Problems:
    """Collects what is wrong with a source: ``where: what; how to fix``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[str] = []
        self.count = 0
        self.messages: set[str] = set()  # distinct messages, up to two (one: say it once)

    def add(self, where: str, message: str) -> None:
        self.count += 1
        if len(self.messages) < 2:
            self.messages.add(message)
        if len(self.items) < MAX_LISTED:
            self.items.append(f"{where}: {message}")

    def __bool__(self) -> bool:
        return self.count > 0

    def raise_if_any(self) -> None:
        """Raise one :class:`DataError` that lists every problem (the first 20 verbatim)."""
        if not self.count:
            return
        if self.count == 1:
            raise DataError(f"{self.source} {self.items[0]}")
        if len(self.messages) == 1:  # the same problem everywhere: one line
            first = self.items[0].split(": ", 1)[0]
            raise DataError(f"{self.source}: {self.count} records (from {first}): "
                            f"{next(iter(self.messages))}")
        left = self.count - len(self.items)
        more = f"\n  ... and {left} more" if left else ""
        listed = "\n  ".join(self.items)
        raise DataError(f"{self.source} has {self.count} problems:\n  {listed}{more}")


class TaskBuilder:
    """Hashes, ranks and selects the examples of one task as they stream by."""

    def __init__(self, task: str, keep: int | None, seed: int) -> None:
        self.task = task
        self.seed = seed
        self.kind: Kind | None = None
        self.selector = Selector(keep)
        self._rows: list[tuple[str, tuple[str, ...] | None, tuple[int, ...], tuple[str, ...]]] = []
        self._hashes: list[tuple[int, int]] = []  # (prompt hash, rest hash) per row
        self._keys: list[int] = []
        self._rest_cache: dict[str, int] = {}

    def reset(self) -> None:
        """Forget everything added (a source is about to be read again from the start)."""
        self.kind = None
        self.selector = Selector(self.selector.keep)
        self._rows, self._hashes, self._keys = [], [], []

    def check_kind(self, kind: Kind, where: str, problems: Problems) -> bool:
        """Fix the task's kind on the first row; a row of the other kind is a problem."""
        if self.kind is None:
            self.kind = kind
            return True
        if kind != self.kind:
            what = {"mc": "multiple choice (choices + answer)", "gen": "generative (target)"}
            problems.add(where, f"example is {what[kind]} but earlier ones are {what[self.kind]}; "
                                "a task must be all one kind: split it into two tasks")
            return False
        return True

    def add(
        self,
        prompt: str,
        raw_prompt: str,
        choices: Sequence[str] | None,
        correct: Sequence[int] = (),
        targets: Sequence[str] = (),
    ) -> None:
        """Add one validated example (``prompt`` formatted, ``raw_prompt`` as in the source)."""
        ch = tuple(choices) if choices is not None else None
        row = (prompt, ch, tuple(correct), tuple(targets))
        self._rows.append(row)
        text = rest(self.task, ch, row[2], row[3])
        rh = self._rest_cache.get(text)
        if rh is None:
            if len(self._rest_cache) > 65536:
                self._rest_cache.clear()
            rh = self._rest_cache[text] = hash64(text)
        self._hashes.append((hash64(prompt), rh))
        self._keys.append(hash64(raw_prompt) if raw_prompt != prompt else self._hashes[-1][0])
        if len(self._rows) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Hash and offer the rows added since the last flush."""
        if not self._rows:
            return
        rows = self._rows
        pairs = np.array(self._hashes, dtype=np.uint64).reshape(-1, 2)
        low = id_low(pairs[:, 0], pairs[:, 1])
        keys = np.array(self._keys, dtype=np.uint64)
        lows = low.tolist()
        task = self.task

        def take(idx: np.ndarray) -> _RowChunk:
            return _RowChunk(task, [(lows[i], *rows[i]) for i in idx.tolist()])

        self.selector.add(keys, ranks(low, self.seed), take)
        self._rows, self._hashes, self._keys = [], [], []

    def add_arrow(
        self,
        kind: Kind,
        prompt: pa.Array,
        raw_prompt: pa.Array,
        choices: pa.Array | None,
        answer: pa.Array | None,
        target: pa.Array | None,
        *,
        joined: pa.Array | None = None,
    ) -> None:
        """Add a batch of already validated Arrow columns (the fast path for tabular files).

        ``choices`` is ``list<string>`` and ``answer`` an integer column (multiple
        choice); ``target`` a string or ``list<string>`` column (generative).
        """
        self.flush()
        self.kind = kind
        n = len(prompt)
        if n == 0:
            return
        task_col = pa.scalar(self.task)
        if kind == "mc":
            assert choices is not None and answer is not None
            if joined is None:
                joined = pc.binary_join(choices, US)
            rest_col = pc.binary_join_element_wise(task_col, joined,
                                                   pc.cast(answer, pa.string()), RS)
        else:
            assert target is not None
            tjoined = pc.binary_join(target, US) if pa.types.is_list(target.type) or \
                pa.types.is_large_list(target.type) else target
            rest_col = pc.binary_join_element_wise(task_col, "", tjoined, RS)
        # Each distinct rest (list of choices + answer) is hashed once.
        encoded = rest_col.dictionary_encode()
        h64 = xxhash.xxh3_64_intdigest  # same as hash64, on the UTF-8 bytes directly
        distinct = np.fromiter(map(h64, _as_binary(encoded.dictionary).to_pylist()),
                               dtype=np.uint64, count=len(encoded.dictionary))
        rest_hash = distinct[encoded.indices.to_numpy(zero_copy_only=False)]
        prompt_hash = np.fromiter(map(h64, _as_binary(prompt).to_pylist()), dtype=np.uint64,
                                  count=n)
        keys = prompt_hash if raw_prompt is prompt else np.fromiter(
            map(h64, _as_binary(raw_prompt).to_pylist()), dtype=np.uint64, count=n)
        low = id_low(prompt_hash, rest_hash)
        columns = {"low": pa.array(low), "prompt": prompt}
        if kind == "mc":
            assert choices is not None and answer is not None
            columns.update(choices=choices, answer=answer)
        else:
            assert target is not None
            columns["target"] = target
        table = pa.table(columns)
        task = self.task
        self.selector.add(keys, ranks(low, self.seed),
                          lambda idx: _ArrowChunk(task, kind, table.take(pa.array(idx))))

    def finish(self) -> Selected:
        self.flush()
        return self.selector.finish()


class _RowChunk:
    """Candidate rows of the record path: (id low half, prompt, choices, correct, targets)."""

    def __init__(self, task: str, rows: list[tuple[Any, ...]]) -> None:
        self.task, self.rows = task, rows

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, rows: np.ndarray) -> _RowChunk:
        return _RowChunk(self.task, [self.rows[i] for i in rows.tolist()])

    def examples(self, rows: list[int]) -> list[Example]:
        out = []
        for i in rows:
            low, prompt, choices, correct, targets = self.rows[i]
            text = canonical(self.task, prompt, choices, correct, targets)
            out.append(Example(self.task, example_id(text, low), prompt, choices, correct,
                               targets))
        return out


class _ArrowChunk:
    """Candidate rows of the fast path, still as Arrow columns."""

    def __init__(self, task: str, kind: Kind, table: pa.Table) -> None:
        self.task, self.kind, self.table = task, kind, table

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def take(self, rows: np.ndarray) -> _ArrowChunk:
        return _ArrowChunk(self.task, self.kind, self.table.take(pa.array(rows)))

    def examples(self, rows: list[int]) -> list[Example]:
        part = self.table.take(pa.array(rows, type=pa.int64())).to_pydict()
        out = []
        if self.kind == "mc":
            for low, p, ch, a in zip(part["low"], part["prompt"], part["choices"],
                                     part["answer"], strict=True):
                choices, correct = tuple(ch), (a,)
                text = canonical(self.task, p, choices, correct, ())
                out.append(Example(self.task, example_id(text, low), p, choices, correct))
            return out
        for low, p, t in zip(part["low"], part["prompt"], part["target"], strict=True):
            targets = tuple(t) if isinstance(t, list) else (t,)
            text = canonical(self.task, p, None, (), targets)
            out.append(Example(self.task, example_id(text, low), p, None, (), targets))
        return out


def _as_binary(column: pa.Array) -> pa.Array:
    """The same bytes as a binary column (zero-copy), so ``to_pylist`` skips UTF-8 decoding."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.view(pa.large_binary() if pa.types.is_large_string(column.type)
                       else pa.binary())
