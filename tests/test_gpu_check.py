"""The prepared GPU check runs its CPU-only path here, so the script is right before a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_script_runs_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "TASKPGM_HOME": str(tmp_path / "home")}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "== device tests" in out and "passed" in out
    assert "gpu check: every model stage on cpu: yes" in out
    for stage in ("experts", "signals", "evaluation"):
        assert any(line.startswith(stage) and " cpu " in line for line in out.splitlines())
