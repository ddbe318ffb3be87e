"""What each model predicts on the probe set, as the arrays the relations need.

Reads a signals artifact (raw log-likelihoods, no model) and derives, for the
base model (row 0) and every expert (row i+1):

* the **choice distribution** of each multiple-choice example x with choices
  k = 1..C_x: q(k | x) = softmax_k(ℓ(x, k) / n(x, k)^β), β = 0 (``plain``) or
  β = 1 (``length``: per-token normalized, which removes the base model's bias
  towards short choices);
* the **answer-position distributions** of each generative example: at each
  answer position, the tokens in every model's top-k (their common part) plus
  one bucket for the rest. Merging outcomes can only shrink a divergence, so
  the JSD computed from them is a lower bound of the true one;
* the **gold log-likelihood** used by the transfer PMI: log q(y | x) under the
  choice distribution for multiple choice (n = 1), the sum over answer tokens
  ℓ(x) for generative examples (n = number of answer tokens);
* **correctness**: argmax of the choice distribution is a correct choice
  (multiple choice), or the target is the greedy continuation at every
  position (generative).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from taskpgm.errors import DataError
from taskpgm.readers import model_keys

if TYPE_CHECKING:
    from taskpgm.readers import Signals

Normalization = Literal["plain", "length"]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class ProbePredictions:
    """Probe-set predictions of M models (base first), N examples of T tasks.

    Attributes:
        models: model keys, ``"base"`` then ``"expert:<task>"``.
        tasks: the T task names, in expert order.
        task_of: (N,) task index of each probe example.
        loglik: (M, N) gold log-likelihood (see the module docstring).
        tokens: (N,) its normalizer n(x).
        correct: (M, N) whether each model gets each example right.
        rows: (M, R, C) distributions: one row per multiple-choice example and
            one per generative answer position, padded with zeros.
        row_weights: (R,) so each probe example weighs 1/N in total.
        row_example: (R,) the probe example of each row (None when not recorded).
    """

    models: list[str]
    tasks: list[str]
    task_of: NDArray[np.int64]
    loglik: FloatArray
    tokens: FloatArray
    correct: NDArray[np.bool_]
    rows: FloatArray
    row_weights: FloatArray
    row_example: NDArray[np.int64] | None = None

    def only_tasks(self, n: int) -> ProbePredictions:
        """The predictions on the examples of the first ``n`` tasks only (the pool, when
        target tasks follow it), rows and row weights renormalized to those examples."""
        return self.only_examples(self.task_of < n, n_tasks=n)

    def only_examples(self, keep: NDArray[np.bool_], n_tasks: int | None = None
                      ) -> ProbePredictions:
        """The predictions on the examples where ``keep`` holds (the first ``n_tasks``
        tasks kept), rows and row weights renormalized to those examples."""
        new_index = np.cumsum(keep) - 1
        assert self.row_example is not None
        rows = keep[self.row_example]
        w = self.row_weights[rows]
        tasks = self.tasks if n_tasks is None else self.tasks[:n_tasks]
        return ProbePredictions(self.models, tasks, self.task_of[keep],
                                self.loglik[:, keep], self.tokens[keep], self.correct[:, keep],
                                self.rows[:, rows], w / w.sum(),
                                new_index[self.row_example[rows]].astype(np.int64))

    def accuracy(self) -> FloatArray:
        """(M, T): accuracy of each model on each task's probe examples."""
        t = len(self.tasks)
        counts = np.bincount(self.task_of, minlength=t).astype(np.float64)
        out = np.stack([np.bincount(self.task_of, weights=c.astype(np.float64), minlength=t)
                        for c in self.correct])
        acc: FloatArray = out / np.maximum(counts, 1.0)
        return acc


def _softmax(x: FloatArray) -> FloatArray:
    z = x - x.max()
    e = np.exp(z)
    out: FloatArray = e / e.sum()
    return out


def from_arrays(
    probe: Mapping[str, Sequence[str] | Sequence[int]],
    shards: Mapping[str, Mapping[str, np.ndarray]],
    models: Sequence[str],
    tasks: Sequence[str],
    *,
    normalization: Normalization = "plain",
    correct_sets: Sequence[Sequence[int]] | None = None,
) -> ProbePredictions:
    """Build the predictions from a probe manifest and per-model shards.

    Args:
        probe: ``{"tasks": [...], "kinds": ["mc"|"gen", ...], "gold": [...]}``, one
            entry per probe example in order (the signals manifest's ``probe``).
        shards: per model key the arrays of :func:`taskpgm.signals.score`.
        models: model keys in order, base first.
        tasks: task names in expert order.
        normalization: ``plain`` or ``length`` choice distributions.
        correct_sets: per example every correct choice index (default: the gold one).
    """
    if normalization not in ("plain", "length"):
        raise DataError(f"unknown choice normalization {normalization!r}; use plain or length")
    task_names = [str(t) for t in probe["tasks"]]
    kinds = [str(k) for k in probe["kinds"]]
    gold = [int(g) for g in probe["gold"]]
    n = len(task_names)
    index = {t: i for i, t in enumerate(tasks)}
    unknown = sorted(set(task_names) - set(index))
    if unknown:
        raise DataError(f"the probe set has examples of tasks without an expert: {unknown}")
    task_of = np.array([index[str(t)] for t in task_names], dtype=np.int64)
    m = len(models)
    loglik = np.zeros((m, n))
    tokens = np.ones(n)
    correct = np.zeros((m, n), dtype=bool)
    mc = [i for i in range(n) if kinds[i] == "mc"]
    gen = [i for i in range(n) if kinds[i] != "mc"]
    first = shards[models[0]]
    width = max([int(first["choice_offsets"][i + 1] - first["choice_offsets"][i]) for i in mc],
                default=1)
    pos_off = first["position_offsets"]
    n_pos = {i: int(pos_off[i + 1] - pos_off[i]) for i in gen}
    k_plus = (first["topk_ids"].shape[1] + 1) if gen else 1
    n_rows = len(mc) + sum(n_pos.values())
    rows = np.zeros((m, n_rows, max(width, k_plus)))
    weights = np.zeros(n_rows)
    weights[: len(mc)] = 1.0 / n
    row_example = np.zeros(n_rows, dtype=np.int64)
    row_example[: len(mc)] = mc
    r = len(mc)
    for i in gen:
        weights[r : r + n_pos[i]] = 1.0 / (n * max(n_pos[i], 1))
        row_example[r : r + n_pos[i]] = i
        r += n_pos[i]
    sets = [set(s) for s in correct_sets] if correct_sets is not None else [{g} for g in gold]
    # Generative rows share one coarsening across models: the common top-k tokens + a bucket.
    common: dict[int, list[list[int]]] = {}
    for i in gen:
        start, stop = int(pos_off[i]), int(pos_off[i + 1])
        common[i] = []
        for p in range(start, stop):
            shared = set(shards[models[0]]["topk_ids"][p].tolist())
            for key in models[1:]:
                shared &= set(shards[key]["topk_ids"][p].tolist())
            common[i].append(sorted(shared))
    for a, key in enumerate(models):
        sh = shards[key]
        off, ll, ntok = sh["choice_offsets"], sh["choice_ll"], sh["choice_tokens"]
        for row, i in enumerate(mc):
            lls = ll[off[i] : off[i + 1]].astype(np.float64)
            if normalization == "length":
                lls = lls / ntok[off[i] : off[i + 1]]
            q = _softmax(lls)
            rows[a, row, : q.size] = q
            loglik[a, i] = float(np.log(max(q[gold[i]], 1e-300)))
            correct[a, i] = int(np.argmax(q)) in sets[i]
        r = len(mc)
        for i in gen:
            start = int(sh["position_offsets"][i])
            loglik[a, i] = float(sh["gold_ll"][i])
            tokens[i] = float(sh["gold_tokens"][i])
            greedy = True
            for j, ids in enumerate(common[i]):
                p = start + j
                top_ids = sh["topk_ids"][p]
                top_lp = sh["topk_logprobs"][p].astype(np.float64)
                lookup = dict(zip(top_ids.tolist(), np.exp(top_lp).tolist(), strict=True))
                probs = np.array([lookup[t] for t in ids] + [0.0])
                probs[-1] = max(0.0, 1.0 - probs[:-1].sum())
                rows[a, r, : probs.size] = probs / probs.sum()
                greedy &= bool(sh["target_logprobs"][p] >= top_lp[0] - 1e-6)
                r += 1
            correct[a, i] = greedy
    return ProbePredictions(list(models), list(tasks), task_of, loglik, tokens, correct,
                            rows, weights, row_example)


def from_signals(
    signals: Signals,
    tasks: Sequence[str],
    *,
    normalization: Normalization = "plain",
    correct_sets: Sequence[Sequence[int]] | None = None,
    targets: Sequence[str] = (),
) -> ProbePredictions:
    """:func:`from_arrays` on a finished signals artifact (:class:`taskpgm.readers.Signals`).

    ``targets`` are tasks without an expert whose probe examples were scored too
    (``mrf.target``); they follow ``tasks`` in the task index.
    """
    manifest = signals.manifest
    models = model_keys(tasks)
    missing = [k for k in models if k not in manifest["models"]]
    if missing:
        raise DataError(f"the signals artifact at {signals.path} lacks {missing}; "
                        "rerun `taskpgm signals`")
    shards = {k: signals.arrays(k) for k in models}
    return from_arrays(manifest["probe"], shards, models, [*tasks, *targets],
                       normalization=normalization, correct_sets=correct_sets)
