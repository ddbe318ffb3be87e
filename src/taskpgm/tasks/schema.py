"""The normalized example schema every loader produces and every later stage reads.

An example is a prompt with either answer choices and the indices of the
correct ones (multiple choice, ``kind == "mc"``), or reference completions
(generative, ``kind == "gen"``). The first correct choice, or the first
target, is the training target; scoring accepts any of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["mc", "gen"]


@dataclass(frozen=True)
class Example:
    """One normalized example.

    Attributes:
        task: name of the task it belongs to.
        id: stable content hash of the example (independent of its position in the file).
        prompt: the formatted prompt text the model sees.
        choices: answer choices (multiple choice) or ``None`` (generative).
        correct: indices of every correct choice, first one is the training target.
        targets: acceptable reference completions (generative); first one is the training target.
    """

    task: str
    id: str
    prompt: str
    choices: tuple[str, ...] | None = None
    correct: tuple[int, ...] = ()
    targets: tuple[str, ...] = ()

    @property
    def kind(self) -> Kind:
        return "mc" if self.choices is not None else "gen"

    @property
    def answer(self) -> int:
        """Index of the training-target choice (multiple choice only)."""
        if self.choices is None:
            raise AttributeError(f"example {self.id} of task {self.task!r} is generative")
        return self.correct[0]

    @property
    def answer_text(self) -> str:
        """The training target: the first correct choice, or the first reference target."""
        if self.choices is not None:
            return self.choices[self.correct[0]]
        return self.targets[0]


@dataclass(frozen=True)
class TaskSplits:
    """A loaded task with its deterministic train / probe / eval splits and load statistics."""

    name: str
    spec: str
    kind: Kind
    train: tuple[Example, ...]
    probe: tuple[Example, ...]
    eval: tuple[Example, ...]
    examples: int  # number of examples in the source, before any filtering
    duplicates_dropped: int = 0
    leaked_dropped: int = 0
    meta: dict[str, object] = field(default_factory=dict)
    # Examples left out of train only because of the ``max_train`` cap, so that always
    # train + probe + eval + duplicates_dropped + leaked_dropped + capped == examples.
    capped: int = 0

    @property
    def sizes(self) -> dict[str, int]:
        """``{"train": ..., "probe": ..., "eval": ...}``."""
        return {"train": len(self.train), "probe": len(self.probe), "eval": len(self.eval)}


def examples_fingerprint(examples: Sequence[Example]) -> str:
    """Content hash of a training set (ids, prompts and targets, in order)."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([ex.task, ex.id, ex.prompt, ex.answer_text]).encode())
    return digest.hexdigest()[:32]


def probe_fingerprint(examples: Sequence[Example]) -> str:
    """Content hash of the probe set (ids, prompts, choices, targets, in order)."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([ex.task, ex.id, ex.prompt, ex.choices, ex.correct,
                                  ex.targets]).encode())
    return digest.hexdigest()[:32]
