"""Deterministic train / probe / eval splits, chosen in one streaming pass.

Every example gets a *rank*: a 64-bit mix of its content id and the seed. The
examples of a task, after exact duplicate prompts are removed, are ordered by
rank; the first ``probe`` go to the probe split, the next ``eval`` to the eval
split and the rest, up to ``max_train``, to train. A split is therefore a
deterministic function of (example id, seed): it does not depend on the order
of the file, and adding examples to a task moves an existing example only if a
new one outranks it.

Only the best ranks are kept as :class:`Example` objects while streaming, so
memory is bounded by ``probe + eval + max_train`` examples plus 8 bytes per
source example (its prompt key, to count duplicates).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from taskpgm.errors import ConfigError, DataError
from taskpgm.tasks.schema import Example

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class SplitOptions(BaseModel):
    """How each task is split. Counts are examples; a value below 1 is a fraction of the task."""

    model_config = ConfigDict(extra="forbid")

    # Probe examples per task; every expert is scored on all of them, so cost grows with T × probe.
    probe: int | float = Field(100, ge=0)
    # Held-out examples per task for the final accuracy; more gives tighter intervals.
    eval: int | float = Field(200, ge=0)
    # Cap on train examples per task (None: keep all); bounds memory on huge tasks.
    max_train: int | None = Field(10_000, ge=0)
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
    if not options.shrink or distinct < 3:
        raise DataError(
            f"task {task!r} has {distinct} examples after removing duplicates, fewer than "
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
    seed_mix = _mix(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    return _mix(id_low64.astype(np.uint64) ^ seed_mix)


def _mix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@dataclass
class Selected:
    """What one streaming pass over a task kept: the best-ranked distinct examples."""

    examples: list[Example]  # distinct prompts, best rank first (at most ``keep`` of them)
    keys: list[int]  # prompt key of each kept example
    total: int  # valid examples in the source
    distinct: int  # distinct prompts among them
    all_keys: np.ndarray  # sorted unique prompt keys of the whole task (for leakage counts)


class Selector:
    """Keeps the ``keep`` best-ranked examples with distinct prompts while a task streams by.

    Of several examples with the same prompt key, the one with the smallest rank
    is kept, so the result does not depend on the order of the source.
    """

    def __init__(self, keep: int | None) -> None:
        self.keep = keep
        self._best: dict[int, tuple[int, Example]] = {}
        self._keys: list[np.ndarray] = []
        self._threshold = np.uint64(0xFFFFFFFFFFFFFFFF)
        self.total = 0

    def add(
        self,
        keys: np.ndarray,
        rank: np.ndarray,
        make: Callable[[list[int]], list[Example]],
    ) -> None:
        """Offer a batch: prompt keys, ranks and a function that builds the examples of rows."""
        self.total += len(keys)
        self._keys.append(keys.astype(np.uint64, copy=False))
        if self.keep == 0:
            return
        best = self._best
        rows = np.flatnonzero(rank <= self._threshold)
        wanted: dict[int, tuple[int, int]] = {}  # key -> (rank, row), best of this batch
        for i, key, r in zip(rows.tolist(), keys[rows].tolist(), rank[rows].tolist(), strict=True):
            old = best.get(key)
            mine = wanted.get(key)
            if (old is None or r < old[0]) and (mine is None or r < mine[0]):
                wanted[key] = (r, i)
        if wanted:
            built = make([i for _, i in wanted.values()])
            for (key, (r, _)), example in zip(wanted.items(), built, strict=True):
                best[key] = (r, example)
        if self.keep is not None and len(best) > 2 * self.keep + 1024:
            self._prune()

    def _prune(self) -> None:
        assert self.keep is not None
        ordered = sorted(self._best.items(), key=lambda kv: kv[1][0])[: self.keep]
        self._best = dict(ordered)
        if len(ordered) == self.keep:
            self._threshold = np.uint64(ordered[-1][1][0])

    def finish(self) -> Selected:
        """The kept examples in rank order, with the task's totals."""
        all_keys = np.unique(np.concatenate(self._keys)) if self._keys else np.zeros(0, np.uint64)
        ordered = sorted(self._best.items(), key=lambda kv: kv[1][0])
        if self.keep is not None:
            ordered = ordered[: self.keep]
        return Selected(
            examples=[ex for _, (_, ex) in ordered],
            keys=[k for k, _ in ordered],
            total=self.total,
            distinct=len(all_keys),
            all_keys=all_keys,
        )


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
