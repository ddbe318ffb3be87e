"""From normalized rows (or Arrow columns) to the selected examples of one task.

Loaders hand rows to a :class:`TaskBuilder`; it hashes them in batches,
ranks them and feeds the streaming :class:`~taskpgm.tasks.splits.Selector`.
Problems found in the source are collected by :class:`Problems` and raised
together, so a user fixes a file in one round instead of one line at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from taskpgm.errors import DataError
from taskpgm.tasks.formatting import MASK64, RS, US, canonical, example_id, prompt_key
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

    def add(self, where: str, message: str) -> None:
        self.count += 1
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
        more = f"\n  ... and {self.count - len(self.items)} more" if self.count > len(self.items) else ""
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
        self._canon: list[str] = []
        self._keys: list[int] = []

    def reset(self) -> None:
        """Forget everything added (a source is about to be read again from the start)."""
        self.kind = None
        self.selector = Selector(self.selector.keep)
        self._rows, self._canon, self._keys = [], [], []

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
        self._canon.append(canonical(self.task, prompt, ch, row[2], row[3]))
        self._keys.append(prompt_key(raw_prompt))
        if len(self._rows) >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Hash and offer the rows added since the last flush."""
        if not self._rows:
            return
        rows, canon = self._rows, self._canon
        digests = [xxhash.xxh3_128_intdigest(c.encode("utf-8")) for c in canon]
        low = np.fromiter((d & MASK64 for d in digests), dtype=np.uint64, count=len(digests))
        keys = np.array(self._keys, dtype=np.uint64)
        task = self.task

        def make(idx: list[int]) -> list[Example]:
            return [Example(task, example_id(digests[i]), rows[i][0], rows[i][1], rows[i][2],
                            rows[i][3]) for i in idx]

        self.selector.add(keys, ranks(low, self.seed), make)
        self._rows, self._canon, self._keys = [], [], []

    def add_arrow(
        self,
        kind: Kind,
        prompt: pa.Array,
        raw_prompt: pa.Array,
        choices: pa.Array | None,
        answer: pa.Array | None,
        target: pa.Array | None,
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
            joined = pc.binary_join(choices, US)
            canon = pc.binary_join_element_wise(task_col, prompt, joined,
                                                pc.cast(answer, pa.string()), RS)
        else:
            assert target is not None
            tjoined = pc.binary_join(target, US) if pa.types.is_list(target.type) or \
                pa.types.is_large_list(target.type) else target
            canon = pc.binary_join_element_wise(task_col, prompt, "", tjoined, RS)
        canon_b = canon.cast(pa.large_binary()).to_pylist()
        h128, h64 = xxhash.xxh3_128_intdigest, xxhash.xxh3_64_intdigest
        digests = [h128(c) for c in canon_b]
        low = np.fromiter((d & MASK64 for d in digests), dtype=np.uint64, count=n)
        keys = np.fromiter((h64(p) for p in raw_prompt.cast(pa.large_binary()).to_pylist()),
                           dtype=np.uint64, count=n)
        task = self.task

        def make(idx: list[int]) -> list[Example]:
            take = pa.array(idx, type=pa.int64())
            prompts = prompt.take(take).to_pylist()
            if kind == "mc":
                assert choices is not None and answer is not None
                chs = choices.take(take).to_pylist()
                ans = answer.take(take).to_pylist()
                return [Example(task, example_id(digests[i]), p, tuple(c), (a,))
                        for i, p, c, a in zip(idx, prompts, chs, ans, strict=True)]
            assert target is not None
            tg = target.take(take).to_pylist()
            return [Example(task, example_id(digests[i]), p, None, (),
                            tuple(t) if isinstance(t, list) else (t,))
                    for i, p, t in zip(idx, prompts, tg, strict=True)]

        self.selector.add(keys, ranks(low, self.seed), make)

    def finish(self) -> Selected:
        self.flush()
        return self.selector.finish()
