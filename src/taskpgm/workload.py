"""The work a run plans, from its config and its tasks: what sets its running time.

With T tasks, s_t optimizer steps of batch B for task t's expert (from ``steps``
or ``epochs``), m_t the mean tokens of one of its training examples, P_t its
probe examples, M methods (TaskPGM, its budgeted variant, the baselines), R
seeds, N the token budget and E the examples scored after each training:

    expert tokens        = Σ_t s_t · B · m_t
    probe scorings       = (T + 1) · Σ_t P_t              (the base and every expert)
    evaluation training  = M · R trainings of N tokens     (coinciding mixtures train once)
    evaluation scorings  = (M · R + 1) · E                 (the base model scored once)

Counts are upper bounds where methods coincide. The demo config's are held to a
budget by the tests, so the demo cannot grow past its time target unnoticed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from taskpgm.config import RunConfig


@dataclass(frozen=True)
class Workload:
    """Planned work of a run (see the module docstring for each formula)."""

    experts: int
    expert_steps: int
    expert_tokens: float
    probe_scorings: int
    evaluation_trainings: int
    evaluation_training_tokens: int
    evaluation_scorings: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def methods_of(config: RunConfig) -> list[str]:
    """The methods an evaluation trains on: TaskPGM (and budgeted), then the baselines."""
    names = ["taskpgm"]
    if config.mrf.budget is not None:
        names.append(f"taskpgm-k{config.mrf.budget}")
    return names + list(config.evaluation.baselines)


def plan(config: RunConfig, train_sizes: Mapping[str, int], probe_sizes: Mapping[str, int],
         mean_tokens: Mapping[str, float], eval_examples: int) -> Workload:
    """The workload of ``config`` on tasks of these sizes.

    Args:
        train_sizes, probe_sizes: each task's train and probe split sizes.
        mean_tokens: mean tokens (prompt + answer) of a training example of each task.
        eval_examples: examples scored after each evaluation training.
    """
    from taskpgm.trainer import schedule

    ex = config.experts
    steps = {t: schedule(n, ex)[0] for t, n in train_sizes.items()}
    imported = set(ex.import_)
    trained = [t for t in train_sizes if t not in imported]
    ev = config.evaluation
    trainings = len(methods_of(config)) * len(ev.seeds) if ev.enabled else 0
    return Workload(
        experts=len(trained),
        expert_steps=sum(steps[t] for t in trained),
        expert_tokens=sum(steps[t] * ex.batch_size * mean_tokens[t] for t in trained),
        probe_scorings=(len(train_sizes) + 1) * sum(probe_sizes.values()),
        evaluation_trainings=trainings,
        evaluation_training_tokens=trainings * config.mixture.token_budget,
        evaluation_scorings=(trainings + 1) * eval_examples if ev.enabled else 0,
    )
