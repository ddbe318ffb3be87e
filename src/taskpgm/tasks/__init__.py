"""Task collections: loaders per source, the example schema, splits, validation."""

from __future__ import annotations

from taskpgm.tasks.schema import Example, TaskSplits

__all__ = ["Example", "TaskSplits"]
