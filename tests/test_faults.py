"""Faults on the tiny model: damaged artifacts are noticed and recomputed, and two runs on
one cache both finish with the results of one run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_pipeline import tiny_config, tiny_tasks
from tiny_model import tiny_dir

RESULTS = ("weights.json", "counts.json", "evaluation.csv", "mixture/train.jsonl")


def config_for(root: Path, artifacts: Path, where: Path) -> Path:
    """The tiny run config of the model and tasks made under ``root``, artifacts elsewhere."""
    return tiny_config(where / f"{artifacts.name}.yaml", tiny_dir(str(root)),
                       [root / f"{n}.jsonl" for n in ("alpha", "beta", "gamma")], artifacts,
                       steps=4, seeds=[0], baselines=["uniform"])


def run(config: Path, out: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TASKPGM_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "taskpgm", "run", str(config), "--out",
                           str(out)], capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One run on its own cache: the results every faulty run must reproduce."""
    root = tmp_path_factory.mktemp("faults")
    tiny_tasks(root)
    config = config_for(root, root / "cache", root)
    done = run(config, root / "ref", root / "home")
    assert done.returncode == 0, done.stderr[-2000:]
    return root, config


def same_results(a: Path, b: Path) -> None:
    for name in RESULTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def damage(kind: str, cache: Path) -> Path:
    """Damage one artifact of ``kind``; returns the file damaged."""
    def one(pattern: str) -> Path:
        found = sorted(cache.glob(pattern))
        assert found, pattern
        return found[0]

    if kind == "expert adapter (truncated)":
        f = one("experts/*/adapter_model.safetensors")
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif kind == "signals shard (a pickle in its place)":
        f = one("signals/*/*.safetensors")
        f.write_bytes(b"\x80\x04\x95" + b"cos\nsystem\n(S'echo pwned'\ntR." * 4)
    elif kind == "relations (truncated)":
        f = one("relations/*/relations.safetensors")
        f.write_bytes(f.read_bytes()[:100])
    elif kind == "weights.json (garbage)":
        f = one("weights/*/weights.json")
        f.write_text("{not json")
    elif kind == "evaluation scores.json (garbage)":
        f = one("evaluation/*-s0-*/scores.json")
        f.write_text("]]]")
    elif kind == "a manifest (garbage)":
        f = one("experts/*/manifest.json")
        f.write_text("\x00\x01garbage")
    else:
        raise AssertionError(kind)
    return f


@pytest.mark.parametrize("kind", [
    "expert adapter (truncated)", "signals shard (a pickle in its place)",
    "relations (truncated)", "weights.json (garbage)", "evaluation scores.json (garbage)",
    "a manifest (garbage)"])
def test_a_damaged_artifact_is_noticed_and_recomputed(reference, tmp_path, kind):
    root, _ = reference
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache", cache)
    cfg = config_for(root, cache, tmp_path)
    damaged = damage(kind, cache)
    done = run(cfg, tmp_path / "run", root / "home")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "is damaged" in done.stderr, done.stderr[-2000:]
    same_results(root / "ref", tmp_path / "run")
    # recomputed: every artifact is intact again
    from taskpgm import artifacts

    for manifest in cache.glob("*/*/manifest.json"):
        assert artifacts.verify(manifest.parent) is None, manifest
    assert damaged.is_file()  # the artifact holding it was written again


def test_two_runs_on_one_cache_both_finish_with_the_results_of_one(reference, tmp_path):
    root, _ = reference
    cfg = config_for(root, tmp_path / "shared", tmp_path)
    env = {**os.environ, "TASKPGM_HOME": str(root / "home")}
    procs = [subprocess.Popen([sys.executable, "-m", "taskpgm", "run", str(cfg), "--out",
                               str(tmp_path / f"run{i}")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in (0, 1)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert "Traceback" not in err
    same_results(root / "ref", tmp_path / "run0")
    same_results(root / "ref", tmp_path / "run1")
    assert not list((tmp_path / "shared").rglob("*.lock"))
    assert not list((tmp_path / "shared").rglob(".*.partial-*"))
