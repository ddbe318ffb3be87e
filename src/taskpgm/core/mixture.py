"""From weights to a training mixture: caps, baselines, example counts, the mixed set.

Everything here is a pure function of its arguments (no model, no I/O), so
each step can be tested against a hand computation:

* :func:`caps_from_budget` — the largest weight a task can take without repeating
  its training set more than ``max_repeat`` times: u_t = max_repeat · |train_t| · m_t / N,
  m_t the mean tokens of an example of t and N the token budget. These caps
  enter the MRF solve, so the solved weights are optimal under them.
* :func:`baseline_weights` — uniform, size-proportional (p ∝ n_t) and
  temperature-scaled size (p ∝ n_t^(1/τ)), brought under the same caps by
  :func:`apply_caps` (water-filling), so every method gets the same constraints.
* :func:`example_counts` — n_t as close as possible to p_t · N / m_t, rounded by
  largest remainder so the total is exactly round(Σ_t p_t N / m_t), never above
  max_repeat · |train_t|.
* :func:`sample_mixture` — the mixed training set, with common random numbers
  (``sampler="crn"``, the default): for a seed, each task's train examples get one
  fixed order and each copy of an example one fixed position key, both hashed from
  (seed, task, example id) alone. A task contributes the first n_t entries of its
  order repeated (whole passes first), and the mixed set is sorted by the keys. Two
  mixtures at one seed therefore share min(n_t, n'_t) examples of every task, in the
  same relative order: their difference is their weights, not their luck.
  ``sampler="independent"`` is the draw before sampler version 2 (one generator
  over the tasks in name order, then one shuffle), kept to reproduce old results.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from taskpgm.errors import InfeasibleError, InvalidInputError
from taskpgm.tasks.schema import Example

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

Baseline = Literal["uniform", "size", "temperature"]
Sampler = Literal["crn", "crn-keyed", "independent"]

#: The version of the mixed-set draw; it enters the mixture and evaluation fingerprints.
#: 1: independent draws and one shuffle; 2: common random numbers (crn), trained in key
#: order with batches regrouped by length; 3: the same draw, each training batch a fixed
#: range of keys (crn-keyed: see :func:`taskpgm.trainer.keyed_batches`).
SAMPLER_VERSION = {"independent": 1, "crn": 2, "crn-keyed": 3}


def _positive(values: Sequence[float] | FloatArray, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise InvalidInputError(f"{name} must be a non-empty list of numbers, got {arr.shape}")
    if not np.isfinite(arr).all() or (arr <= 0).any():
        i = int(np.argmax(~np.isfinite(arr) | (arr <= 0)))
        raise InvalidInputError(f"{name}[{i}] = {arr[i]} must be a positive number")
    return arr


def caps_from_budget(
    train_sizes: Sequence[int], mean_tokens: Sequence[float], token_budget: float, max_repeat: float
) -> FloatArray:
    """Per-task weight caps u_t = max_repeat · |train_t| · m_t / N (may exceed 1).

    Raises:
        InfeasibleError: the caps sum below 1: the tasks cannot fill the token
            budget without repeating some training set more than ``max_repeat`` times.
    """
    sizes = _positive(train_sizes, "train_sizes")
    tokens = _positive(mean_tokens, "mean_tokens")
    if sizes.shape != tokens.shape:
        raise InvalidInputError("train_sizes and mean_tokens must have the same length")
    if not token_budget > 0:
        raise InvalidInputError(f"token_budget must be positive, got {token_budget}")
    if not max_repeat > 0:
        raise InvalidInputError(f"max_repeat must be positive, got {max_repeat}")
    caps: FloatArray = max_repeat * sizes * tokens / float(token_budget)
    available = float((sizes * tokens).sum())
    if caps.sum() < 1.0:
        raise InfeasibleError(
            f"the token budget {token_budget:,.0f} cannot be filled: all training sets together "
            f"hold {available:,.0f} tokens, {max_repeat:g}x that is "
            f"{max_repeat * available:,.0f}; lower mixture.token_budget or raise "
            "mrf.max_repeat (or add training data)"
        )
    return caps


def apply_caps(weights: Sequence[float] | FloatArray, caps: Sequence[float] | FloatArray | None
               ) -> FloatArray:
    """Bring weights under caps by water-filling: cut at the cap, spread the excess
    over the uncapped tasks in proportion to their weights, repeat.

    Used for the baselines (TaskPGM puts the caps into its solve instead).
    """
    w = np.asarray(weights, dtype=np.float64).copy()
    if caps is None:
        out: FloatArray = w / w.sum()
        return out
    c = np.asarray(caps, dtype=np.float64)
    if c.sum() < 1.0 - 1e-12:
        raise InfeasibleError(f"caps sum to {c.sum():.6g} < 1: no mixture fits under them")
    w = w / w.sum()
    for _ in range(w.size + 1):
        over = w > c
        if not over.any():
            break
        excess = float((w[over] - c[over]).sum())
        w[over] = c[over]
        room = ~over & (w < c)
        base = w[room].sum()
        if base > 0:
            w[room] += excess * w[room] / base
        else:
            w[room] += excess / int(room.sum())
    capped: FloatArray = w
    return capped


def baseline_weights(
    kind: Baseline, train_sizes: Sequence[int], *, tau: float = 2.0,
    caps: Sequence[float] | FloatArray | None = None,
) -> FloatArray:
    """Weights of a baseline mixture, under the same caps as TaskPGM.

    * ``uniform``: p_t = 1 / T.
    * ``size``: p_t ∝ |train_t|.
    * ``temperature``: p_t ∝ |train_t|^(1/τ) (τ = 1 is ``size``, τ → ∞ is ``uniform``).
    """
    sizes = _positive(train_sizes, "train_sizes")
    if kind == "uniform":
        raw = np.ones_like(sizes)
    elif kind == "size":
        raw = sizes
    elif kind == "temperature":
        if not tau > 0:
            raise InvalidInputError(f"temperature tau must be positive, got {tau}")
        raw = sizes ** (1.0 / tau)
    else:
        raise InvalidInputError(f"unknown baseline {kind!r}; choose uniform, size or temperature")
    return apply_caps(raw / raw.sum(), caps)


def example_counts(
    weights: Sequence[float] | FloatArray,
    train_sizes: Sequence[int],
    mean_tokens: Sequence[float],
    token_budget: float,
    max_repeat: float,
) -> IntArray:
    """Per-task example counts that realize the weights under the token budget.

    Target t_t = p_t · N / m_t examples. The total K = round(Σ_t t_t) is met
    exactly: every task gets ⌊t_t⌋, then the K − Σ⌊t_t⌋ tasks with the largest
    remainders t_t − ⌊t_t⌋ get one more (ties to the lower index). No count
    exceeds ⌊max_repeat · |train_t|⌋; a task at that limit passes its share on
    by the same rule.
    """
    w = np.asarray(weights, dtype=np.float64)
    sizes = _positive(train_sizes, "train_sizes")
    tokens = _positive(mean_tokens, "mean_tokens")
    if not (w.shape == sizes.shape == tokens.shape):
        raise InvalidInputError("weights, train_sizes and mean_tokens must have the same length")
    if (w < -1e-12).any() or abs(float(w.sum()) - 1.0) > 1e-6:
        raise InvalidInputError(f"weights must be a distribution (>= 0, sum 1), sum is {w.sum()}")
    limit = np.floor(max_repeat * sizes + 1e-9).astype(np.int64)
    target = np.clip(w, 0.0, None) * float(token_budget) / tokens
    total = round(float(target.sum()))
    if total > int(limit.sum()):
        raise InfeasibleError(
            f"{total} examples are needed but max_repeat={max_repeat:g} allows {int(limit.sum())}"
        )
    counts = np.minimum(np.floor(target).astype(np.int64), limit)
    remainder = np.where(counts < limit, target - counts, -np.inf)
    while counts.sum() < total:
        need = total - int(counts.sum())
        order = np.lexsort((np.arange(w.size), -remainder))
        open_slots = [i for i in order if counts[i] < limit[i]][:need]
        if not open_slots:  # pragma: no cover - excluded by the check above
            break
        counts[open_slots] += 1
        remainder[open_slots] = np.where(counts[open_slots] < limit[open_slots], -1.0, -np.inf)
    return counts


def _unit(seed: int, task: str, ident: str, salt: str) -> float:
    """A uniform number in [0, 1) that depends on (seed, task, example id, salt) only."""
    digest = hashlib.blake2b(f"{seed}\x1f{task}\x1f{ident}\x1f{salt}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _idents(pool: Sequence[Example]) -> list[str]:
    """Each example's id, with ``#k`` for its k-th repeat when a pool holds an id twice."""
    seen: dict[str, int] = {}
    out = []
    for ex in pool:
        k = seen.get(ex.id, 0)
        seen[ex.id] = k + 1
        out.append(ex.id if k == 0 else f"{ex.id}#{k}")
    return out


def task_order(pool: Sequence[Example], task: str, seed: int) -> list[int]:
    """The fixed order of a task's train examples at ``seed``: indices into ``pool`` sorted
    by a hash of (seed, task, example id), so it is the same whatever else is mixed."""
    return _order(_idents(pool), task, seed)


def _order(ids: Sequence[str], task: str, seed: int) -> list[int]:
    return sorted(range(len(ids)), key=lambda i: (_unit(seed, task, ids[i], "order"), i))


def keyed_draw(pool: Sequence[Example], task: str, n: int, seed: int
               ) -> list[tuple[float, Example]]:
    """The first ``n`` entries of the task's order repeated, each with its position key.

    Entry j is pass r = j // |pool| over the order; its key hashes (seed, task, example
    id, r), so the keys of a task's first n entries do not depend on n, on the other tasks
    or on the method.
    """
    ids = _idents(pool)
    order = _order(ids, task, seed)
    out = []
    for j in range(n):
        passes, i = divmod(j, len(pool))
        k = order[i]
        out.append((_unit(seed, task, ids[k], f"key{passes}"), pool[k]))
    return out


def sample_mixture(
    train: Mapping[str, Sequence[Example]], counts: Mapping[str, int], seed: int,
    sampler: Sampler = "crn",
) -> list[Example]:
    """The mixed training set: ``counts[t]`` examples of each task, in a seeded order.

    ``crn`` (see the module docstring): each task's first ``counts[t]`` entries of its
    fixed order (whole passes first), ordered by their position keys. For counts c ≤ c'
    elementwise, the set of c is a subsequence of the set of c', in the same order.
    ``independent``: whole passes, a seeded sample without replacement for the rest,
    then one shuffle of everything (sampler version 1). Either way the result depends
    only on (train splits, counts, seed, sampler).
    """
    if sampler not in SAMPLER_VERSION:
        raise InvalidInputError(f"unknown sampler {sampler!r}; choose one of "
                                f"{', '.join(sorted(SAMPLER_VERSION))}")
    for name in sorted(counts):
        if int(counts[name]) > 0 and not train.get(name):
            raise InvalidInputError(
                f"task {name!r} has {int(counts[name])} examples in the mixture but no "
                "train data")
    if sampler == "independent":
        return _sample_independent(train, counts, seed)
    return keyed_mixture(train, counts, seed)[0]


def keyed_mixture(train: Mapping[str, Sequence[Example]], counts: Mapping[str, int], seed: int
                  ) -> tuple[list[Example], list[float]]:
    """The common-random-numbers mixed set and each entry's position key (ascending).

    Returns:
        ``(examples, keys)``: what :func:`sample_mixture` gives with ``crn``, and the key
        in [0, 1) of each entry, which a ``crn-keyed`` training cuts its batches by.
    """
    keyed: list[tuple[float, str, int, Example]] = []
    for name in sorted(counts):
        n = int(counts[name])
        if n > 0:
            keyed.extend((key, name, j, ex)
                         for j, (key, ex) in enumerate(keyed_draw(train[name], name, n, seed)))
    keyed.sort(key=lambda entry: entry[:3])
    return [ex for *_, ex in keyed], [key for key, *_ in keyed]


def _sample_independent(train: Mapping[str, Sequence[Example]], counts: Mapping[str, int],
                        seed: int) -> list[Example]:
    rng = np.random.default_rng(seed)
    mixed: list[Example] = []
    for name in sorted(counts):
        n = int(counts[name])
        if n == 0:
            continue
        pool = list(train[name])
        passes, rest = divmod(n, len(pool))
        mixed.extend(pool * passes)
        mixed.extend(pool[i] for i in sorted(rng.choice(len(pool), size=rest, replace=False)))
    order = rng.permutation(len(mixed))
    return [mixed[i] for i in order]


__all__ = [
    "apply_caps",
    "baseline_weights",
    "caps_from_budget",
    "example_counts",
    "keyed_draw",
    "keyed_mixture",
    "sample_mixture",
    "task_order",
]
