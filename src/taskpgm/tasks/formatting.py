"""Prompt formatting and the content id of an example.

Formatting is deliberately small and explicit: a template is plain text with
``{field}`` placeholders naming fields of the source record (``{prompt}`` is
the mapped prompt field). The default template ``"{prompt}"`` leaves the prompt
as it is. The formatted text is what the model sees and what the example's id
(and so every later fingerprint) is computed from. Applying a base model's chat
template is a later stage's job and happens on top of this text.

The id is 128 bits (32 hex digits) computed from the example's content only.
With the *rest* of an example

    task RS choice_1 US choice_2 ... RS correct_1,correct_2   (multiple choice)
    task RS RS target_1 US target_2 ...                         (generative)

(RS = U+001E, US = U+001F) and its canonical string ``task RS prompt RS ...``
(the rest with the formatted prompt inserted after the task), the id's high
half is XXH3-64 (seed 1) of the canonical string and its low half is
``mix64(xxh3(prompt) ^ mix64(xxh3(rest)))`` with mix64 the splitmix64
finalizer; the split rank is computed from the low half. The prompt *key* used
to find duplicate and leaked prompts is XXH3-64 of the prompt field before
formatting.
"""

from __future__ import annotations

import difflib
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from taskpgm.errors import ConfigError
from taskpgm.tasks.splits import mix64

RS, US = "\x1e", "\x1f"
DEFAULT_TEMPLATE = "{prompt}"


@dataclass(frozen=True)
class Template:
    """A parsed prompt template: literal text alternating with field names."""

    text: str
    parts: tuple[tuple[str, str | None], ...]  # (literal, field or None)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(f for _, f in self.parts if f is not None)

    @property
    def is_plain(self) -> bool:
        return self.parts == (("", "prompt"),)


def parse_template(text: str | None) -> Template:
    """Parse ``"Question: {prompt}\\nAnswer:"``; ``{{`` and ``}}`` are literal braces.

    Raises:
        ConfigError: a placeholder has a format spec, a conversion or no name.
    """
    text = DEFAULT_TEMPLATE if text is None else text
    parts: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as err:
        raise ConfigError(f"prompt template {text!r} is malformed ({err}); "
                          "write placeholders as {field} and literal braces as {{ }}") from err
    for literal, name, spec, conversion in parsed:
        if name is not None and (not name.isidentifier() or spec or conversion):
            raise ConfigError(
                f"prompt template {text!r}: placeholder {{{name}"
                f"{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}} "
                "is not supported; use a plain field name "
                "such as {prompt}"
            )
        parts.append((literal, name))
    return Template(text, tuple(parts))


def format_record(template: Template, record: Mapping[str, object], prompt: str) -> str:
    """Format one record; ``{prompt}`` is ``prompt``, other names are the record's fields.

    Raises:
        KeyError: a field named by the template is missing (the caller says where).
    """
    if template.is_plain:
        return prompt
    out: list[str] = []
    for literal, name in template.parts:
        out.append(literal)
        if name is not None:
            out.append(prompt if name == "prompt" else _text(record[name]))
    return "".join(out)


def format_checked(template: Template, record: Mapping[str, object], prompt: str,
                   where: str, problems: Any) -> str | None:
    """:func:`format_record`, or ``None`` with the problem noted when a field is missing."""
    try:
        return format_record(template, record, prompt)
    except KeyError as err:
        problems.add(where, f"the prompt template needs field {err.args[0]!r}, which this "
                            f"record lacks (it has {sorted(record)}); add it or change the "
                            "template")
        return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def format_column(template: Template, columns: Mapping[str, pa.Array]) -> pa.Array:
    """Vectorized :func:`format_record` over string columns (``columns["prompt"]`` included)."""
    if template.is_plain:
        return columns["prompt"]
    pieces: list[pa.Array | str] = []
    for literal, name in template.parts:
        if literal:
            pieces.append(literal)
        if name is not None:
            pieces.append(columns[name])
    if not any(isinstance(p, pa.Array | pa.ChunkedArray) for p in pieces):
        pieces.insert(0, columns["prompt"])  # pragma: no cover - a template must name a field
    return pc.binary_join_element_wise(*pieces, "")


def canonical(
    task: str,
    prompt: str,
    choices: Sequence[str] | None,
    correct: Sequence[int],
    targets: Sequence[str],
) -> str:
    """The whole content of an example as one string (the id's high half hashes it)."""
    return f"{task}{RS}{prompt}{RS}{rest(task, choices, correct, targets)[len(task) + 1:]}"


def rest(task: str, choices: Sequence[str] | None, correct: Sequence[int],
         targets: Sequence[str]) -> str:
    """Everything but the prompt: ``task RS choices RS correct`` or ``task RS RS targets``."""
    if choices is not None:
        return f"{task}{RS}{US.join(choices)}{RS}{','.join(map(str, correct))}"
    return f"{task}{RS}{RS}{US.join(targets)}"


def hash64(text: str | bytes) -> int:
    """64-bit XXH3 (seed 0) of a string's UTF-8 bytes."""
    return xxhash.xxh3_64_intdigest(text.encode("utf-8") if isinstance(text, str) else text)


prompt_key = hash64  # the duplicate / leakage key of a prompt before formatting


def id_low(prompt_hash: np.ndarray, rest_hash: np.ndarray) -> np.ndarray:
    """The low half of the ids: ``mix64(hash64(prompt) ^ mix64(hash64(rest)))``.

    Hashing the prompt and the rest apart lets a task whose examples share a few
    lists of choices hash each list once.
    """
    return mix64(prompt_hash.astype(np.uint64) ^ mix64(rest_hash.astype(np.uint64)))


def example_id(text: str | bytes, low: int) -> str:
    """The 128-bit id (32 hex digits): XXH3-64 (seed 1) of the canonical string, then ``low``.

    ``int(id[16:], 16)`` is the value the split rank is computed from.
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    return f"{xxhash.xxh3_64_intdigest(data, 1):016x}{low:016x}"


def suggest(name: str, known: list[str], n: int = 3) -> list[str]:
    """Close matches of an unknown name: similar spellings first, then names containing it."""
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    close += [k for k in known if name and name.lower() in k.lower() and k not in close]
    return close[:n]
