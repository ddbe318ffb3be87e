"""A built-in synthetic example: what a base model and task experts might predict.

Used by ``taskpgm demo`` until the model pipeline is wired in, and by tests.
No model is involved: the predictive distributions are drawn so that three
"arithmetic" tasks share a skill (their experts move the base model the same
way on each other's questions) beside three unrelated tasks.

For probe example x of task t with C choices and gold answer y:
the base predicts softmax(z), z ~ N(0, 1); expert i adds ``lift(i, t)`` to the
gold logit and a task-specific random shift of scale ``noise`` elsewhere, with
lift = 3 on its own task, 1.5 on a task of the same family, 0.2 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

TASKS = ("addition", "subtraction", "multiplication", "hyperbaton", "navigate", "intent")
FAMILY = (0, 0, 0, 1, 2, 3)


@dataclass(frozen=True)
class SyntheticSignals:
    """Predictive distributions over choices for the base (row 0) and one expert per task."""

    tasks: tuple[str, ...]
    dists: NDArray[np.float64]  # (T+1, N, C)
    gold: NDArray[np.int64]  # (N,)
    task_of: NDArray[np.int64]  # (N,)

    def gold_logprob(self) -> NDArray[np.float64]:
        """(T+1, N): log-probability of the gold choice under each model's choice distribution."""
        n = self.gold.shape[0]
        out: NDArray[np.float64] = np.log(self.dists[:, np.arange(n), self.gold])
        return out


def synthetic_signals(
    per_task: int = 100, choices: int = 4, noise: float = 0.8, seed: int = 0
) -> SyntheticSignals:
    """Draw the example described in the module docstring."""
    rng = np.random.default_rng(seed)
    t = len(TASKS)
    n = t * per_task
    task_of = np.repeat(np.arange(t), per_task)
    gold = rng.integers(0, choices, size=n)
    base_logits = rng.normal(size=(n, choices))
    logits = np.empty((t + 1, n, choices))
    logits[0] = base_logits
    for i in range(t):
        same = np.asarray(FAMILY)[task_of] == FAMILY[i]
        lift = np.where(task_of == i, 3.0, np.where(same, 1.5, 0.2))
        shift = noise * rng.normal(size=(n, choices)) * (task_of == i)[:, None]
        z = base_logits + shift
        z[np.arange(n), gold] += lift
        logits[i + 1] = z
    logits -= logits.max(axis=-1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=-1, keepdims=True)
    return SyntheticSignals(TASKS, probs, gold, task_of)
