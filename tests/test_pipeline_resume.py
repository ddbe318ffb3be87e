"""A run killed with SIGKILL at several points, then rerun, ends with the same artifacts."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_pipeline import tiny_config, tiny_tasks
from tiny_model import tiny_dir

RESULT_FILES = ("weights.json", "counts.json", "mixture/train.jsonl", "evaluation.csv",
                "exports/interleave.json", "exports/megatron/mixture_text_document.bin")


def make_config(root: Path, model: Path, tasks: list[Path], artifacts: Path) -> Path:
    return tiny_config(root / f"{artifacts.name}.yaml", model, tasks, artifacts, steps=6,
                       seeds=[0], baselines=["uniform"])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "taskpgm", *args]


def digest(run: Path) -> dict[str, str]:
    """Each result file's sha256, whole (weights.json with its fingerprints)."""
    return {rel: hashlib.sha256((run / rel).read_bytes()).hexdigest() for rel in RESULT_FILES}


def run_and_kill(config: Path, out: Path, marker: str, delay: float) -> int:
    """Start a run, SIGKILL it ``delay`` seconds after ``marker`` appears; its return code."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cli("run", str(config), "--out", str(out)), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:
        if marker in line:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
    return proc.wait(timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize(("marker", "delay"), [
    ("experts: 0 of 3 finished already", 0.5),      # mid expert training
    ("signals: scoring expert:alpha", 0.1),         # mid scoring
    ("evaluation: training taskpgm-s0", 0.2),       # mid evaluation training
])
def test_kill_then_resume_gives_the_same_run(tmp_path, marker, delay):
    """Each kill point starts from an empty cache, so its marker is sure to be printed."""
    model = tiny_dir(str(tmp_path))
    tasks = tiny_tasks(tmp_path)
    reference = tmp_path / "reference"
    subprocess.run(cli("run", str(make_config(tmp_path, model, tasks, tmp_path / "ref-art")),
                       "--out", str(reference)), check=True, capture_output=True)
    expected = digest(reference)
    config = make_config(tmp_path, model, tasks, tmp_path / "killed-art")
    out = tmp_path / "killed"
    assert run_and_kill(config, out, marker, delay) == -signal.SIGKILL
    done = subprocess.run(cli("run", str(config), "--out", str(out)), check=True,
                          capture_output=True, text=True)
    if not marker.startswith("experts"):
        assert "experts: 3 of 3 finished already" in done.stderr
    if marker.startswith("evaluation"):
        assert "signals: reusing" in done.stderr and "relations: reusing" in done.stderr
    got = digest(out)
    assert [rel for rel in expected if got[rel] != expected[rel]] == []
    fingerprints = json.loads((out / "weights.json").read_text())["fingerprints"]
    assert fingerprints["weights"] and fingerprints["relations"]
