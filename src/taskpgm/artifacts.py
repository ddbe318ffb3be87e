"""Stage artifacts: fingerprinted directories, written atomically, read only when complete.

An artifact of stage ``s`` named ``n`` lives at ``<root>/<s>/<n>-<fingerprint>/``.
Its fingerprint is a hash of

    (stage, stage version, parents' fingerprints, parameters that differ from the
     stage's frozen defaults),

so a parameter left at its default does not enter the hash (adding a defaulted
parameter keeps old artifacts valid), and any change upstream changes every
fingerprint downstream. The defaults a stage passes are a literal snapshot kept
beside its ``VERSION`` (``experts.DEFAULTS``, ...), never today's config
defaults: were they read from the config classes, changing a default in code
would leave the hash unchanged and silently reuse artifacts built under the old
value. tests/test_fingerprints.py fails when a config default drifts from its
stage's snapshot, until the version is bumped and the snapshot refreshed.

A stage writes into a temporary sibling directory and renames it into place
after writing ``manifest.json`` last; a directory without ``manifest.json`` is
never read. Work that must survive a kill before the
artifact is finished (training checkpoints, per-model shards) goes to a
persistent ``.<n>-<fingerprint>.work`` directory, removed once the artifact exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taskpgm import atomic, cache
from taskpgm.errors import DataError

MANIFEST = "manifest.json"


def default_root() -> Path:
    """``$TASKPGM_HOME/artifacts``."""
    return cache.home() / "artifacts"


def _canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def fingerprint(
    stage: str,
    version: int,
    parents: Sequence[str],
    params: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> str:
    """Fingerprint of an artifact: 16 hex digits.

    Args:
        stage: the stage name (``"experts"``).
        version: the stage's version; bump it when its output changes meaning.
        parents: fingerprints of everything it reads (order matters).
        params: its parameters; those equal to ``defaults[key]`` are left out.
        defaults: the stage's defaults as frozen with ``version`` (a literal snapshot);
            compared after canonicalization (tuples as lists, paths as strings).
    """
    given, frozen = _canonical(params), _canonical(defaults)
    changed = {k: v for k, v in given.items() if k not in frozen or frozen[k] != v}
    payload = json.dumps([stage, version, list(parents), changed], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def path_of(stage: str, name: str, fp: str, *, root: Path | None = None) -> Path:
    """Where the artifact would live (it may not exist)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return (root or default_root()) / stage / f"{safe}-{fp}"


def find(stage: str, name: str, fp: str, *, root: Path | None = None) -> Path | None:
    """The artifact's directory if it is complete (has ``manifest.json``), else ``None``."""
    path = path_of(stage, name, fp, root=root)
    return path if (path / MANIFEST).is_file() else None


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a finished artifact directory.

    Raises:
        DataError: the directory is unfinished or its manifest is unreadable.
    """
    try:
        data = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError as err:
        raise DataError(
            f"{path} is not a finished artifact (no {MANIFEST}); rerun its stage"
        ) from err
    except json.JSONDecodeError as err:
        raise DataError(f"{path / MANIFEST} is corrupt ({err}); delete {path} and rerun") from err
    if not isinstance(data, dict):
        raise DataError(f"{path / MANIFEST} is not a JSON object; delete {path} and rerun")
    return data


@contextmanager
def write(
    stage: str, name: str, fp: str, manifest: dict[str, Any], *, root: Path | None = None
) -> Iterator[Path]:
    """Yield a temporary directory to fill; on success add the manifest and rename into place.

    The caller may add keys to ``manifest`` inside the ``with`` block. If the block
    raises, the temporary directory is removed and nothing appears at the final path.
    """
    final = path_of(stage, name, fp, root=root)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep(final)
    tmp = Path(tempfile.mkdtemp(prefix=atomic.partial_prefix(final), dir=final.parent))
    try:
        yield tmp
        manifest.setdefault("stage", stage)
        manifest.setdefault("name", name)
        manifest.setdefault("fingerprint", fp)
        (tmp / MANIFEST).write_text(json.dumps(_canonical(manifest), indent=1, default=str))
        if final.exists():  # an unfinished leftover (no manifest) or a concurrent winner
            if (final / MANIFEST).is_file():
                return
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _sweep(final: Path) -> None:
    """Remove temporary directories left by killed writers of this artifact (dead pids only)."""
    for leftover in final.parent.glob(f".{final.name}.partial-*"):
        pid = leftover.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def work_dir(stage: str, name: str, fp: str, *, root: Path | None = None) -> Path:
    """A persistent scratch directory for resumable work on this artifact (created)."""
    final = path_of(stage, name, fp, root=root)
    path = final.parent / f".{final.name}.work"
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_work_dir(stage: str, name: str, fp: str, *, root: Path | None = None) -> None:
    """Delete the scratch directory once the artifact is finished."""
    final = path_of(stage, name, fp, root=root)
    shutil.rmtree(final.parent / f".{final.name}.work", ignore_errors=True)
