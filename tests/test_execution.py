"""The execution section and what a shared cache needs across hosts (no Ray started here:
the Ray backend itself is tested on loopback in tests/cluster)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from taskpgm import artifacts, atomic, cluster
from taskpgm.config import ExecutionConfig
from taskpgm.errors import ConfigError


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_another_hosts_lock_is_never_judged_by_a_local_pid():
    pid = dead_pid()
    here = json.dumps({"host": atomic.host_tag(), "pid": pid, "since": 0})
    there = json.dumps({"host": atomic.host_tag() + "x", "pid": pid, "since": 0})
    assert artifacts._stale_holder(here)  # a dead process of this machine
    assert not artifacts._stale_holder(there)  # that pid means nothing here: its heartbeat


def test_another_hosts_lock_is_taken_over_once_its_heartbeat_stops(tmp_path, monkeypatch):
    final = tmp_path / "experts" / "t-abc"
    final.parent.mkdir(parents=True)
    lock = artifacts._lock_of(final)
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": 0}))
    monkeypatch.setattr(artifacts, "STALE", 0.3)
    with artifacts.locked(final):
        assert json.loads(lock.read_text())["host"] == atomic.host_tag()
    assert not lock.exists()


def test_another_hosts_leftover_is_removed_only_under_the_artifacts_lock(tmp_path):
    final = artifacts.path_of("experts", "t", "abc", root=tmp_path)
    final.parent.mkdir(parents=True)
    theirs = final.parent / f".{final.name}.partial-{dead_pid()}.elsewhere-x1"
    ours_dead = final.parent / f".{final.name}.partial-{dead_pid()}.{atomic.host_tag()}-x2"
    theirs.mkdir()
    ours_dead.mkdir()
    artifacts._sweep(final)  # without the lock: only this machine's dead writers
    assert theirs.is_dir() and not ours_dead.exists()
    with artifacts.claim("experts", "t", "abc", root=tmp_path):
        artifacts._sweep(final)  # with it: nobody else can be writing
    assert not theirs.exists()


def test_the_execution_section_checks_its_values():
    assert ExecutionConfig().backend == "local"
    for address in ("auto", "127.0.0.1:6379", "head.cluster:10001", "[::1]:6379"):
        assert ExecutionConfig(backend="ray", address=address).address == address
    for bad in ({"address": "127.0.0.1"}, {"backend": "slurm"}, {"cpus_per_job": 0},
                {"gpus_per_job": -1}, {"max_retries": -1}, {"workers": 3}):
        with pytest.raises(ValidationError):
            ExecutionConfig(**bad)


def test_the_ray_backend_without_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"taskpgm\[cluster\]"):
        cluster.connect(ExecutionConfig(backend="ray", address="127.0.0.1:1"))


class _RayError(Exception):
    pass


class _RayTaskError(_RayError):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"remote traceback...\n{cause!r}")
        self.cause = cause


def _fake_ray(raised: BaseException):
    from types import SimpleNamespace

    def get(_ref):
        raise raised

    return SimpleNamespace(get=get, exceptions=SimpleNamespace(
        RayTaskError=_RayTaskError, RayError=_RayError))


def test_a_failed_job_is_a_taskpgm_error_naming_the_job():
    from taskpgm.errors import ModelError, NotFoundError

    own = NotFoundError("task file gone")
    with pytest.raises(NotFoundError, match="task file gone"):
        cluster._get(_fake_ray(_RayTaskError(own)), None, "expert t1")
    with pytest.raises(ModelError, match=r"expert t1 failed on the cluster: MemoryError"):
        cluster._get(_fake_ray(_RayTaskError(MemoryError("out of memory"))), None, "expert t1")
    with pytest.raises(ModelError, match=r"scoring base was lost .*worker died"):
        cluster._get(_fake_ray(_RayError("worker died\nmore")), None, "scoring base")


def test_tasks_left_without_training_examples_are_one_clear_error_before_any_work():
    from types import SimpleNamespace

    from taskpgm.errors import DataError
    from taskpgm.inputs import mean_train_tokens

    def task(n_train: int) -> SimpleNamespace:
        return SimpleNamespace(train=tuple(range(n_train)), probe=(1, 2), eval=(3,),
                               examples=3 + n_train, duplicates_dropped=0, leaked_dropped=4)

    with pytest.raises(DataError, match=r"2 task\(s\) have no training examples left: a \(3 "
                       r"examples: 2 probe, 1 eval, 0 duplicates, 4 whose prompts.*; c "):
        mean_train_tokens(None, {"a": task(0), "b": task(2), "c": task(0)}, 64)
