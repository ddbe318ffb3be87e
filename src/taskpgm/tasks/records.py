"""Turn one source record into an example through a field mapping, or say what is wrong.

By default a record has ``prompt``, ``choices`` (a list) and ``answer`` (index of
the correct choice, or a list of indices when several are correct) for multiple
choice, or ``prompt`` and ``target`` (a string or a list of acceptable strings)
for generative tasks. A :class:`FieldMapping` names other fields.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from taskpgm.errors import DataError

if TYPE_CHECKING:  # the builder and the formatter need pyarrow: only when records are read
    from taskpgm.tasks.builder import Problems, TaskBuilder
    from taskpgm.tasks.formatting import Template


class FieldMapping(BaseModel):
    """Which source fields hold the prompt, the choices and the answer (or the target)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = "prompt"
    # A field holding a list of choices, or a list of fields holding one choice each.
    choices: str | list[str] = "choices"
    # Index of the correct choice (or a list of indices when several are correct).
    answer: str = "answer"
    # Reference completion (or a list of acceptable completions) of a generative task.
    target: str = "target"
    # Force the kind instead of detecting it from the fields present.
    kind: str | None = Field(default=None, pattern="^(mc|gen)$")


def add_record(
    record: dict[str, Any],
    where: str,
    builder: TaskBuilder,
    mapping: FieldMapping,
    template: Template,
    problems: Problems,
) -> None:
    """Validate one record against ``mapping`` and add it to ``builder`` (or note a problem)."""
    from taskpgm.tasks.formatting import format_checked


    prompt = record.get(mapping.prompt)
    if prompt is None:
        problems.add(where, f"missing field {mapping.prompt!r} (the prompt); the record has "
                            f"fields {sorted(record)}; add it or map another field with prompt:")
        return
    if not isinstance(prompt, str) or not prompt:
        problems.add(where, f"field {mapping.prompt!r} must be a non-empty string, got "
                            f"{_show(prompt)}; fix the value")
        return
    kind = mapping.kind or _detect_kind(record, mapping)
    if kind is None:
        problems.add(where, f"no field {_name(mapping.choices)!r} (multiple choice) or "
                            f"{mapping.target!r} (generative); the record has fields "
                            f"{sorted(record)}; add one or give a field mapping")
        return
    if not builder.check_kind(kind, where, problems):  # type: ignore[arg-type]
        return
    text = format_checked(template, record, prompt, where, problems)
    if text is None:
        return
    if kind == "mc":
        choices = _choices(record, mapping, where, problems)
        if choices is None:
            return
        correct = _answer(record, mapping, len(choices), where, problems)
        if correct is None:
            return
        if _is_text(text, prompt, *choices, where=where, problems=problems):
            builder.add(text, prompt, choices, correct)
    else:
        targets = _targets(record, mapping, where, problems)
        if targets is not None and _is_text(text, prompt, *targets, where=where,
                                            problems=problems):
            builder.add(text, prompt, None, (), targets)


def _is_text(*strings: str, where: str, problems: Problems) -> bool:
    """Whether every string has a UTF-8 form (one decoded from an escape such as \\ud800,
    a lone surrogate, has none); notes the problem when not."""
    try:
        for value in strings:
            value.encode("utf-8")
    except UnicodeEncodeError:
        problems.add(where, "a lone surrogate escape (e.g. \\ud800) that is no character; "
                            "fix the string or remove it")
        return False
    return True


def _detect_kind(record: dict[str, Any], mapping: FieldMapping) -> str | None:
    fields = mapping.choices if isinstance(mapping.choices, list) else [mapping.choices]
    if all(f in record for f in fields):
        return "mc"
    if mapping.target in record:
        return "gen"
    return None


def _choices(record: dict[str, Any], m: FieldMapping, where: str, problems: Problems
             ) -> list[str] | None:
    if isinstance(m.choices, list):
        value: Any = [record.get(f) for f in m.choices]
    else:
        value = record.get(m.choices)
        if isinstance(value, str) and value.startswith("["):  # a JSON list in a CSV cell
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
    name = _name(m.choices)
    if value is None:
        problems.add(where, f"missing field {name!r} (the choices); add it")
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        problems.add(where, f"field {name!r} must be a list of strings, got {_show(value)}; "
                            "fix the value")
        return None
    if len(value) < 2:
        problems.add(where, f"field {name!r} has {len(value)} choice(s); a multiple-choice "
                            "example needs at least 2: add choices or make the task generative")
        return None
    if len(set(value)) != len(value):
        dup = next(c for c in value if value.count(c) > 1)
        problems.add(where, f"field {name!r} lists the choice {dup!r} more than once; "
                            "choices must be distinct: remove the duplicate")
        return None
    return value


def _answer(record: dict[str, Any], m: FieldMapping, n: int, where: str, problems: Problems
            ) -> list[int] | None:
    value = record.get(m.answer)
    if value is None:
        problems.add(where, f"missing field {m.answer!r} (index of the correct choice); add it")
        return None
    values = value if isinstance(value, list) and value else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        problems.add(where, f"field {m.answer!r} must be an integer index into the choices "
                            f"(0..{n - 1}) or a list of them, got {_show(value)}; fix the value")
        return None
    bad = [v for v in values if not 0 <= v < n]
    if bad:
        problems.add(where, f"answer index {bad[0]} is out of range for {n} choices "
                            f"(valid: 0..{n - 1}); fix the answer or the choices")
        return None
    return list(dict.fromkeys(values))


def _targets(record: dict[str, Any], m: FieldMapping, where: str, problems: Problems
             ) -> list[str] | None:
    value = record.get(m.target)
    if value is None:
        problems.add(where, f"missing field {m.target!r} (the reference completion); add it")
        return None
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) for v in values):
        problems.add(where, f"field {m.target!r} must be a string or a non-empty list of "
                            f"strings, got {_show(value)}; fix the value")
        return None
    return values


def check_mapping(spec: str, columns: set[str], m: FieldMapping, template: Template,
                   first: str) -> None:
    """A field the user mapped (or the template names) must exist in the source at all."""
    defaults = FieldMapping()
    named: list[tuple[str, str]] = []
    for role in ("prompt", "answer", "target"):
        value = getattr(m, role)
        if value != getattr(defaults, role):
            named.append((role, value))
    if m.choices != defaults.choices:
        named += [("choices", c) for c in (m.choices if isinstance(m.choices, list)
                                            else [m.choices])]
    named += [("template", f) for f in template.fields if f != "prompt"]
    missing = [(r, f) for r, f in named if f not in columns]
    if m.kind == "gen":
        missing = [(r, f) for r, f in missing if r not in ("choices", "answer")]
    if m.kind == "mc" or any(r in ("choices", "answer") for r, _ in named):
        missing = [(r, f) for r, f in missing if r != "target"]
    if missing:
        role, field = missing[0]
        raise DataError(
            f"{spec}: the field mapping names {role} field {field!r}, which is not a column of "
            f"the file ({first} has {sorted(columns)}); fix the mapping in the collection file"
        )


def _name(choices: str | list[str]) -> str:
    return choices if isinstance(choices, str) else "/".join(choices)


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, bytes) else repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"
