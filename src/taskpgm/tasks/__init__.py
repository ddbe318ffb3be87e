"""Task collections: loaders per source, the example schema, splits, validation.

>>> from taskpgm.tasks import load_task
>>> task = load_task("bigbench:sports_understanding")   # doctest: +SKIP
>>> len(task.probe), len(task.eval)                      # doctest: +SKIP
(100, 200)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskpgm.tasks.collection import TaskEntry
from taskpgm.tasks.records import FieldMapping
from taskpgm.tasks.schema import Example, TaskSplits
from taskpgm.tasks.splits import SplitOptions

if TYPE_CHECKING:
    from taskpgm.tasks.loader import load_collection, load_task


def __getattr__(name: str) -> Any:
    """The loaders (and pyarrow, which they need) are imported on first use only."""
    if name in ("load_collection", "load_task"):
        from taskpgm.tasks import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'taskpgm.tasks' has no attribute {name!r}")

__all__ = [
    "Example",
    "FieldMapping",
    "SplitOptions",
    "TaskEntry",
    "TaskSplits",
    "load_collection",
    "load_task",
]
