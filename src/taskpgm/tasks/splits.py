"""Deterministic train / probe / eval splits, chosen in one streaming pass.

Every example gets a *rank*: a 64-bit mix of its content id and the seed. The
examples of a task, after exact duplicate prompts are removed, are ordered by
rank; the first ``probe`` go to the probe split, the next ``eval`` to the eval
split and the rest, up to ``max_train``, to train. A split is therefore a
deterministic function of (example id, seed): it does not depend on the order
of the file, and adding examples to a task moves an existing example only if a
new one outranks it.

Only the best ranks are kept while streaming (and only the final ones become
:class:`Example` objects), so
memory is bounded by ``probe + eval + max_train`` examples plus 8 bytes per
source example (its prompt key, to count duplicates).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from taskpgm.errors import ConfigError, DataError
from taskpgm.tasks.schema import Example

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class SplitOptions(BaseModel):
    """How each task is split. Counts are examples; a value below 1 is a fraction of the task."""

    model_config = ConfigDict(extra="forbid")

    # Probe examples per task; every expert is scored on all of them, so cost grows with T × probe.
    probe: int | float = Field(default=100, ge=0)
    # Held-out examples per task for the final accuracy; more gives tighter intervals.
    eval: int | float = Field(default=200, ge=0)
    # Cap on train examples per task (None: keep all); bounds memory on huge tasks.
    max_train: int | None = Field(default=10_000, ge=0)
    # Seed of the split; change it to draw other splits of the same data.
    seed: int = 0
    # With counts: a task with fewer than 2 × (probe + eval) examples gets proportionally
    # smaller probe / eval splits so half of it stays for training. False: exact or an error.
    shrink: bool = True

    @model_validator(mode="after")
    def _check(self) -> SplitOptions:
        for name in ("probe", "eval"):
            value = getattr(self, name)
            if isinstance(value, float) and not value.is_integer() and value >= 1:
                raise ValueError(f"{name}={value}: use a whole count or a fraction below 1")
        fractions = [v for v in (self.probe, self.eval) if _is_fraction(v)]
        if sum(fractions) >= 1:
            raise ValueError("probe + eval fractions must leave something for train (sum < 1)")
        return self

    @property
    def uses_fractions(self) -> bool:
        return _is_fraction(self.probe) or _is_fraction(self.eval)

    def keep(self) -> int | None:
        """How many of the best-ranked distinct examples a task needs (None: all of them)."""
        if self.uses_fractions or self.max_train is None:
            return None
        return int(self.probe) + int(self.eval) + self.max_train


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        out: np.ndarray = z ^ (z >> np.uint64(31))
        return out


def _is_fraction(value: int | float) -> bool:
    return isinstance(value, float) and 0 < value < 1


def split_sizes(distinct: int, options: SplitOptions, *, task: str) -> tuple[int, int]:
    """Probe and eval sizes for a task with ``distinct`` examples after deduplication.

    Raises:
        DataError: the task is too small for the requested splits.
    """
    if options.uses_fractions:
        probe = _resolve(options.probe, distinct)
        evals = _resolve(options.eval, distinct)
        return probe, evals
    probe, evals = int(options.probe), int(options.eval)
    need = probe + evals
    if need <= distinct and (not options.shrink or 2 * need <= distinct):
        return probe, evals
    if options.shrink and distinct < 3:
        raise DataError(
            f"task {task} has only {distinct} distinct example(s); a task needs at least 3 "
            "(one each for probe, eval and train) — add examples to the task")
    if not options.shrink:
        raise DataError(
            f"task {task} has {distinct} examples after removing duplicates, fewer than "
            f"probe + eval need ({probe} + {evals} = {need}"
            + (", plus at least one for train" if options.shrink else "")
            + "); lower --probe/--eval, give them as fractions (e.g. --probe 0.2), "
            "or add examples to the task"
        )
    # Shrink in proportion so that probe + eval take at most half of the task.
    scale = distinct / (2 * need)
    return max(1, math.floor(probe * scale)), max(1, math.floor(evals * scale))


def _resolve(value: int | float, total: int) -> int:
    return round(value * total) if _is_fraction(value) else int(value)


def ranks(id_low64: np.ndarray, seed: int) -> np.ndarray:
    """The rank of each example: splitmix64 of its id's low 64 bits mixed with the seed.

    ``rank = mix(id ^ mix(seed))`` with mix the splitmix64 finalizer
    ``z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31``.
    Every seed gives an independent-looking order of the same ids.
    """
    seed_mix = mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    return mix64(id_low64.astype(np.uint64) ^ seed_mix)


@dataclass
class Selected:
    """What one streaming pass over a task kept: the best-ranked distinct examples."""

    examples: list[Example]  # distinct prompts, best rank first (at most ``keep`` of them)
    keys: list[int]  # prompt key of each kept example
    total: int  # valid examples in the source
    distinct: int  # distinct prompts among them
    all_keys: np.ndarray  # sorted unique prompt keys of the whole task (for leakage counts)


class Chunk(Protocol):
    """Rows kept from one batch, not yet turned into :class:`Example` objects."""

    def __len__(self) -> int:
        """Number of rows held."""

    def take(self, rows: np.ndarray) -> Chunk:
        """The sub-chunk of ``rows`` (indices into this chunk)."""

    def examples(self, rows: list[int]) -> list[Example]:
        """Build the examples of ``rows`` (indices into this chunk)."""


class Selector:
    """Keeps the ``keep`` best-ranked examples with distinct prompts while a task streams by.

    Of several examples with the same prompt key, the one with the smallest rank
    is kept, so the result does not depend on the order of the source.
    Candidates stay in their batch's compact form (``Chunk``) and only the final
    ``keep`` become :class:`Example` objects.
    """

    def __init__(self, keep: int | None) -> None:
        self.keep = keep
        self._keys: list[np.ndarray] = []
        self._threshold = np.uint64(0xFFFFFFFFFFFFFFFF)
        self._rank = np.zeros(0, np.uint64)
        self._key = np.zeros(0, np.uint64)
        self._chunk = np.zeros(0, np.int64)
        self._row = np.zeros(0, np.int64)
        self._chunks: dict[int, Chunk] = {}
        self._next = 0
        self.total = 0

    def add(self, keys: np.ndarray, rank: np.ndarray, take: Callable[[np.ndarray], Chunk]
            ) -> None:
        """Offer a batch: prompt keys, ranks and a function that keeps some of its rows."""
        self.total += len(keys)
        keys = keys.astype(np.uint64, copy=False)
        self._keys.append(keys)
        if self.keep == 0:
            return
        rows = np.flatnonzero(rank <= self._threshold)
        if self.keep is not None and len(rows) > self.keep:
            # Only the batch's `keep` best ranks can matter, unless some of them share a prompt.
            top = rows[np.argpartition(rank[rows], self.keep - 1)[: self.keep]]
            if len(_sorted_unique(keys[top])) == len(top):
                rows = top
        if len(rows) == 0:
            return
        rows = np.sort(rows)
        cid = self._next
        self._next += 1
        self._chunks[cid] = take(rows)
        self._rank = np.concatenate([self._rank, rank[rows]])
        self._key = np.concatenate([self._key, keys[rows]])
        self._chunk = np.concatenate([self._chunk, np.full(len(rows), cid)])
        self._row = np.concatenate([self._row, np.arange(len(rows))])
        if self.keep is not None and len(self._rank) > 2 * self.keep + 1024:
            self._compact()

    def _compact(self) -> None:
        """Keep the best rank per prompt key, then the ``keep`` best ranks; drop the rest."""
        order = np.lexsort((self._rank, self._key))
        first = np.ones(len(order), dtype=bool)
        first[1:] = self._key[order][1:] != self._key[order][:-1]
        alive = order[first]
        if self.keep is not None and len(alive) > self.keep:
            alive = alive[np.argpartition(self._rank[alive], self.keep - 1)[: self.keep]]
        alive = alive[np.argsort(self._rank[alive], kind="stable")]
        self._rank, self._key = self._rank[alive], self._key[alive]
        self._chunk, self._row = self._chunk[alive], self._row[alive]
        if self.keep is not None and len(alive) == self.keep:
            self._threshold = self._rank[-1]
        # Free chunks without live rows; shrink chunks that are mostly dead.
        live: dict[int, list[int]] = {}
        for i, c in enumerate(self._chunk.tolist()):
            live.setdefault(c, []).append(i)
        for cid in list(self._chunks):
            if cid not in live:
                del self._chunks[cid]
        for cid, where in live.items():
            rows = self._row[where]
            chunk = self._chunks[cid]
            if len(rows) * 4 < _size(chunk):
                order_rows = np.argsort(rows)
                self._chunks[cid] = chunk.take(rows[order_rows])
                new_rows = np.empty(len(rows), np.int64)
                new_rows[order_rows] = np.arange(len(rows))
                self._row[where] = new_rows

    def finish(self) -> Selected:
        """The kept examples in rank order, with the task's totals."""
        every = np.concatenate(self._keys) if self._keys else np.zeros(0, np.uint64)
        self._keys = []
        all_keys = _sorted_unique(every, in_place=True)
        del every
        self._compact()
        by_chunk: dict[int, list[int]] = {}
        for i, c in enumerate(self._chunk.tolist()):
            by_chunk.setdefault(c, []).append(i)
        examples: list[Example | None] = [None] * len(self._rank)
        for cid, where in by_chunk.items():
            built = self._chunks[cid].examples(self._row[where].tolist())
            for i, ex in zip(where, built, strict=True):
                examples[i] = ex
        return Selected(
            examples=[ex for ex in examples if ex is not None],
            keys=self._key.tolist(),
            total=self.total,
            distinct=len(all_keys),
            all_keys=all_keys,
        )


def _size(chunk: Chunk) -> int:
    return len(chunk)


def check_options(options: SplitOptions | dict[str, object] | None) -> SplitOptions:
    """Accept a :class:`SplitOptions`, a plain mapping or ``None`` (defaults)."""
    if options is None:
        return SplitOptions()
    if isinstance(options, SplitOptions):
        return options
    try:
        return SplitOptions.model_validate(options)
    except ValueError as err:
        raise ConfigError(f"invalid split options: {err}") from err


def _sorted_unique(values: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """``np.unique`` by sorting (faster than hashing for 64-bit keys)."""
    if in_place:
        values.sort()
    else:
        values = np.sort(values)
    if len(values) == 0:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]
