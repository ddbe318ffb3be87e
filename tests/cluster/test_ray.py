"""The Ray backend on a one-node loopback cluster, on the tiny model: the same bytes as a
local run, a killed worker's expert retried and resumed, a GPU request refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from test_pipeline import tiny_config, tiny_tasks
from tiny_model import tiny_dir


def config_for(root: Path, name: str, *, execution: dict | None = None, steps: int = 4,
               layers: int | None = None) -> Path:
    """The tiny run config over root's tasks, artifacts in root/NAME, one torch thread
    (thread counts change float rounding; both backends use the same)."""
    path = tiny_config(root / f"{name}.yaml", tiny_dir(str(root)),
                       [root / f"{n}.jsonl" for n in ("alpha", "beta", "gamma")],
                       root / name, steps=steps, seeds=[0], baselines=["uniform"])
    cfg = yaml.safe_load(path.read_text())
    cfg["base"]["threads"] = 1
    if layers is not None:
        cfg["experts"]["layers"] = layers
    if execution is not None:
        cfg["execution"] = execution
    path.write_text(yaml.safe_dump(cfg))
    return path


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "taskpgm", *args]


def home_env(home: Path) -> dict[str, str]:
    return {**os.environ, "TASKPGM_HOME": str(home)}


def started(*args: str, home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=home_env(home))


def taskpgm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``python -m taskpgm ARGS`` with its own TASKPGM_HOME, its output captured."""
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=900,
                          env=home_env(home))


def run_ok(*args: str, home: Path) -> str:
    proc = taskpgm(*args, home=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def files(cache: Path, pattern: str) -> dict[str, bytes]:
    found = {p.relative_to(cache).as_posix(): p.read_bytes() for p in cache.glob(pattern)}
    assert found, f"nothing matches {pattern} under {cache}"
    return found


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    tiny_tasks(root)
    return root


@pytest.fixture(scope="module")
def local_signals(pool):
    """Experts and signals on the local backend: what the Ray run must reproduce."""
    run_ok("signals", str(config_for(pool, "local")), home=pool / "home")
    return pool / "local"


def test_ray_run_gives_the_local_runs_adapters_and_signals_byte_for_byte(
        pool, local_signals, ray_head):
    ray_cfg = config_for(pool, "onray", execution={
        "backend": "ray", "address": ray_head, "cpus_per_job": 1})
    said = run_ok("signals", str(ray_cfg), home=pool / "home")
    assert "experts (ray): 3/3" in said and "signals (ray): 4/4" in said, said[-3000:]
    # ... and the driver itself trained and scored nothing: it found the jobs' work
    assert "experts: 3 of 3 finished already" in said, said[-3000:]
    assert "× 4 models; 4 already scored" in said, said[-3000:]
    for pattern in ("experts/*/adapter_model.safetensors", "signals/*/*.safetensors"):
        assert files(pool / "onray", pattern) == files(local_signals, pattern), pattern
    # the local backend then finds every expert and shard of the Ray run in the cache
    rerun = run_ok("signals", str(config_for(pool, "onray")), home=pool / "home")
    assert "3 of 3 finished already" in rerun and "signals: reusing" in rerun, rerun[-2000:]


def test_ray_scoring_shares_the_frozen_layers_through_the_cache(pool, ray_head):
    """experts.layers: 1 of the tiny model's 2: every scoring actor reads the boundary
    states of each probe set from the shared cache (one artifact per set, computed by the
    first actor that needs it under its lock), and the signals equal the local run's."""
    local = config_for(pool, "frozen-local", layers=1)
    run_ok("signals", str(local), home=pool / "home")
    ray_cfg = config_for(pool, "frozen-ray", layers=1, execution={
        "backend": "ray", "address": ray_head, "cpus_per_job": 1})
    said = run_ok("signals", str(ray_cfg), home=pool / "home")
    assert "signals (ray): 4/4" in said, said[-3000:]
    states = sorted((pool / "frozen-ray" / "frozen").glob("states-1-*"))
    assert len(states) == 3, states  # one per task's probe set, shared by the 4 actors
    for folder in states:
        assert (folder / "states.safetensors").is_file() and (folder / "manifest.json").is_file()
    assert not list((pool / "frozen-ray" / "frozen").glob(".*"))  # no lock or partial left
    pattern = "signals/*/*.safetensors"
    assert files(pool / "frozen-ray", pattern) == files(pool / "frozen-local", pattern)
    assert files(pool / "frozen-ray", "frozen/*/states.safetensors") == files(
        pool / "frozen-local", "frozen/*/states.safetensors")


def _expert_workers() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if line.startswith("ray::expert_job"):
            found.append(proc)
    return found


def test_a_killed_worker_is_retried_and_its_expert_resumes(pool, ray_head):
    steps = 40
    reference = config_for(pool, "unkilled", steps=steps)
    run_ok("experts", str(reference), home=pool / "home")
    cfg = config_for(pool, "killed", steps=steps, execution={
        "backend": "ray", "address": ray_head, "cpus_per_job": 2, "max_retries": 2})
    driver = started("experts", str(cfg), home=pool / "home")
    killed_at = None
    deadline = time.monotonic() + 600
    while killed_at is None and time.monotonic() < deadline and driver.poll() is None:
        checkpoints = list((pool / "killed" / "experts").glob(".*.work/*"))
        workers = _expert_workers()
        if checkpoints and workers:
            killed_at = [p.name for p in checkpoints]
            for w in workers:
                w.send_signal(signal.SIGKILL)
        time.sleep(0.2)
    _, err = driver.communicate(timeout=900)
    assert killed_at is not None, f"no worker was caught mid-expert: {err[-2000:]}"
    assert driver.returncode == 0, err[-3000:]
    logs = [yaml.safe_load(p.read_text())
            for p in (pool / "killed" / "experts").glob("*/training_log.json")]
    assert len(logs) == 3
    assert any(log["resumed_at"] > 0 for log in logs), "no expert resumed from a checkpoint"
    pattern = "experts/*/adapter_model.safetensors"
    assert files(pool / "killed", pattern) == files(pool / "unkilled", pattern)
    assert not list((pool / "killed" / "experts").glob(".*"))  # no locks, work or partials


def test_a_gpu_job_on_a_cluster_without_gpus_is_a_clear_error(pool, ray_head):
    cfg = config_for(pool, "gpu", execution={
        "backend": "ray", "address": ray_head, "gpus_per_job": 1})
    proc = taskpgm("experts", str(cfg), home=pool / "home")
    err = proc.stderr
    assert proc.returncode == 1, err[-2000:]
    assert "execution.gpus_per_job: 1" in err and "no node" in err, err
    assert "Traceback" not in err
    assert not (pool / "gpu" / "experts").exists() or not any(
        (pool / "gpu" / "experts").iterdir())


def test_plan_on_the_cluster_counts_its_slots_and_scales_the_estimate(pool, ray_head):
    import json

    def plan(cfg: Path) -> dict:
        proc = taskpgm("plan", str(cfg), "--json", home=pool / "home")
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout)

    here = plan(config_for(pool, "plan-local"))
    there = plan(config_for(pool, "plan-ray", execution={
        "backend": "ray", "address": ray_head, "cpus_per_job": 0.5}))
    assert there["cluster"]["slots"] == 4  # 2 CPUs / 0.5
    speed = 0.5 / len(os.sched_getaffinity(0))
    local, ray = here["estimate_seconds"], there["estimate_seconds"]
    # 3 experts on 4 slots, 4 models (base + 3) on 4 actors; the evaluation stays here
    assert ray["experts"] == pytest.approx(local["experts"] / (speed * 3))
    assert ray["signals"] == pytest.approx(local["signals"] / (speed * 4))
    assert ray["evaluation"] == pytest.approx(local["evaluation"])
    assert "on the Ray cluster: 4 jobs at once" in there["summary"]
