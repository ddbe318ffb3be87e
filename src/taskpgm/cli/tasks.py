"""``taskpgm tasks``: list the built-in task sources, show and validate tasks.

    taskpgm tasks list bigbench|mmlu [--json]
    taskpgm tasks show SPEC_OR_COLLECTION... [--json] [--probe N] [--eval N] [--max-train N|all]
    taskpgm tasks validate SPEC_OR_COLLECTION...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from taskpgm.errors import TaskPGMError
from taskpgm.tasks.collection import TaskEntry, read_collection


def _loader() -> Any:
    """The task loaders (and pyarrow), imported when a command needs them, not for --help."""
    from taskpgm.tasks import loader

    return loader


def register(subparsers: Any) -> None:
    """Add ``tasks`` and its subcommands."""
    parser = subparsers.add_parser("tasks", help="list, show and validate task collections",
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="tasks_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("list", help="the task names of a built-in source, with kind and size")
    p.add_argument("source", choices=["bigbench", "mmlu"], help="the built-in source to list")
    p.add_argument("--json", action="store_true", help="one JSON object per task")
    p.set_defaults(handler=_list)

    p = sub.add_parser("show", help="load tasks and print their kind, size and splits")
    p.add_argument("specs", nargs="+", metavar="SPEC",
                   help="bigbench:NAME[/SUB], mmlu:SUBJECT, mmlu:*, a file, hf:ID, or a "
                        "collection .yaml")
    p.add_argument("--json", action="store_true", help="one JSON object per task")
    _split_arguments(p)
    p.set_defaults(handler=_show)

    p = sub.add_parser("validate", help="check that tasks load; list every problem found")
    p.add_argument("specs", nargs="+", metavar="PATH_OR_SPEC",
                   help="task files, collection YAMLs or source specs (bigbench:NAME, hf:ID)")
    _split_arguments(p)
    p.set_defaults(handler=_validate)


def _count(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count or a fraction") from err
    return value if 0 < value < 1 else int(value)


def _max_train(text: str) -> int | str:
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r}: give a count or 'all'") from err


def _split_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probe", type=_count, help="probe examples per task (count or fraction; "
                                                "default 100)")
    p.add_argument("--eval", type=_count, help="eval examples per task (default 200)")
    p.add_argument("--max-train", type=_max_train,
                   help="cap on train examples per task, or 'all' (default 10000)")
    p.add_argument("--seed", type=int, help="seed of the splits (default 0)")
    p.add_argument("--no-shrink", action="store_true",
                   help="require the exact probe/eval sizes even on small tasks")


def _split_values(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in ("probe", "eval", "seed"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.max_train is not None:
        values["max_train"] = None if args.max_train == "all" else args.max_train
    if args.no_shrink:
        values["shrink"] = False
    return values


def _entries(specs: list[str], values: dict[str, Any]) -> tuple[list[TaskEntry | str], Any]:
    """Specs and collection files to entries, and the split options that apply."""
    entries: list[TaskEntry | str] = []
    base: dict[str, Any] = {}
    for spec in specs:
        if spec.endswith((".yaml", ".yml")):
            collection, items = read_collection(spec)
            base.update(collection.splits.model_dump(exclude_unset=True))
            entries.extend(items)
        else:
            entries.append(spec)
    return entries, _loader()._options(**{**base, **values})


def _show(args: argparse.Namespace) -> int:
    entries, options = _entries(args.specs, _split_values(args))
    where = ", ".join(s for s in args.specs if s.endswith((".yaml", ".yml")))
    tasks = _loader().load_entries(entries, options, where=where)
    for task in tasks:
        info = _loader().summary(task)
        if args.json:
            info.pop("name")
            info.pop("spec")
            print(json.dumps({"task": task.name, **info}))
        else:
            s = info["splits"]
            choices = info["median_choices"]
            print(f"{task.name} ({task.spec}): {info['kind']}, {info['examples']} examples, "
                  f"{info['duplicates_dropped']} duplicates and {info['leaked_dropped']} leaked "
                  f"prompts dropped; train {s['train']} / probe {s['probe']} / eval {s['eval']}"
                  f"{f' ({task.capped} over --max-train)' if task.capped else ''}; median prompt "
                  f"{info['median_prompt_chars']:.0f} chars"
                  + (f", median {choices:g} choices" if choices is not None else ""))
    return 0


def _validate(args: argparse.Namespace) -> int:
    values = _split_values(args)
    problems: list[str] = []
    ok: list[str] = []
    singles: list[TaskEntry | str] = []
    for spec in args.specs:
        try:
            entries, options = _entries([spec], values)
        except TaskPGMError as err:
            problems.append(str(err))
            continue
        if spec.endswith((".yaml", ".yml")):
            try:
                _loader().check_names(_loader().expand(entries), where=spec)
            except TaskPGMError as err:
                problems.append(str(err))
            _validate_each(entries, options, ok, problems)
        else:
            singles.extend(entries)
    if singles:
        _validate_each(singles, _loader()._options(**values), ok, problems)
    from taskpgm.cli import printable

    for line in ok:
        print(f"ok: {printable(line)}")
    for problem in problems:
        print(f"error: {printable(problem)}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} task(s) or file(s) have problems", file=sys.stderr)
        return 1
    return 0


def _validate_each(entries: list[TaskEntry | str], options: Any, ok: list[str],
                   problems: list[str]) -> None:
    for entry in entries:
        try:
            for resolved in _loader().expand([entry]):
                task = _loader().load_entries([resolved], options)[0]
                ok.append(f"{task.name} ({task.spec}): {task.kind}, {task.examples} examples")
        except TaskPGMError as err:
            problems.append(str(err))


def _list(args: argparse.Namespace) -> int:
    rows: list[tuple[str, str, int | None]]
    if args.source == "bigbench":
        from taskpgm.tasks import bigbench

        rows = [(spec, v["kind"], v["examples"]) for spec, v in bigbench.catalog().items()]
    else:
        from taskpgm.tasks import mmlu

        rows = [(f"mmlu:{s}", "mc", n) for s, n in mmlu.subjects().items()]
    _emit(json.dumps({"spec": spec, "kind": kind, "examples": n}) if args.json
          else f"{spec:60s} {kind:12s} {'' if n is None else n}" for spec, kind, n in rows)
    return 0


def _emit(lines: Any) -> None:
    """Print lines; a reader that stops early (``| head``) is not an error."""
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
