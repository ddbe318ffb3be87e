"""What a run starts from, below every stage: the tasks and their splits, the held-out
and target tasks, each task's mean training tokens, the checks that run before any work
(:func:`preflight`), and the examples every trained model is scored on (:class:`EvalSet`).

The stages, the pipeline, the planner and the benchmarks all read their inputs from here,
so a task is loaded, cut and counted one way. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from taskpgm import tasks as sources  # its loaders (and pyarrow) load on first use
from taskpgm.config import RunConfig, SignalsConfig
from taskpgm.core.mixture import caps_from_budget
from taskpgm.errors import ConfigError, DataError, TaskPGMError
from taskpgm.tasks.schema import Example, TaskSplits, probe_fingerprint
from taskpgm.tokens import tokenize_training

#: Tasks by name, each with its splits.
Tasks = dict[str, TaskSplits]


def hash_text(text: str) -> str:

    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EvalSet:
    """Examples scored after training, grouped by (split, task)."""

    groups: dict[tuple[str, str], tuple[Example, ...]]

    def examples(self) -> list[Example]:
        return [ex for key in sorted(self.groups) for ex in self.groups[key]]

    def fingerprint(self) -> str:
        """The examples in order; with a dev/test cut also the groups (the rows carry them)."""
        fp = probe_fingerprint(self.examples())
        if any(split in ("dev", "test") for split, _ in self.groups):
            keys = "|".join(f"{s}/{t}:{len(self.groups[(s, t)])}" for s, t in sorted(self.groups))
            fp = f"{fp}-{hash_text(keys)}"
        return fp


def load_tasks(config: RunConfig) -> dict[str, TaskSplits]:
    """Load every task of the config with its splits (through :mod:`taskpgm.tasks`)."""

    if not config.tasks.names:
        raise ConfigError("tasks.names is empty: list the tasks to build experts for, "
                          "e.g. [bigbench:hyperbaton, bigbench:navigate]")
    loaded = sources.load_collection(list(config.tasks.names), options=config.tasks.splits)
    return {splits.name: splits for splits in loaded}


def load_all_tasks(config: RunConfig) -> tuple[Tasks, Tasks, Tasks]:
    """The pool's tasks, the held-out tasks and the MMLU subjects of the evaluation."""

    tasks = load_tasks(config)
    heldout: Tasks = {}
    mmlu: Tasks = {}
    ev = config.evaluation
    if ev.enabled and ev.heldout:
        loaded = sources.load_collection(list(ev.heldout), options=config.tasks.splits)
        heldout = {s.name: s for s in loaded}
    if ev.enabled and ev.mmlu:
        loaded = sources.load_collection(list(ev.mmlu), options=config.tasks.splits)
        mmlu = {s.name: s for s in loaded}
    clash = sorted((set(heldout) | set(mmlu)) & set(tasks))
    if clash:
        raise ConfigError(f"evaluation.heldout/mmlu name tasks that are in the mixture: {clash}; "
                          "a held-out task must not be trained on — remove it from one list")
    return tasks, heldout, mmlu


def load_targets(config: RunConfig, tasks: Tasks) -> Tasks:
    """The ``mrf.target`` tasks with their splits; each must have probe examples and must
    not be a pool task (checked by name here, by spec when the config is read)."""
    if not config.mrf.target:
        return {}

    loaded = {s.name: s for s in sources.load_collection(list(config.mrf.target),
                                                  options=config.tasks.splits)}
    problems = [f"mrf.target: {name} is also a pool task; a target is not trained on"
                for name in loaded if name in tasks]
    problems += [f"mrf.target: {name} has no probe examples; give it more examples or a "
                 "larger tasks.splits.probe" for name, s in loaded.items() if not s.probe]
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the run config:\n  "
                          + "\n  ".join(problems))
    return loaded


def mean_train_tokens(tokenizer: Any, tasks: Tasks, max_length: int
                      ) -> dict[str, float]:
    """Mean tokens (prompt + training target) of a training example of each task.

    Raises:
        DataError: tasks left with no training example (every one of them listed), which
            no expert could be trained on.
    """

    empty = [f"{t} ({s.examples} examples: {len(s.probe)} probe, {len(s.eval)} eval, "
             f"{s.duplicates_dropped} duplicates, {s.leaked_dropped} whose prompts are in "
             "other tasks' probe or eval splits)" for t, s in tasks.items() if not s.train]
    if empty:
        raise DataError(
            f"{len(empty)} task(s) have no training examples left: "
            + "; ".join(empty[:10]) + ("; ..." if len(empty) > 10 else "")
            + ". Give them more distinct examples, lower tasks.splits.probe and eval, or "
            "drop them")
    return {t: float(np.mean([len(ids) for ids, _ in tokenize_training(
                tokenizer, splits.train, max_length)]))
            for t, splits in tasks.items()}


def preflight(config: RunConfig, tasks: Tasks, mean_tokens: dict[str, float]
              ) -> np.ndarray:
    """Every constraint problem at once, before any training. Returns the weight caps."""

    names = list(tasks)
    problems = []
    k = config.mrf.budget
    if k is not None and k > len(names):
        problems.append(f"mrf.budget: k={k} is larger than the number of tasks ({len(names)}); "
                        "lower it or leave it unset")
    caps = np.full(len(names), np.inf)
    try:
        caps = caps_from_budget([len(tasks[t].train) for t in names],
                                [mean_tokens[t] for t in names],
                                config.mixture.token_budget, config.mrf.max_repeat)
    except TaskPGMError as err:
        problems.append(f"mixture.token_budget: {err}")
    if k is not None and k <= len(names) and np.isfinite(caps).all():
        top = float(np.sort(caps)[::-1][:k].sum())
        if top < 1.0:
            problems.append(
                f"mrf.budget: the {k} tasks with the most training data hold only "
                f"{top:.0%} of mixture.token_budget within mrf.max_repeat; raise k, "
                "mrf.max_repeat, or lower the token budget")
    if config.mrf.anchor.prior not in ("uniform", "size", "temperature"):
        from taskpgm.weights import resolve_prior  # a prior file: read it before any work

        try:
            resolve_prior(config.mrf.anchor, names, [len(tasks[t].train) for t in names],
                          config.evaluation.temperature)
        except TaskPGMError as err:
            problems.append(f"mrf.anchor.prior: {err}")
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the run config:\n  "
                          + "\n  ".join(problems))
    return caps


def eval_set(config: RunConfig, tasks: Tasks, heldout: Tasks, mmlu: Tasks) -> EvalSet:
    """The examples every trained model is scored on, at most ``evaluation.max_eval`` a task.

    ``eval``: each mixture task's eval split, or with ``evaluation.test_share`` > 0 its
    disjoint ``dev`` and ``test`` parts (:func:`dev_test`); ``heldout`` and ``mmlu``: tasks
    outside the mixture, so every split of theirs is unseen (eval first, then probe, then
    train).
    """

    cap = config.evaluation.max_eval
    share = config.evaluation.test_share
    groups: dict[tuple[str, str], tuple[Example, ...]] = {}
    for name, splits in tasks.items():
        if share > 0:
            dev, test = dev_test(splits.eval[:cap], share)
            groups[("dev", name)], groups[("test", name)] = dev, test
        else:
            groups[("eval", name)] = tuple(splits.eval[:cap])
    for split, source in (("heldout", heldout), ("mmlu", mmlu)):
        for name, splits in source.items():
            groups[(split, name)] = tuple((splits.eval + splits.probe + splits.train)[:cap])
    return EvalSet(groups)


def dev_test(examples: Sequence[Example], share: float
             ) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """A task's eval examples cut once into dev and test: the round(share · n) examples with
    the smallest sha256 of their id go to test, the rest (in their order) to dev."""

    n_test = round(share * len(examples))
    ranked = sorted(range(len(examples)),
                    key=lambda i: hashlib.sha256(examples[i].id.encode()).hexdigest())
    test = set(ranked[:n_test])
    return (tuple(ex for i, ex in enumerate(examples) if i not in test),
            tuple(ex for i, ex in enumerate(examples) if i in test))


def eval_scoring(config: RunConfig) -> SignalsConfig:
    """How trained models are scored: the signals' settings at the evaluation's precision."""
    return config.signals.model_copy(update={"precision": config.evaluation.precision})
