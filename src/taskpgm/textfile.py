"""Text files people hand us (configs, collection files, task files): one UTF-8 decoder.

Every reader of a user's text goes through :func:`read_utf8`, so a file that is not
UTF-8 gets the same error everywhere: which file, which line, which byte, how to fix it.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from taskpgm.errors import TaskPGMError


def read_utf8(path: Path, error: type[TaskPGMError]) -> str:
    """The file's text, without a leading byte-order mark (it is not part of the data).

    Raises:
        error: bytes that are not UTF-8, naming the line and the byte offset.
    """
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise error(f"{path} line {line}: bytes that are not UTF-8 at byte offset "
                    f"{err.start}; re-encode the file as UTF-8") from err
