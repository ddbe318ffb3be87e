from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskpgm import artifacts
from taskpgm.errors import DataError


def test_fingerprint_ignores_defaults_and_tracks_everything_else() -> None:
    defaults = {"lr": 1.0, "rank": 8}
    fp = artifacts.fingerprint("s", 1, ["p"], {"lr": 1.0, "rank": 8}, defaults)
    assert fp == artifacts.fingerprint("s", 1, ["p"], {}, defaults)
    assert fp == artifacts.fingerprint("s", 1, ["p"], {"rank": 8}, defaults)
    assert len(fp) == 16
    others = {
        artifacts.fingerprint("s", 2, ["p"], {}, defaults),
        artifacts.fingerprint("t", 1, ["p"], {}, defaults),
        artifacts.fingerprint("s", 1, ["q"], {}, defaults),
        artifacts.fingerprint("s", 1, ["p"], {"lr": 2.0}, defaults),
        artifacts.fingerprint("s", 1, ["p"], {"new": 1}, defaults),
    }
    assert fp not in others and len(others) == 5


def test_write_is_atomic_and_only_finished_dirs_are_read(tmp_path: Path) -> None:
    assert artifacts.find("s", "x", "abc", root=tmp_path) is None
    with pytest.raises(RuntimeError), artifacts.write("s", "x", "abc", {}, root=tmp_path) as tmp:
        (tmp / "data.bin").write_bytes(b"1")
        raise RuntimeError("killed")
    assert artifacts.find("s", "x", "abc", root=tmp_path) is None
    assert list((tmp_path / "s").iterdir()) == []
    # A leftover directory without manifest.json is never read and is replaced.
    artifacts.path_of("s", "x", "abc", root=tmp_path).mkdir()
    assert artifacts.find("s", "x", "abc", root=tmp_path) is None
    manifest = {"k": 1}
    with artifacts.write("s", "x", "abc", manifest, root=tmp_path) as tmp:
        (tmp / "data.bin").write_bytes(b"1")
        manifest["late"] = True
    path = artifacts.find("s", "x", "abc", root=tmp_path)
    assert path is not None and path.name == "x-abc"
    got = artifacts.read_manifest(path)
    assert got["late"] and got["fingerprint"] == "abc" and got["stage"] == "s"


def test_stale_temp_dirs_of_dead_writers_are_swept(tmp_path: Path) -> None:
    final = artifacts.path_of("s", "x", "abc", root=tmp_path)
    final.parent.mkdir(parents=True)
    dead = final.parent / ".x-abc.partial-999999999-zz"
    dead.mkdir()
    with artifacts.write("s", "x", "abc", {}, root=tmp_path):
        pass
    assert not dead.exists()


def test_work_dir_and_manifest_errors(tmp_path: Path) -> None:
    work = artifacts.work_dir("s", "x", "abc", root=tmp_path)
    assert work.is_dir() and work.name.startswith(".")
    artifacts.remove_work_dir("s", "x", "abc", root=tmp_path)
    assert not work.exists()
    with pytest.raises(DataError, match="not a finished artifact"):
        artifacts.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(DataError, match="corrupt"):
        artifacts.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps([1]))
    with pytest.raises(DataError, match="not a JSON object"):
        artifacts.read_manifest(tmp_path)
