"""docs/results.md's generated part and docs/results.json for the rerun, from the ledgers."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_docs(ledgers: dict[str, dict[str, Any]], doc: Path, out_json: Path) -> None:
    """Not written yet: the rerun's tables come with its first complete test seed."""
    return None
