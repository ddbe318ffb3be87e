"""Pinned hub revisions for models (org/name@REV) and hf: tasks, without the network."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from taskpgm import models
from taskpgm.errors import NotFoundError
from taskpgm.tasks.files import hf_spec, task_name_for
from tiny_model import tiny_dir


def fake_hub(tmp_path: Path, calls: list[dict]):
    """snapshot_download stand-in: the tiny checkpoint under snapshots/<revision>/."""
    source = tiny_dir(str(tmp_path))

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        calls.append({"repo": repo_id, "revision": revision, "patterns": allow_patterns})
        folder = tmp_path / "hub" / repo_id.replace("/", "--") / "snapshots" / (
            revision or "main-commit")
        if not folder.is_dir():
            shutil.copytree(source, folder)
        return str(folder)

    return snapshot_download


def test_model_revision_is_passed_to_the_hub_and_changes_the_fingerprint(tmp_path, monkeypatch):
    import huggingface_hub

    calls: list[dict] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_hub(tmp_path, calls))
    a = models.Base("org/model@1111aaaa")
    b = models.Base("org/model@2222bbbb")
    latest = models.Base("org/model")
    assert [c["revision"] for c in calls] == ["1111aaaa", "2222bbbb", None]
    assert all(c["repo"] == "org/model" for c in calls)
    # same bytes, other commits: other fingerprints, so nothing cached is reused across pins
    assert len({a.fingerprint, b.fingerprint, latest.fingerprint}) == 3
    assert models.Base("org/model@1111aaaa").fingerprint == a.fingerprint
    assert "*.py" not in calls[0]["patterns"]


def test_trust_remote_code_downloads_the_model_code(tmp_path, monkeypatch):
    import huggingface_hub

    calls: list[dict] = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_hub(tmp_path, calls))
    models.Base("org/custom@abc", trust_remote_code=True)
    assert "*.py" in calls[0]["patterns"] and calls[0]["revision"] == "abc"


def test_a_missing_revision_is_a_clear_error(monkeypatch):
    import huggingface_hub

    def missing(repo_id, revision=None, allow_patterns=None):
        raise RuntimeError(f"Revision Not Found for {repo_id}@{revision}")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    with pytest.raises(NotFoundError, match=r"at revision 'nope'.*org/name@REVISION"):
        models.resolve("org/model@nope")


def test_hf_task_spec_spells_revision_and_split_apart():
    assert hf_spec("hf:org/data") == ("org/data", None, None, "train")
    assert hf_spec("hf:org/data:en@v1.2?split=test") == ("org/data", "en", "v1.2", "test")
    assert hf_spec("hf:org/data@0123abcd") == ("org/data", None, "0123abcd", "train")
    assert task_name_for("hf:org/data:en@v1.2?split=test") == "org__data__en__test"
    assert task_name_for("hf:org/data@v1") == task_name_for("hf:org/data@v2") == "org__data"
    with pytest.raises(NotFoundError, match="only split=NAME"):
        hf_spec("hf:org/data?rows=5")


def test_hf_task_passes_the_revision_to_datasets(monkeypatch):
    import datasets

    from taskpgm.tasks import load_task

    seen = {}

    def load_dataset(ident, config=None, split=None, revision=None):
        seen.update(ident=ident, config=config, split=split, revision=revision)
        return datasets.Dataset.from_dict({
            "prompt": [f"q{i}" for i in range(40)], "choices": [["a", "b"]] * 40,
            "answer": [i % 2 for i in range(40)]})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    task = load_task("hf:org/data:en@deadbeef?split=validation")
    assert seen == {"ident": "org/data", "config": "en", "split": "validation",
                    "revision": "deadbeef"}
    assert len(task.train) + len(task.probe) + len(task.eval) == 40
