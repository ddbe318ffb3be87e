"""Atomic writes: a file or directory appears at its final path complete, or not at all.

Everything is written first beside its destination, under a hidden name holding
``.partial-<pid>-``, then renamed onto the destination (``os.replace``, atomic on
one filesystem). A writer killed midway leaves only such a leftover, which no
reader looks at; a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def host_tag() -> str:
    """This machine's name, letters and digits only (it goes into file names)."""
    import socket

    return "".join(c for c in socket.gethostname() if c.isalnum()) or "host"


def partial_prefix(path: Path) -> str:
    """The name prefix of this process's temporary siblings of ``path``:
    ``.<name>.partial-<pid>.<host>-`` (the host: a cache may be shared by machines)."""
    return f".{path.name}.partial-{os.getpid()}.{host_tag()}-"


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success rename it onto ``path``.

    If the block raises, the temporary file is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=partial_prefix(path), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any, *, indent: int | None = 1) -> None:
    """Write ``data`` as JSON (numpy scalars as floats) to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=indent, default=float) + "\n")


@contextlib.contextmanager
def new_directory(path: Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success rename it to ``path``.

    When another process finished ``path`` first, theirs is kept and this one is
    dropped (both were built from the same inputs). If the block raises, nothing
    appears at ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(path), dir=path.parent))
    try:
        yield tmp
        with contextlib.suppress(OSError):  # a finished directory from another process
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
