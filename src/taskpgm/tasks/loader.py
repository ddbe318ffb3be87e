"""Load tasks and collections: source -> examples -> deduplicated, leak-free splits.

``load_task`` loads one task; ``load_collection`` loads several and removes
from every train split each prompt that is in the probe or eval split of any
task of the collection (the count is ``leaked_dropped``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from taskpgm.errors import ConfigError
from taskpgm.tasks import bigbench, files, mmlu
from taskpgm.tasks.builder import TaskBuilder
from taskpgm.tasks.collection import TaskEntry, read_collection
from taskpgm.tasks.formatting import parse_template
from taskpgm.tasks.records import FieldMapping
from taskpgm.tasks.schema import Example, TaskSplits
from taskpgm.tasks.splits import Selected, SplitOptions, split_sizes


@dataclass
class _Loaded:
    entry: TaskEntry
    name: str
    kind: str
    selected: Selected
    keep: int | None


def expand(entries: Iterable[TaskEntry | str]) -> list[TaskEntry]:
    """Resolve names and expand ``mmlu:*`` into one entry per subject."""
    out: list[TaskEntry] = []
    for item in entries:
        entry = TaskEntry(spec=item) if isinstance(item, str) else item
        spec = entry.spec
        if spec.startswith("mmlu:"):
            subjects = mmlu.resolve(spec[5:])
            if len(subjects) > 1 and entry.name is not None:
                raise ConfigError(f"{spec} names {len(subjects)} tasks, so it cannot have one "
                                  f"name ({entry.name!r}); remove name:")
            for s in subjects:
                out.append(entry.model_copy(update={"spec": f"mmlu:{s}",
                                                    "name": entry.name or f"mmlu.{s}"}))
        elif spec.startswith("bigbench:"):
            name, _ = bigbench.resolve(spec[9:])
            out.append(entry.model_copy(update={"name": entry.name or name}))
        elif spec.startswith("hf:") or files.is_file_spec(spec):
            out.append(entry.model_copy(update={"name": entry.name or files.task_name_for(spec)}))
        else:
            raise ConfigError(f"task spec {spec!r} is neither bigbench:NAME, mmlu:SUBJECT, "
                              "hf:ID nor a path to a .jsonl/.json/.csv/.parquet file or "
                              "datasets directory; fix the spec")
    return out


def check_names(entries: Sequence[TaskEntry], where: str = "") -> None:
    """Two tasks with one name would overwrite each other's artifacts: refuse."""
    seen: dict[str, TaskEntry] = {}
    problems = []
    for e in entries:
        assert e.name is not None
        if e.name in seen:
            first = seen[e.name]
            at = f" (lines {first.line} and {e.line})" if e.line and first.line else ""
            problems.append(f"task name {e.name!r} is used twice{at}: {first.spec} and {e.spec}")
        else:
            seen[e.name] = e
    if problems:
        raise ConfigError(f"{where + ': ' if where else ''}" + "; ".join(problems)
                          + "; give each task its own name: (name: ...)")


def _load(entry: TaskEntry, options: SplitOptions, keep: int | None) -> _Loaded:
    assert entry.name is not None
    builder = TaskBuilder(entry.name, keep, options.seed)
    template = parse_template(entry.template)
    spec = entry.spec
    if spec.startswith("bigbench:"):
        bigbench.load(spec[9:], builder, template, entry.max_examples)
    elif spec.startswith("mmlu:"):
        mmlu.load(spec[5:], builder, template, entry.max_examples)
    else:
        files.load_file(spec, builder, entry.mapping or FieldMapping(), template,
                        max_examples=entry.max_examples)
    selected = builder.finish()
    return _Loaded(entry, entry.name, builder.kind or "mc", selected, keep)


def _split(loaded: _Loaded, options: SplitOptions, held_out: np.ndarray) -> TaskSplits | None:
    """Cut the ranked examples into splits; ``None`` if more candidates must be kept."""
    sel = loaded.selected
    n_probe, n_eval = split_sizes(sel.distinct, options, task=_where(loaded.entry))
    probe = tuple(sel.examples[:n_probe])
    evals = tuple(sel.examples[n_probe:n_probe + n_eval])
    own = np.array(sel.keys[:n_probe + n_eval], dtype=np.uint64)
    foreign = np.setdiff1d(held_out, own, assume_unique=True)
    leaked = int(np.isin(foreign, sel.all_keys, assume_unique=True).sum()) if len(foreign) else 0
    rest = zip(sel.examples[n_probe + n_eval:], sel.keys[n_probe + n_eval:], strict=True)
    foreign_set = set(foreign.tolist())
    available = sel.distinct - n_probe - n_eval - leaked
    want = available if options.max_train is None else min(available, options.max_train)
    train = tuple(ex for ex, key in rest if key not in foreign_set)[:want]
    if len(train) < want:
        return None
    corrupted = 0
    if loaded.entry.corrupt_train is not None:
        train, corrupted = corrupt_labels(train, loaded.entry.corrupt_train.share,
                                          loaded.entry.corrupt_train.seed,
                                          where=_where(loaded.entry))
    examples = sel.total
    prompts = [len(e.prompt) for e in (*probe, *evals, *train)]
    choices = [len(e.choices) for e in (*probe, *evals, *train) if e.choices is not None]
    meta: dict[str, object] = {
        "median_prompt_chars": float(statistics.median(prompts)) if prompts else 0.0,
        "median_choices": float(statistics.median(choices)) if choices else None,
        "template": loaded.entry.template,
        "split_options": options.model_dump(),
    }
    if loaded.entry.corrupt_train is not None:
        meta["corrupt_train"] = {**loaded.entry.corrupt_train.model_dump(),
                                 "changed": corrupted}
    return TaskSplits(
        name=loaded.name, spec=loaded.entry.spec, kind=loaded.kind,  # type: ignore[arg-type]
        train=train, probe=probe, eval=evals, examples=examples,
        duplicates_dropped=sel.total - sel.distinct, leaked_dropped=leaked, meta=meta,
        capped=available - len(train),
    )


def corrupt_labels(train: Sequence[Example], share: float, seed: int, *, where: str = ""
                   ) -> tuple[tuple[Example, ...], int]:
    """The train split with ``share`` of its labels redrawn uniformly over each example's
    choices (the draw may repeat the true label), decided by (seed, the example's id)
    alone, so it does not depend on the order or on the other examples. Returns the split
    and how many labels changed."""
    out, changed = [], 0
    for ex in train:
        if ex.choices is None:
            raise ConfigError(f"{where}: corrupt_train applies to multiple-choice tasks; this "
                              "one is generative; remove corrupt_train from it")
        digest = int(hashlib.sha256(f"{seed}:{ex.id}".encode()).hexdigest()[:16], 16)
        rng = np.random.default_rng(digest)
        if rng.random() < share:
            label = int(rng.integers(len(ex.choices)))
            changed += label != ex.answer
            ex = dataclasses.replace(ex, correct=(label,))
        out.append(ex)
    return tuple(out), changed


def load_entries(entries: Sequence[TaskEntry | str], options: SplitOptions | None = None,
                 *, where: str = "") -> list[TaskSplits]:
    """Load resolved entries, check names, remove leaked prompts from train splits."""
    options = options or SplitOptions()
    resolved = expand(entries)
    check_names(resolved, where)
    loaded = [_load(e, options, options.keep()) for e in resolved]
    held: list[np.ndarray] = []
    for item in loaded:
        n_probe, n_eval = split_sizes(item.selected.distinct, options, task=_where(item.entry))
        held.append(np.array(item.selected.keys[:n_probe + n_eval], dtype=np.uint64))
    held_out = np.unique(np.concatenate(held)) if held else np.zeros(0, np.uint64)
    out = []
    for item in loaded:
        result = _split(item, options, held_out)
        while result is None:  # leaked prompts used up the kept candidates: keep more
            assert item.keep is not None
            item = _load(item.entry, options, 2 * item.keep)
            result = _split(item, options, held_out)
        out.append(result)
    return out


def load_task(
    spec: str,
    *,
    probe: int | float = 100,
    eval: int | float = 200,
    max_train: int | None = 10_000,
    seed: int = 0,
    shrink: bool = True,
    mapping: FieldMapping | dict[str, Any] | None = None,
    template: str | None = None,
    max_examples: int | None = None,
    name: str | None = None,
) -> TaskSplits:
    """Load one task with deterministic train / probe / eval splits.

    Args:
        spec: ``bigbench:NAME[/SUBTASK]``, ``mmlu:SUBJECT``, a file path or
            ``hf:ID[:CONFIG][@REVISION][?split=SPLIT]``.
        probe: probe examples (count, or fraction below 1).
        eval: eval examples (count, or fraction below 1).
        max_train: cap on train examples (``None``: all the rest).
        seed: seed of the split.
        shrink: let probe / eval shrink on small tasks (see :class:`SplitOptions`).
        mapping: field mapping for files (see :class:`FieldMapping`).
        template: prompt template with ``{field}`` placeholders.
        max_examples: read at most this many examples of the source.
        name: task name (default: derived from the spec).

    Returns:
        The task's splits and load statistics.

    Raises:
        TaskPGMError: the source is missing or malformed (the message says where and how to fix).
    """
    options = _options(probe=probe, eval=eval, max_train=max_train, seed=seed, shrink=shrink)
    fm = FieldMapping.model_validate(mapping) if isinstance(mapping, dict) else mapping
    entry = TaskEntry(spec=spec, name=name, mapping=fm, template=template,
                      max_examples=max_examples)
    if spec == "mmlu:*":
        raise ConfigError("mmlu:* names 57 tasks; use load_collection(['mmlu:*']) instead")
    return load_entries([entry], options)[0]


def load_collection(
    entries_or_path: str | Path | Sequence[TaskEntry | str],
    *,
    options: SplitOptions | None = None,
    **split_options: Any,
) -> list[TaskSplits]:
    """Load a collection (a YAML path, or a list of entries / spec strings).

    Split options come from ``options``, else from keyword arguments (``probe``,
    ``eval``, ``max_train``, ``seed``, ``shrink``), else from the file's
    ``splits:`` section. Duplicate task names are an error; a prompt in any
    task's probe or eval split is removed from every train split.
    """
    if isinstance(entries_or_path, str | Path):
        collection, entries = read_collection(entries_or_path)
        base = collection.splits.model_dump(exclude_unset=True)
        opts = options or _options(**{**base, **split_options})
        return load_entries(entries, opts, where=str(entries_or_path))
    opts = options or _options(**split_options)
    return load_entries(list(entries_or_path), opts)


def _where(entry: TaskEntry) -> str:
    return entry.name if entry.spec == entry.name else f"{entry.name} ({entry.spec})"


def _options(**values: Any) -> SplitOptions:
    try:
        return SplitOptions.model_validate(values)
    except ValueError as err:
        raise ConfigError(f"invalid split options: {err}") from err


def summary(task: TaskSplits) -> dict[str, Any]:
    """The per-task summary of ``taskpgm tasks show`` (exactly these keys)."""
    return {
        "name": task.name,
        "spec": task.spec,
        "kind": task.kind,
        "examples": task.examples,
        "duplicates_dropped": task.duplicates_dropped,
        "leaked_dropped": task.leaked_dropped,
        "splits": task.sizes,
        "median_prompt_chars": task.meta.get("median_prompt_chars"),
        "median_choices": task.meta.get("median_choices"),
    }


__all__ = ["load_collection", "load_task", "summary"]
