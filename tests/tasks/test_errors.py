"""Every bad input of the issue: a clear message (file, line, fix), exit code 1, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskpgm.cli import main

from .conftest import mc_records, write_jsonl


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _good(i: int) -> str:
    return json.dumps({"prompt": f"p{i}", "choices": ["a", "b", "c", "d"], "answer": i % 4})


BAD_LINES = {
    "malformed": ('{"prompt": "p", "choices": ["a", "b"], "answer": 0', r"line 3: malformed JSON"
                  r" \(Expecting .* at column \d+\); fix the line or remove it"),
    "missing": ('{"prompt": "p", "choices": ["a", "b"]}', r"line 3: missing field 'answer' "
                r"\(index of the correct choice\); add it"),
    "wrong_type": ('{"prompt": "p", "choices": ["a", "b"], "answer": "b"}',
                   r"line 3: field 'answer' must be an integer index into the choices \(0\.\.1\)"
                   r" or a list of them, got str \"b\"; fix the value"),
    "prompt_type": ('{"prompt": 7, "choices": ["a", "b"], "answer": 0}',
                    r"line 3: field 'prompt' must be a non-empty string, got int 7"),
    "out_of_range": ('{"prompt": "p", "choices": ["a", "b", "c", "d"], "answer": 4}',
                     r"line 3: answer index 4 is out of range for 4 choices \(valid: 0\.\.3\); "
                     r"fix the answer or the choices"),
    "one_choice": ('{"prompt": "p", "choices": ["a"], "answer": 0}',
                   r"line 3: field 'choices' has 1 choice\(s\); a multiple-choice example needs "
                   r"at least 2"),
    "duplicate_choices": ('{"prompt": "p", "choices": ["a", "b", "a"], "answer": 0}',
                          r"line 3: field 'choices' lists the choice 'a' more than once; choices "
                          r"must be distinct: remove the duplicate"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_line(case: str, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str]):
    line, expected = BAD_LINES[case]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join([_good(0), _good(1), line, *(_good(i) for i in range(3, 40))])
                    + "\n")
    code, out, err = run(capsys, "tasks", "show", str(path))
    assert code == 1 and out == ""
    assert err.startswith(f"error: {path} line 3") or err.startswith(f"error: {path} ")
    import re

    assert re.search(expected, err), err


def test_every_problem_is_listed(tmp_path: Path, fake_sources: Path, capsys):
    lines = [_good(i) for i in range(30)]
    lines[4] = BAD_LINES["malformed"][0]
    lines[9] = BAD_LINES["out_of_range"][0]
    lines[20] = BAD_LINES["missing"][0]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    other = write_jsonl(tmp_path / "ok.jsonl", mc_records(50))
    code, out, err = run(capsys, "tasks", "validate", str(path), str(other), "bigbench:nope",
                         "--probe", "5", "--eval", "5")
    assert code == 1
    assert f"{path} has 3 problems:" in err
    for n in (5, 10, 21):
        assert f"line {n}:" in err
    assert "ok: ok (" in out
    assert "BIG-bench has no task 'nope'" in err
    code, out, _ = run(capsys, "tasks", "validate", str(other), "--probe", "5", "--eval", "5")
    assert code == 0 and "ok: ok" in out


def test_non_utf8_gives_byte_offset(tmp_path: Path, home: Path, capsys):
    path = tmp_path / "t.jsonl"
    good = (_good(0) + "\n").encode()
    path.write_bytes(good + b'{"prompt": "caf\xe9", "choices": ["a", "b"], "answer": 0}\n'
                     + b"".join((_good(i) + "\n").encode() for i in range(1, 30)))
    code, _, err = run(capsys, "tasks", "show", str(path))
    assert code == 1
    assert f"{path} line 2: bytes that are not UTF-8 at byte offset {len(good) + 15}" in err
    assert "re-encode the file as UTF-8" in err


def test_non_utf8_csv(tmp_path: Path, home: Path, capsys):
    path = tmp_path / "t.csv"
    path.write_bytes(b"prompt,target\nhello,world\ncaf\xe9,x\n")
    code, _, err = run(capsys, "tasks", "show", str(path))
    assert code == 1 and f"{path} line 3: bytes that are not UTF-8 at byte offset 29" in err


def test_empty_file(tmp_path: Path, home: Path, capsys):
    path = tmp_path / "t.jsonl"
    path.write_text("")
    code, _, err = run(capsys, "tasks", "show", str(path))
    assert code == 1 and f"error: {path} is empty: it has no examples" in err
    path.write_text("\n\n")
    code, _, err = run(capsys, "tasks", "show", str(path))
    assert code == 1 and "is empty" in err


def test_too_few_examples(tmp_path: Path, home: Path, capsys):
    path = write_jsonl(tmp_path / "small.jsonl", mc_records(40))
    code, _, err = run(capsys, "tasks", "show", str(path), "--no-shrink")
    assert code == 1
    assert (f"task small ({path}) has 40 examples after removing duplicates, fewer than probe "
            "+ eval need (100 + 200 = 300)") in err
    assert "lower --probe/--eval" in err
    tiny = write_jsonl(tmp_path / "tiny.jsonl", mc_records(2))
    code, _, err = run(capsys, "tasks", "show", str(tiny))
    assert code == 1 and "has only 2 distinct example(s)" in err and "lower" not in err


def test_unknown_bigbench_and_mmlu_names(fake_sources: Path, capsys):
    code, _, err = run(capsys, "tasks", "show", "bigbench:sports_understandin")
    assert code == 1
    assert "BIG-bench has no task 'sports_understandin'; did you mean " \
           "bigbench:sports_understanding?" in err
    code, _, err = run(capsys, "tasks", "show", "bigbench:arithmetic/1_digit_adition")
    assert code == 1 and "did you mean bigbench:arithmetic/1_digit_addition" in err
    code, _, err = run(capsys, "tasks", "show", "mmlu:anatomi")
    assert code == 1 and "MMLU has no subject 'anatomi'; did you mean mmlu:anatomy?" in err
    code, _, err = run(capsys, "tasks", "show", "bigbench:bbq_lite")
    assert code == 1 and "bigbench:bbq_lite is a programmatic task (task.py)" in err


def test_duplicate_task_names(tmp_path: Path, home: Path, capsys):
    write_jsonl(tmp_path / "a.jsonl", mc_records(50))
    (tmp_path / "sub").mkdir()
    write_jsonl(tmp_path / "sub" / "a.jsonl", mc_records(50, prefix="B"))
    coll = tmp_path / "c.yaml"
    coll.write_text("tasks:\n  - a.jsonl\n  - spec: sub/a.jsonl\n")
    code, _, err = run(capsys, "tasks", "show", str(coll))
    assert code == 1
    assert f"{coll}: task name 'a' is used twice (lines 2 and 3)" in err
    assert "give each task its own name" in err


def test_mapping_names_missing_column(tmp_path: Path, home: Path, capsys):
    write_jsonl(tmp_path / "a.jsonl", mc_records(50))
    coll = tmp_path / "c.yaml"
    coll.write_text("tasks:\n  - spec: a.jsonl\n    mapping: {prompt: question}\n")
    code, _, err = run(capsys, "tasks", "show", str(coll))
    assert code == 1
    assert "a.jsonl: the field mapping names prompt field 'question', which is not a column" in err
    assert "['answer', 'choices', 'prompt']" in err and "fix the mapping" in err
    csv = tmp_path / "b.csv"
    csv.write_text("prompt,target\nx,y\n")
    coll.write_text("tasks:\n  - spec: b.csv\n    mapping: {target: label}\n")
    code, _, err = run(capsys, "tasks", "validate", str(coll))
    assert code == 1 and "names target field 'label'" in err


def test_collection_unknown_keys_are_listed_with_lines(tmp_path: Path, home: Path, capsys):
    coll = tmp_path / "c.yaml"
    coll.write_text("splits:\n  prob: 10\ntasks:\n  - spec: a.jsonl\n    mapping: {promt: q}\n"
                    "    max_exampls: 3\n")
    code, _, err = run(capsys, "tasks", "validate", str(coll))
    assert code == 1
    assert "line 2: splits.prob: unknown key" in err
    assert "line 5: tasks.0.mapping.promt: unknown key" in err
    assert "line 6: tasks.0.max_exampls: unknown key" in err
    assert "valid string" not in err and "has 3 problem(s)" in err
    coll.write_text("tasks:\n  - 5\n")
    code, _, err = run(capsys, "tasks", "show", str(coll))
    assert code == 1 and "line 2: tasks.0: give a spec string or a mapping with spec:" in err
    coll.write_bytes(b"tasks:\n  - caf\xe9.jsonl\n")
    code, _, err = run(capsys, "tasks", "show", str(coll))
    assert code == 1 and f"{coll} line 2: bytes that are not UTF-8 at byte offset 14" in err
    coll.write_text("tasks:\n  - a.jsonl\n x: [\n")
    code, _, err = run(capsys, "tasks", "show", str(coll))
    assert code == 1 and f"{coll} line 3: not valid YAML" in err


def test_console_script_subprocess(tmp_path: Path):
    path = tmp_path / "t.jsonl"
    path.write_text(_good(0) + "\n{bad json\n")
    exe = Path(sys.executable).parent / "taskpgm"
    env = dict(os.environ, TASKPGM_HOME=str(tmp_path / "home"))
    done = subprocess.run([str(exe), "tasks", "show", str(path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {path} line 2: malformed JSON")
    assert "Traceback" not in done.stderr


def test_non_utf8_json_document(tmp_path: Path, home: Path, capsys):
    path = tmp_path / "t.json"
    path.write_bytes(b'[\n{"prompt": "caf\xe9", "target": "x"}\n]\n')
    code, _, err = run(capsys, "tasks", "show", str(path))
    assert code == 1 and f"{path} line 2: bytes that are not UTF-8 at byte offset 17" in err
