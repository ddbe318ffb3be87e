"""BIG-bench JSON tasks, read from the ``bigbench==1.0.0`` source archive on PyPI, or from
a BIG-bench checkout named by ``$TASKPGM_BIGBENCH``.

The archive (358 MB) is downloaded once into the cache and never installed
(the package needs tensorflow). Its member list is indexed once
(``bigbench-1.0.0/members.json``) and only the ``task.json`` files of tasks
that are used are extracted, each task into its own cache folder that is
renamed into place when complete. A checkout (a clone of google/BIG-bench, or
its ``bigbench/benchmark_tasks`` folder) is read in place: its member list is
walked on each use (a few hundred folders), and only the task catalog is cached,
under a name that changes when any of its ``task.json`` files does.

A task is ``bigbench:NAME`` (all its subtasks together, if it has any) or
``bigbench:NAME/SUBTASK``. An example with ``target_scores`` is multiple
choice: the choices are its keys, in an order shuffled by a permutation seeded
from the example's content (:func:`choice_order`), and every choice with the
highest score is correct. Otherwise ``target`` (a string or a list) is the reference.
The prompt follows BIG-bench's zero-shot format:
``task_prefix + example_input_prefix + input [+ choice_prefix + choices] +
example_output_prefix`` with BIG-bench's defaults (``"\\nQ: "``, ``"\\nA: "``,
``"\\n  choice: "``, choices appended unless ``append_choices_to_input`` is
false), leading whitespace removed. Programmatic tasks (``task.py``) are not
supported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from taskpgm import atomic
from taskpgm.cache import NOT_SERVED, home, pip_download
from taskpgm.errors import DataError, NotFoundError
from taskpgm.progress import Progress
from taskpgm.tasks.builder import Problems, TaskBuilder
from taskpgm.tasks.formatting import Template, format_checked, suggest
from taskpgm.tasks.loadprogress import LoadProgress

REQUIREMENT = "bigbench==1.0.0"
PREFIX = "bigbench-1.0.0/bigbench/benchmark_tasks/"
#: The environment variable naming a BIG-bench checkout to read instead of the archive.
CHECKOUT_ENV = "TASKPGM_BIGBENCH"
CHECKOUT_URL = "https://github.com/google/BIG-bench"


def checkout() -> Path | None:
    """The ``benchmark_tasks`` folder of ``$TASKPGM_BIGBENCH``, or None where it is unset.

    The variable may name a clone of BIG-bench, its ``bigbench`` package folder, or
    ``benchmark_tasks`` itself.

    Raises:
        NotFoundError: it is set, but no folder there holds BIG-bench tasks.
    """
    raw = os.environ.get(CHECKOUT_ENV, "").strip()
    if not raw:
        return None
    root = Path(raw).expanduser()
    for cand in (root / "bigbench" / "benchmark_tasks", root / "benchmark_tasks", root):
        if cand.is_dir() and (any(cand.glob("*/task.json")) or any(cand.glob("*/*/task.json"))):
            return cand
    raise NotFoundError(f"{CHECKOUT_ENV}={raw} holds no BIG-bench tasks (looked for "
                        "bigbench/benchmark_tasks/*/task.json in it); point it at a clone of "
                        f"{CHECKOUT_URL}, or unset it to read the {REQUIREMENT} archive")


def folder() -> Path:
    """Where the index and the extracted tasks live (for a checkout: its cached catalog)."""
    root = checkout()
    if root is None:
        return home() / "bigbench-1.0.0"
    return home() / "bigbench-checkout" / hashlib.sha256(str(root.resolve()).encode()) \
        .hexdigest()[:16]


def archive() -> Path:
    """The source archive, downloaded once.

    Raises:
        NotFoundError: the index does not serve it (or cannot be reached); the message says
            where to put the file by hand, and that a checkout can be read instead.
    """
    try:
        return pip_download(REQUIREMENT, sdist=True)
    except NotFoundError as err:
        raise NotFoundError(f"{err}; or set {CHECKOUT_ENV} to a clone of {CHECKOUT_URL} "
                            "(taskpgm then reads its task.json files in place)") from err


def task_root() -> Path:
    """The folder that holds ``TASK[/SUBTASK]/task.json`` (a checkout's, or the cache's)."""
    root = checkout()
    return folder() / "tasks" if root is None else root


def _walk(root: Path) -> dict[str, dict[str, Any]]:
    """The member list of a checkout, in the archive's form."""
    tasks: dict[str, dict[str, Any]] = {}
    for task in sorted(p for p in root.iterdir() if p.is_dir()):
        if task.name.startswith(("_", ".")):
            continue
        files = [f"{task.name}/task.json"] if (task / "task.json").is_file() else []
        files += sorted(f"{task.name}/{sub.name}/task.json" for sub in task.iterdir()
                        if sub.is_dir() and (sub / "task.json").is_file())
        py = (task / "task.py").is_file()
        if files or py:
            tasks[task.name] = {"json": sorted(files), "py": py}
    return tasks


def members() -> dict[str, dict[str, Any]]:
    """``{task: {"json": [relative task.json paths], "py": bool}}`` for every task."""
    root = checkout()
    if root is not None:
        return _walk(root)
    path = folder() / "members.json"
    if path.exists():
        data: dict[str, dict[str, Any]] = json.loads(path.read_text())
        return data
    tasks: dict[str, dict[str, Any]] = {}
    with tarfile.open(archive(), "r:gz") as tar:
        for m in tar:
            if not m.name.startswith(PREFIX) or not m.isfile():
                continue
            rel = m.name[len(PREFIX):]
            parts = rel.split("/")
            if len(parts) < 2 or parts[0].startswith(("_", ".")):
                continue
            entry = tasks.setdefault(parts[0], {"json": [], "py": False})
            if parts[-1] == "task.json" and len(parts) <= 3:
                entry["json"].append(rel)
            elif rel == f"{parts[0]}/task.py":
                entry["py"] = True
    tasks = {k: v for k, v in sorted(tasks.items()) if v["json"] or v["py"]}
    for v in tasks.values():
        v["json"].sort()
    atomic.write_text(path, json.dumps(tasks, indent=1))
    return tasks


def not_served() -> str | None:
    """None where BIG-bench's tasks can be read (the archive, downloaded and indexed once,
    or a checkout); the index's answer where it does not serve the archive (a filtered
    mirror). Every other failure to get it (no network at all, a corrupt download) raises."""
    try:
        members()
    except NotFoundError as err:
        if NOT_SERVED not in str(err):
            raise
        return str(err)
    return None


def resolve(spec_name: str) -> tuple[str, list[str]]:
    """``NAME`` or ``NAME/SUBTASK`` to (task name, relative task.json paths with examples).

    Raises:
        NotFoundError: no such task or subtask (close matches are suggested).
        DataError: a programmatic task.
    """
    index = members()
    name, _, sub = spec_name.partition("/")
    if name not in index:
        close = suggest(name, list(index))
        hint = f"did you mean {', '.join('bigbench:' + c for c in close)}? " if close else ""
        raise NotFoundError(f"BIG-bench has no task {name!r}; {hint}"
                            "see `taskpgm tasks list bigbench` for the names")
    entry = index[name]
    files: list[str] = entry["json"]
    if not files:
        raise DataError(f"bigbench:{name} is a programmatic task (task.py) and taskpgm reads only "
                        "JSON tasks; choose another task (`taskpgm tasks list bigbench`)")
    subs = sorted({f.split("/")[1] for f in files if f.count("/") == 2})
    if sub:
        if sub not in subs:
            close = suggest(sub, subs)
            hint = f"did you mean {', '.join(f'bigbench:{name}/{c}' for c in close)}? " \
                if close else ""
            raise NotFoundError(f"BIG-bench task {name!r} has no subtask {sub!r}; {hint}its "
                                f"subtasks are: {', '.join(subs) or 'none'}")
        return f"{name}.{sub}", [f"{name}/{sub}/task.json"]
    # The top-level task.json of a task with subtasks only describes them.
    return name, [f for f in files if f.count("/") == 2] or files


def extract(tasks: list[str]) -> None:
    """Make sure every ``task.json`` of ``tasks`` is in the cache (one pass over the archive)."""
    if checkout() is not None:
        return  # read in place
    index = members()
    missing = [t for t in dict.fromkeys(tasks) if not (folder() / "tasks" / t).is_dir()]
    if not missing:
        return
    wanted = {PREFIX + f: t for t in missing for f in index[t]["json"]}
    with contextlib.ExitStack() as stack:  # each task's directory appears whole, or not at all
        staging = {t: stack.enter_context(atomic.new_directory(folder() / "tasks" / t))
                   for t in missing}
        progress = Progress(f"extract bigbench {', '.join(missing)}", len(wanted), unit="files")
        with tarfile.open(archive(), "r:gz") as tar:
            for m in tar:
                task = wanted.pop(m.name, None)
                if task is None:
                    continue
                src = tar.extractfile(m)
                assert src is not None
                dest = staging[task] / m.name[len(PREFIX) + len(task) + 1:]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                progress.update()
                if not wanted:
                    break


class _NotMultipleChoice(Exception):
    """An example of a task read as multiple choice can only be read as generative."""


def load(spec_name: str, builder: TaskBuilder, template: Template,
         max_examples: int | None = None) -> int:
    """Stream the examples of ``bigbench:spec_name`` into ``builder``; returns how many.

    A task is multiple choice when all its examples are; a task that mixes
    multiple-choice and generative subtasks, or has a multiple-choice example
    with fewer than 2 choices but a ``target``, is read again as generative
    (every example's ``target``, or its top-scoring choices), and says so.
    """
    try:
        return _load(spec_name, builder, template, max_examples, force_gen=False)
    except _NotMultipleChoice as why:
        builder.reset()
        print(f"note: bigbench:{spec_name} is read as a generative task: {why}",
              file=sys.stderr)
        return _load(spec_name, builder, template, max_examples, force_gen=True)


def _load(spec_name: str, builder: TaskBuilder, template: Template, max_examples: int | None,
          *, force_gen: bool) -> int:
    _, files = resolve(spec_name)
    task = spec_name.split("/")[0]
    extract([task])
    base = task_root()
    problems = Problems(f"bigbench:{spec_name}")
    progress = LoadProgress(builder.task)
    n = 0
    for rel in files:
        path = base / rel
        doc = _parse(path)
        where_file = f"{path.relative_to(base)}"
        for i, ex in _examples(doc, where_file, problems):
            add_example(doc, ex, f"{where_file} example {i}", builder, template, problems,
                        force_gen=force_gen)
            n += 1
            progress.update()
            if max_examples is not None and n >= max_examples:
                problems.raise_if_any()
                return n
    if n == 0 and not problems:
        raise DataError(f"bigbench:{spec_name} has no examples; choose another task")
    problems.raise_if_any()
    return n


def _examples(doc: Any, where: str, problems: Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    examples = doc.get("examples") if isinstance(doc, dict) else None
    if not isinstance(examples, list):
        problems.add(where, "has no 'examples' list")
        return
    for i, ex in enumerate(examples):
        if isinstance(ex, dict):
            yield i, ex
        else:
            problems.add(f"{where} example {i}", "is not a JSON object")


def add_example(doc: dict[str, Any], ex: dict[str, Any], where: str, builder: TaskBuilder,
                template: Template, problems: Problems, *, force_gen: bool = False) -> None:
    """Validate one BIG-bench example and add it to ``builder``.

    Raises:
        _NotMultipleChoice: the task is being read as multiple choice but this
            example can only be generative.
    """
    text = ex.get("input")
    if not isinstance(text, str):
        problems.add(where, f"'input' must be a string, got {type(text).__name__}")
        return
    scores = ex.get("target_scores")
    if force_gen:
        kind = "gen"
    else:
        kind = "mc" if builder.kind == "mc" or (builder.kind is None and scores is not None) \
            else "gen"
    usable_target = isinstance(ex.get("target"), str | list) and bool(ex.get("target"))
    if not builder.check_kind(kind, where, problems):  # type: ignore[arg-type]
        return
    prefix = str(doc.get("task_prefix", ""))
    before = str(doc.get("example_input_prefix", "\nQ: "))
    after = str(doc.get("example_output_prefix", "\nA: "))
    if kind == "mc":
        if not isinstance(scores, dict) or len(scores) < 2:
            if usable_target:
                raise _NotMultipleChoice(
                    f"{where} is generative (no 'target_scores')" if scores is None else
                    f"{where} has a target but not 2 choices in 'target_scores'")
            problems.add(where, "a multiple-choice example needs 'target_scores' with at least 2 "
                                "choices")
            return
        values = list(scores.values())
        if not all(isinstance(v, int | float) for v in values):
            problems.add(where, "'target_scores' values must be numbers")
            return
        top = max(values)
        if top <= min(values):
            if usable_target:
                raise _NotMultipleChoice(f"{where}: no choice scores higher than the others")
            problems.add(where, "no choice in 'target_scores' scores higher than the others")
            return
        order = choice_order(text, [str(c) for c in scores])
        choices = [str(c) for c in scores]
        choices = [choices[i] for i in order]
        correct = [k for k, i in enumerate(order) if values[i] == top]
        body = text
        if _flag(doc.get("append_choices_to_input", True)):
            sep = str(doc.get("choice_prefix", "\n  choice: "))
            body = text + sep + sep.join(choices)
        prompt = format_checked(template, ex, (prefix + before + body + after).lstrip(), where,
                                problems)
        if prompt is not None:
            builder.add(prompt, text, choices, correct)
        return
    target = ex.get("target")
    if target is None and isinstance(scores, dict) and scores:
        top = max(scores.values())
        target = [k for k, v in scores.items() if v == top]
    items: list[Any] = target if isinstance(target, list) else [target]
    if not items or not all(isinstance(t, str) for t in items):
        problems.add(where, f"'target' must be a string or a list of strings, got {target!r}")
        return
    targets = [str(t) for t in items]
    body = text
    if isinstance(scores, dict) and scores and _flag(doc.get("append_choices_to_input", True)):
        sep = str(doc.get("choice_prefix", "\n  choice: "))  # as BIG-bench formats it
        body = text + sep + sep.join(str(c) for c in scores)
    prompt = format_checked(template, ex, (prefix + before + body + after).lstrip(), where,
                            problems)
    if prompt is not None:
        builder.add(prompt, text, None, (), targets)


def choice_order(text: str, choices: list[str]) -> list[int]:
    """A permutation of the choices, seeded by the example's content (so it is stable).

    BIG-bench files often list the correct choice in a fixed place (arithmetic:
    last in 99 of 100 examples), a shortcut a model learns in a few steps
    instead of the task; BIG-bench itself shuffles the choices when it evaluates.
    """
    seed = hashlib.sha256("\x1f".join([text, *choices]).encode()).digest()
    order = list(range(len(choices)))
    random.Random(int.from_bytes(seed[:8], "big")).shuffle(order)
    return order


def catalog() -> dict[str, dict[str, Any]]:
    """``{spec: {"kind", "examples"}}`` of every JSON task and subtask (built once, cached).

    Building it parses every ``task.json`` (1.7 GB of JSON, a minute or two). A checkout's
    catalog is cached under a name made of its files' sizes and modification times, so an
    update of the checkout builds it again.
    """
    index = members()
    root = checkout()
    name = "catalog.json"
    if root is not None:
        stats = [(f, (root / f).stat()) for t in index.values() for f in t["json"]]
        key = "\n".join(f"{f} {st.st_size} {st.st_mtime_ns}" for f, st in stats)
        name = f"catalog-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    path = folder() / name
    if path.exists():
        data: dict[str, dict[str, Any]] = json.loads(path.read_text())
        return data
    per_file: dict[str, tuple[str, int]] = {}
    files = [f for t in index.values() for f in t["json"]]
    progress = Progress("index bigbench tasks", len(files), unit="files")
    for rel, doc in _documents(files):
        examples = (doc.get("examples") or []) if isinstance(doc, dict) else []
        mc = bool(examples) and all(isinstance(e, dict) and "target_scores" in e
                                    for e in examples[:1])
        per_file[rel] = ("mc" if mc else "gen", len(examples))
        progress.update()
    out: dict[str, dict[str, Any]] = {}
    for task, entry in index.items():
        if not entry["json"]:
            out[f"bigbench:{task}"] = {"kind": "programmatic", "examples": None}
            continue
        _, files = resolve(task)
        kinds = {per_file[f][0] for f in files}
        out[f"bigbench:{task}"] = {"kind": "/".join(sorted(kinds)),
                                   "examples": sum(per_file[f][1] for f in files)}
        for f in files:
            if f.count("/") == 2:
                out[f"bigbench:{task}/{f.split('/')[1]}"] = {"kind": per_file[f][0],
                                                             "examples": per_file[f][1]}
    atomic.write_text(path, json.dumps(out, indent=1))
    return out


def _parse(path: Path) -> Any:
    """One task.json, or a DataError that names it (a checkout's file may be mid-edit)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); restore the file (git checkout "
                        "-- it, in a clone) or delete the extracted copy to extract it again")\
            from err


def _documents(files: list[str]) -> Iterator[tuple[str, Any]]:
    """``(relative path, parsed task.json)`` for ``files``, from the checkout or one pass over
    the archive."""
    root = checkout()
    if root is not None:
        for rel in files:
            yield rel, _parse(root / rel)
        return
    wanted = {PREFIX + f: f for f in files}
    with tarfile.open(archive(), "r:gz") as tar:
        for m in tar:
            found = wanted.get(m.name)
            if found is None:
                continue
            src = tar.extractfile(m)
            assert src is not None
            with src:
                yield found, json.load(src)


def _flag(value: object) -> bool:
    """A task.json boolean; some tasks write ``"false"`` as a string and mean false."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "")
    return bool(value)
