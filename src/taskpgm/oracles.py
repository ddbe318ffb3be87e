"""Oracles: slow, obviously correct versions of fast code, for tests and benchmarks only.

* :func:`exhaustive_select`: the best support of at most k tasks by trying every
  subset (what :func:`taskpgm.core.budget.greedy_select` approximates);
* :func:`score_naive`: one (prompt, answer) log-likelihood by a plain forward pass
  (what :func:`taskpgm.signals.score_batch` computes with a shared prompt cache).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from taskpgm.core.qp import solve_simplex_qp


def exhaustive_select(S: ArrayLike, c: ArrayLike, caps: ArrayLike | None, k: int) -> tuple[
    float, tuple[int, ...]
]:
    """Best support of at most k tasks by trying every subset (small T only)."""
    sa = np.asarray(S, dtype=np.float64)
    ca = np.asarray(c, dtype=np.float64)
    n = ca.shape[0]
    cp = np.full(n, np.inf) if caps is None else np.asarray(caps, dtype=np.float64)
    best = math.inf
    best_set: tuple[int, ...] = ()
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(n), size):
            ix = np.asarray(subset)
            if cp[ix].sum() < 1.0 - 1e-12:
                continue
            res = solve_simplex_qp(sa[np.ix_(ix, ix)], ca[ix], cp[ix])
            e = float(0.5 * res.p @ sa[np.ix_(ix, ix)] @ res.p - ca[ix] @ res.p)
            if e < best - 1e-13:
                best, best_set = e, subset
    return best, best_set


def score_naive(model: Any, tokenizer: Any, prompt: str, answer: str, max_length: int = 512
                ) -> float:
    """Reference: one full forward pass over prompt + answer, full-vocabulary log-softmax."""
    import torch

    from taskpgm.tokens import encode

    prompt_ids, (answer_ids,) = encode(tokenizer, prompt, [answer], max_length)
    ids = torch.tensor([prompt_ids + answer_ids])
    logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    n = len(prompt_ids)
    return float(sum(logp[n - 1 + j, t].double() for j, t in enumerate(answer_ids)))
