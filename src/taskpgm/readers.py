"""Readers of finished stage artifacts: signals, relations, weights. No model, no torch.

Everything that only looks at what a run produced (the relations and weights
stages, ``taskpgm solve``, ``taskpgm report``) reads through here, so it starts
in about a second: nothing imports torch until a model is trained or scored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from taskpgm import artifacts
from taskpgm.errors import DataError

BASE_KEY = "base"


def model_keys(tasks: Iterable[str]) -> list[str]:
    """Every model the probe set is scored with: ``base``, then ``expert:T`` per task."""
    return [BASE_KEY, *(f"expert:{t}" for t in tasks)]


@dataclass(frozen=True)
class Signals:
    """A finished signals artifact: the manifest and a reader for each model's shard."""

    path: Path
    manifest: dict[str, Any]

    @property
    def models(self) -> list[str]:
        """``"base"`` then ``"expert:<task>"`` for each expert, in task order."""
        return list(self.manifest["models"])

    @property
    def example_ids(self) -> list[str]:
        return list(self.manifest["probe"]["ids"])

    def arrays(self, model: str) -> dict[str, np.ndarray]:
        """The shard of one model (``"base"`` or ``"expert:<task>"``)."""
        entry = self.manifest["models"].get(model)
        if entry is None:
            raise DataError(f"signals at {self.path} have no model {model!r}; "
                            f"known: {', '.join(self.manifest['models'])}")
        return load_file(str(self.path / entry["shard"]))


def checked(path: Path) -> Path:
    """``path``, a finished artifact whose files match its manifest's checksums.

    Raises:
        DataError: it is damaged; rerunning its stage computes it again.
    """
    problem = artifacts.verify(path)
    if problem is not None:
        raise DataError(f"{path} is damaged ({problem}); run `taskpgm run CONFIG` again: it "
                        "notices the damage and computes the artifact again")
    return path


def open_signals(path: Path) -> Signals:
    """Read a finished signals artifact (no model is loaded)."""
    return Signals(path, artifacts.read_manifest(checked(path)))


@dataclass(frozen=True)
class Relations:
    """A finished relations artifact: the task order, every matrix, the manifest."""

    path: Path
    fingerprint: str
    tasks: list[str]
    arrays: dict[str, np.ndarray]
    info: dict[str, Any]

    @property
    def affinity(self) -> np.ndarray:
        return self.arrays["affinity"]


RELATIONS_FILE = "relations.safetensors"
WEIGHTS_FILE = "weights.json"


def open_relations(path: Path) -> Relations:
    """Read a finished relations artifact."""
    manifest = artifacts.read_manifest(checked(path))
    arrays = load_file(str(path / RELATIONS_FILE))
    return Relations(path, str(manifest["fingerprint"]), list(manifest["tasks"]), arrays,
                     manifest)


def open_weights(path: Path) -> dict[str, Any]:
    """Read a finished weights artifact: ``weights.json`` with its ``fingerprint`` added."""
    manifest = artifacts.read_manifest(checked(path))
    data: dict[str, Any] = json.loads((path / WEIGHTS_FILE).read_text())
    data["fingerprint"] = str(manifest["fingerprint"])
    return data
