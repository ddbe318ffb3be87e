"""The benchmark's ledger: every training it ran, with its rows and its machine, typed.

A ledger is one JSON file per pool (``benchmarks/results/<benchmark>/<pool>.json``),
rewritten atomically after each training, so a killed run resumes where it stopped, here
or on another machine once the file is committed.
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from taskpgm import atomic
from taskpgm.errors import DataError


class Training(TypedDict):
    """One training and its scores, as the ledger keeps it under ``Ledger.key(...)``."""

    phase: str  # "sweep", "pilot", "swarm", "dev", "test" or a pilot's own phase
    budget: int  # training tokens
    method: str
    seed: int
    weights: dict[str, float]
    rows: list[dict[str, Any]]  # evaluation rows (taskpgm.rundir.EVALUATION_COLUMNS)
    cpu_s: float
    wall_s: float
    fresh: bool  # trained now (False: its artifacts were in the cache)
    machine: int  # index into LedgerData["machines"]
    sampler: str
    items: NotRequired[list[dict[str, Any]]]


class LedgerData(TypedDict, total=False):
    """A pool's ledger file: its trainings, its decisions and what they ran on."""

    pool: str
    trainings: dict[str, Training]
    decisions: dict[str, Any]
    machines: list[dict[str, Any]]
    tasks: list[str]
    families: dict[str, str] | None
    per_task: dict[str, int]
    base: dict[str, list[dict[str, Any]]]
    pipeline: dict[str, Any]
    pipeline_cpu_s: float
    data: dict[str, str]  # each task's content digest (train, probe and eval examples)


class Ledger:
    """One pool's trainings and decisions, rewritten atomically after each training."""

    def __init__(self, path: Path, pool: str) -> None:
        self.path = path
        self.data: LedgerData = (json.loads(path.read_text()) if path.is_file() else
                                 {"pool": pool, "trainings": {}, "decisions": {}})

    def save(self) -> None:
        atomic.write_json(self.path, self.data)

    @staticmethod
    def key(phase: str, budget: int, method: str, seed: int) -> str:
        return f"{phase}|{budget}|{method}|{seed}"

    def check_data(self, digests: dict[str, str]) -> None:
        """Record each task's content digest, or check it against the one recorded: trainings
        on other data (another BIG-bench source or version, another corruption seed) must not
        join this ledger's.

        Raises:
            DataError: a task's examples differ from those the ledger's trainings saw.
        """
        held = self.data.setdefault("data", dict(digests))
        changed = sorted(t for t in set(held) | set(digests) if held.get(t) != digests.get(t))
        if changed:
            raise DataError(
                f"{self.path}: the examples of {', '.join(changed)} differ from those this "
                "ledger's trainings were run on (another BIG-bench source or version?); run "
                "with the data the ledger was made with, or move the ledger aside to start "
                "afresh")

    def rows(self, phase: str, budget: int, method: str, seed: int) -> list[dict[str, Any]] | None:
        entry = self.data["trainings"].get(self.key(phase, budget, method, seed))
        return None if entry is None else list(entry["rows"])



def machine() -> dict[str, Any]:
    info = {"python": platform.python_version()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)"):
                info[key.strip()] = value.strip()
            if key.strip() == "Flags":
                info["flags"] = [f for f in value.split() if f.startswith(("avx", "amx", "fma"))]
    except OSError:
        pass
    import torch

    info["torch"] = torch.__version__
    info["threads"] = torch.get_num_threads()
    return info

