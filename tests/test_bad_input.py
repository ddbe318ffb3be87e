"""Each bad input of the reliability issue, through the CLI: a one-line error (exit 1, no
traceback) or, where the input is valid, a correct load. Run in a subprocess where the
defect used to kill the interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from taskpgm.cli import main


def cli_error(args: list[str], capsys) -> str:
    """Run the CLI; it must exit 1 with an 'error:' line and no traceback (progress lines
    of the stages that ran may come first)."""
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert any(line.startswith("error: ") for line in err.splitlines()), err
    return err


def mc(prompt: str, answer: int = 0) -> str:
    return json.dumps({"prompt": prompt, "choices": ["a", "b"], "answer": answer})


def many(n: int = 30) -> list[str]:
    return [mc(f"question {i}", i % 2) for i in range(n)]


def test_null_first_in_a_list_does_not_crash_the_interpreter(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "p", "choices": [null, "b"], "answer": 0}\n'
                    '{"prompt": "q", "choices": ["a", "b"], "answer": 1}\n')
    other = tmp_path / "ok.jsonl"
    other.write_text("\n".join(many()) + "\n")
    done = subprocess.run([sys.executable, "-m", "taskpgm", "tasks", "validate", str(path),
                           str(other)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, (done.returncode, done.stderr[-400:])
    assert "Traceback" not in done.stderr and "line 1" in done.stderr


@pytest.mark.parametrize("text, expect", [
    ("[" * 100_000, "nested too deeply"),
    ('{"prompt": "\\ud800", "choices": ["a", "b"], "answer": 0}', "surrogate"),
])
def test_deep_json_and_lone_surrogates_are_clear_errors(tmp_path, capsys, text, expect):
    for suffix in (".jsonl", ".json"):
        path = tmp_path / f"t{suffix}"
        body = text if suffix == ".jsonl" or text.startswith("[") else f"[{text}]"
        path.write_text(body + "\n")
        err = cli_error(["tasks", "validate", str(path)], capsys)
        assert expect in err, err


def test_non_utf8_csv_header_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_bytes(b"prompt,choi\xffces,answer\n" + b"p,a|b,0\n" * 30)
    assert "not UTF-8" in cli_error(["tasks", "validate", str(path)], capsys)


def test_numeric_generative_targets_in_csv_load_as_text(tmp_path):
    from taskpgm.tasks import load_task

    path = tmp_path / "sums.csv"
    path.write_text("prompt,target\n" + "".join(f'"{i} + 3 =","{i + 3}"\n' for i in range(40)))
    task = load_task(str(path))
    first = (task.train + task.probe + task.eval)[0]
    assert first.answer_text.isdigit()


def test_a_template_field_missing_from_bigbench_is_a_clear_error(tmp_path, capsys,
                                                                 bigbench_archive):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tasks:\n  names:\n    - spec: bigbench:navigate\n"
                   "      template: '{prompt} {nothere}'\n")
    err = cli_error(["run", str(cfg), "--out", str(tmp_path / "run")], capsys)
    assert "nothere" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content, expect", [
    (b"mrf:\n  rho: 0.1\n\xff\xfe\n", "not UTF-8"),
    (b"a:\n" + b"".join(b"  " * (i + 1) + b"b:\n" for i in range(1000)), "nested"),
    (b"mrf: {rho: 0.1}\nmrf: {budget: 2}\n", "duplicate"),
    (b"mrf:\n  rho: 0.1\n  rho: 0.2\n", "duplicate"),
    (b"experts: {lr: .inf}\n", "finite"),
    (b"base: {trust_remote_code: 'yes'}\n", "trust_remote_code"),
    (b"output_dir: \"a\\0b\"\n", "NUL"),
    (b"tasks: {names: ['']}\n", "tasks.names"),
])
def test_bad_run_configs_are_one_line_errors(tmp_path, capsys, content, expect):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(content)
    err = cli_error(["run", str(cfg), "--out", str(tmp_path / "run")], capsys)
    assert expect in err, err
    assert not (tmp_path / "run").exists()


def test_a_failed_preflight_writes_nothing(tmp_path, capsys):
    task = tmp_path / "t.jsonl"
    task.write_text("\n".join(many()) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"tasks: {{names: ['{task}']}}\nmixture: {{token_budget: 100000000}}\n")
    cli_error(["run", str(cfg), "--out", str(tmp_path / "run")], capsys)
    assert not (tmp_path / "run").exists()


def test_a_missing_anchor_prior_file_is_reported_before_any_work(tmp_path, capsys):
    task = tmp_path / "t.jsonl"
    task.write_text("\n".join(many()) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"tasks: {{names: ['{task}']}}\n"
                   f"mrf: {{anchor: {{prior: '{tmp_path / 'nowhere.json'}', strength: 0.1}}}}\n")
    err = cli_error(["run", str(cfg), "--out", str(tmp_path / "run")], capsys)
    assert "mrf.anchor.prior" in err and "nowhere.json" in err, err
    assert not (tmp_path / "run").exists()


def test_terminal_escapes_in_file_names_are_not_echoed(tmp_path, capsys):
    path = tmp_path / "evil\x1b[31mred.jsonl"
    path.write_text("not json\n")
    err = cli_error(["tasks", "validate", str(path)], capsys)
    assert "\x1b" not in err and "\\x1b" in err


def test_a_utf8_bom_is_accepted(tmp_path):
    from taskpgm.tasks import load_task

    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(many()) + "\n").encode())
    task = load_task(str(path))
    assert len(task.train) + len(task.probe) + len(task.eval) == 30


def test_a_utf8_bom_is_accepted_in_configs_and_collections(tmp_path):
    from taskpgm.config import load
    from taskpgm.tasks.collection import read_collection

    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"\xef\xbb\xbfmrf:\n  rho: 0.25\n")
    assert load(cfg).mrf.rho == 0.25
    task = tmp_path / "t.jsonl"
    task.write_text("\n".join(many()) + "\n")
    coll = tmp_path / "tasks.yaml"
    coll.write_bytes(b"\xef\xbb\xbftasks:\n  - t.jsonl\n")
    assert len(read_collection(coll)[1]) == 1


def test_too_few_examples_does_not_suggest_lowering_the_splits(tmp_path, capsys):
    path = tmp_path / "two.jsonl"
    path.write_text(mc("one") + "\n" + mc("two", 1) + "\n")
    err = cli_error(["tasks", "validate", str(path)], capsys)
    assert "lower" not in err and "at least 3" in err


def test_csv_parse_errors_name_the_line(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("prompt,choices,answer\n" + "p,a|b,0\n" * 5 + "p,a|b,0,extra\n")
    assert "line 7" in cli_error(["tasks", "validate", str(path)], capsys)


def test_a_pickled_adapter_is_refused_before_peft_reads_it(tmp_path):
    from taskpgm.errors import ModelError
    from taskpgm.models import check_adapter_dir

    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelError, match="safetensors"):
        check_adapter_dir(folder)


def test_sigterm_ends_a_command_with_the_resume_message(tmp_path):
    script = ("import os, signal, sys, time\n"
              "from taskpgm import cli\n"
              "from taskpgm.cli import run\n"
              "def preempted(*args):\n"
              "    os.kill(os.getpid(), signal.SIGTERM)\n"
              "    time.sleep(5)\n"
              "run._run_config = preempted\n"
              "sys.exit(cli.main(['status', '.']))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 143
    assert "finished work is kept" in done.stderr and "Traceback" not in done.stderr
