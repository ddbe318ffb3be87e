"""The collection file: which tasks, with which per-task options, split how.

A collection is a YAML file::

    splits:              # optional; see SplitOptions
      probe: 100
      eval: 200
    tasks:
      - bigbench:sports_understanding        # a spec alone
      - mmlu:anatomy
      - name: reviews                        # or a spec with options
        spec: data/reviews.jsonl             # relative to this file
        mapping: {prompt: text, choices: labels, answer: label}
        template: "Review: {prompt}\\nSentiment:"
        max_examples: 5000

Unknown keys are errors, reported together with their line numbers. The run
configuration of later stages embeds :class:`TaskEntry` and
:class:`SplitOptions` in its own ``tasks:`` section.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from taskpgm.errors import ConfigError, NotFoundError
from taskpgm.tasks.records import FieldMapping
from taskpgm.tasks.splits import SplitOptions

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$"

__all__ = ["Collection", "CorruptLabels", "FieldMapping", "SplitOptions", "TaskEntry",
           "read_collection"]


class CorruptLabels(BaseModel):
    """Replace training labels by a seeded random choice (a pool with known-noisy tasks)."""

    model_config = ConfigDict(extra="forbid")

    # Share of the train split whose label is redrawn (1: every example).
    share: float = Field(default=1.0, gt=0, le=1)
    # Seed of the draw; with the example's id it fixes which examples and which labels.
    seed: int = 0


class TaskEntry(BaseModel):
    """One task of a collection."""

    model_config = ConfigDict(extra="forbid")

    # Where the task comes from: bigbench:NAME[/SUBTASK], mmlu:SUBJECT, mmlu:*, a file, hf:ID.
    spec: str = Field(min_length=1)
    # Name used in every artifact and report; default: from the spec (file name, task name).
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    # Which fields hold prompt / choices / answer / target (files only; defaults as named).
    mapping: FieldMapping | None = None
    # Prompt template with {field} placeholders; {prompt} is the mapped prompt.
    template: str | None = None
    # Read at most this many examples of the source (in source order); None: all.
    max_examples: int | None = Field(default=None, ge=1)
    # Multiple choice only: the train split's labels replaced by a uniformly drawn choice
    # (the probe and eval splits keep the true labels), e.g. {share: 1.0, seed: 0}; builds
    # a pool whose noisy tasks are known (docs/results.md, the noise pool). None: off.
    corrupt_train: CorruptLabels | None = None
    # Line of the collection file that declared this entry (set by read_collection).
    _line: int | None = PrivateAttr(default=None)

    @property
    def line(self) -> int | None:
        """The collection file line of this entry, when it came from one."""
        return self._line


class Collection(BaseModel):
    """A collection file: split options and the list of tasks."""

    model_config = ConfigDict(extra="forbid")

    splits: SplitOptions = Field(default_factory=lambda: SplitOptions())
    tasks: list[TaskEntry | str] = Field(min_length=1)

    def entries(self) -> list[TaskEntry]:
        return [TaskEntry(spec=t) if isinstance(t, str) else t for t in self.tasks]


def read_collection(path: str | Path) -> tuple[Collection, list[TaskEntry]]:
    """Read and validate a collection file; file specs become paths relative to it.

    Raises:
        NotFoundError: the file does not exist.
        ConfigError: bad YAML or unknown / wrongly typed keys (all listed, with lines).
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"collection file {path} does not exist; check the path")
    from taskpgm.textfile import read_utf8
    from taskpgm.yamlio import read_yaml

    data, node = read_yaml(read_utf8(path, ConfigError), str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a collection file is a mapping with a 'tasks:' list; "
                          "see docs/tasks.md")
    try:
        collection = Collection.model_validate(data)
    except ValidationError as err:
        lines = list(dict.fromkeys(_messages(err, data, node)))
        listed = "\n  ".join(lines)
        raise ConfigError(f"{path} has {len(lines)} problem(s):\n  {listed}\n"
                          "fix these keys (see docs/tasks.md for the collection format)") from err
    entries = []
    for i, entry in enumerate(collection.entries()):
        spec = entry.spec
        if not spec.startswith(("bigbench:", "mmlu:", "hf:")) and not Path(spec).is_absolute():
            spec = str(path.parent / spec)
        located = entry.model_copy(update={"spec": spec})
        located._line = _line_of(node, ("tasks", i))
        entries.append(located)
    return collection, entries


def _messages(err: ValidationError, data: dict[str, Any], node: Any) -> Iterator[str]:
    """One line per problem; a task item is either a spec string or a mapping, not both."""
    tasks = data.get("tasks")
    items: list[Any] = tasks if isinstance(tasks, list) else []
    for e in err.errors():
        loc = tuple(e["loc"])
        if len(loc) >= 3 and loc[0] == "tasks" and isinstance(loc[1], int) \
                and loc[2] in ("TaskEntry", "str"):
            item = items[loc[1]] if loc[1] < len(items) else None
            if not isinstance(item, dict | str):
                if loc[2] == "str":
                    at = _line_of(node, loc[:2])
                    yield (f"line {at}: tasks.{loc[1]}: give a spec string or a mapping with "
                           f"spec:, not {type(item).__name__} {item!r}")
                continue
            if isinstance(item, dict) != (loc[2] == "TaskEntry"):
                continue
            loc = loc[:2] + loc[3:]
        at = _line_of(node, loc)
        key = ".".join(str(x) for x in loc)
        what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        yield f"line {at}: {key}: {what}" if at else f"{key}: {what}"


def _line_of(node: Any, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its deepest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == key]
            if not match:
                return line
            k, node = match[0]
            line = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line
