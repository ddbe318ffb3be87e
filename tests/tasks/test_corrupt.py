"""corrupt_train: a task's training labels redrawn by a seeded choice, probe and eval kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskpgm.errors import ConfigError
from taskpgm.tasks.collection import CorruptLabels, TaskEntry
from taskpgm.tasks.loader import load_entries
from taskpgm.tasks.splits import SplitOptions

CHOICES = ["red", "green", "blue", "black"]


def mc_file(path: Path, n: int = 120) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Q{i}: colour {i % 4}?", "choices": CHOICES,
                                "answer": i % 4}) + "\n")
    return path


OPTIONS = SplitOptions(probe=10, eval=10, max_train=None)


def load(path: Path, corrupt: CorruptLabels | None, name: str = "colours"):
    return load_entries([TaskEntry(spec=str(path), name=name, corrupt_train=corrupt)],
                        OPTIONS)[0]


def test_train_labels_are_redrawn_and_probe_and_eval_keep_theirs(tmp_path):
    path = mc_file(tmp_path / "c.jsonl")
    clean = load(path, None)
    noisy = load(path, CorruptLabels(share=1.0, seed=0))
    assert [e.id for e in noisy.train] == [e.id for e in clean.train]  # same examples
    assert [e.prompt for e in noisy.train] == [e.prompt for e in clean.train]
    assert noisy.probe == clean.probe and noisy.eval == clean.eval  # true labels kept
    changed = sum(a.answer != b.answer for a, b in zip(noisy.train, clean.train, strict=True))
    # every label redrawn uniformly over 4 choices: about 3/4 of them change
    assert 0.6 * len(clean.train) < changed < 0.9 * len(clean.train)
    assert noisy.meta["corrupt_train"] == {"share": 1.0, "seed": 0, "changed": changed}
    again = load(path, CorruptLabels(share=1.0, seed=0))
    assert again.train == noisy.train  # seeded: the same draw every time
    other = load(path, CorruptLabels(share=1.0, seed=1))
    assert other.train != noisy.train


def test_a_share_redraws_only_part_of_the_split(tmp_path):
    path = mc_file(tmp_path / "c.jsonl", n=420)
    clean = load(path, None)
    half = load(path, CorruptLabels(share=0.5, seed=3))
    changed = sum(a.answer != b.answer for a, b in zip(half.train, clean.train, strict=True))
    # half redrawn, 3/4 of those change: about 3/8 of 400
    assert 0.25 * len(clean.train) < changed < 0.5 * len(clean.train)


def test_generative_tasks_refuse_it_and_the_run_config_takes_it(tmp_path):
    gen = tmp_path / "g.jsonl"
    gen.write_text("".join(json.dumps({"prompt": f"{i}+1=", "target": str(i + 1)}) + "\n"
                           for i in range(60)))
    with pytest.raises(ConfigError, match="corrupt_train applies to multiple-choice"):
        load(gen, CorruptLabels(), name="sums")
    from taskpgm.config import RunConfig

    cfg = RunConfig.model_validate({"tasks": {"names": [
        {"spec": str(mc_file(tmp_path / "c.jsonl")), "corrupt_train": {"seed": 2}}]}})
    entry = cfg.tasks.names[0]
    assert isinstance(entry, TaskEntry) and entry.corrupt_train == CorruptLabels(seed=2)
    with pytest.raises(ValueError, match="share"):
        CorruptLabels(share=0.0)
