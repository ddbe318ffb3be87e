"""The work plan before any work, and one job per expert / per model on a shared cache."""

from __future__ import annotations

import json
from pathlib import Path

from taskpgm.cli import main
from test_pipeline import tiny_config, tiny_tasks
from tiny_model import tiny_dir


def test_plan_then_one_job_per_expert_and_per_model(tmp_path, capsys):
    cache = tmp_path / "cache"
    cfg = tiny_config(tmp_path / "c.yaml", tiny_dir(str(tmp_path)), tiny_tasks(tmp_path), cache,
                      steps=3, seeds=[0], baselines=["uniform"])
    assert main(["plan", str(cfg), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["experts_to_train"] == ["alpha", "beta", "gamma"] and not plan["experts_cached"]
    w = plan["workload"]
    assert w["probe_scorings"] == 4 * 24  # (T + 1) models x 3 tasks x 8 probe examples
    assert set(plan["estimate_seconds"]) == {"experts", "signals", "evaluation"}
    assert not (tmp_path / "runs").exists() and not cache.exists()  # planning does no work

    assert main(["experts", str(cfg), "--only", "alpha"]) == 0
    assert capsys.readouterr().out.startswith("alpha\ttrained")
    assert [p.name.split("-")[0] for p in (cache / "experts").iterdir()
            if not p.name.startswith(".")] == ["alpha"]
    assert main(["experts", str(cfg), "--only", "beta", "--only", "gamma"]) == 0
    capsys.readouterr()
    assert main(["plan", str(cfg), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["experts_cached"] == ["alpha", "beta", "gamma"]

    assert main(["signals", str(cfg), "--only", "base", "--only", "alpha"]) == 0
    assert "assembled when every model is scored" in capsys.readouterr().out
    assert not list((cache / "signals").glob("probe-*/manifest.json"))
    assert main(["signals", str(cfg), "--only", "beta", "--only", "gamma"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert (path / "manifest.json").is_file()

    assert main(["run", str(cfg), "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "experts: 3 of 3 finished already" in err and f"signals: reusing {path}" in err
    assert "plan: 3 tasks; 0 experts to train (3 cached)" in err


def test_only_names_a_task_that_is_not_there(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "c.yaml", tiny_dir(str(tmp_path)), tiny_tasks(tmp_path),
                      tmp_path / "cache", steps=3, seeds=[0], baselines=["uniform"])
    assert main(["experts", str(cfg), "--only", "delta"]) == 1
    assert "delta" in capsys.readouterr().err


def test_adding_a_task_scores_only_what_is_new_and_equals_a_cold_run(tmp_path, capsys):
    from test_pipeline import write_task

    model = tiny_dir(str(tmp_path))
    three = tiny_tasks(tmp_path)
    delta = write_task(tmp_path / "delta.jsonl", 60, 4, True)
    # prompts of its own: a prompt shared with another task would move that task's splits
    delta.write_text(delta.read_text().replace('"Q', '"Delta question '))
    four = [*three, delta]

    def config(name: str, tasks: list[Path], cache: Path) -> Path:
        return tiny_config(tmp_path / f"{name}.yaml", model, tasks, cache, steps=3, seeds=[0],
                           baselines=["uniform"])

    shared = tmp_path / "shared"
    assert main(["run", str(config("three", three, shared)), "--out",
                 str(tmp_path / "r3")]) == 0
    capsys.readouterr()
    assert main(["run", str(config("four", four, shared)), "--out", str(tmp_path / "r4")]) == 0
    err = capsys.readouterr().err
    assert "experts: 3 of 4 finished already, 1 to do" in err
    # the new expert on all 4 tasks' 8 probe examples, and the base and the 3 old experts
    # on the new task's 8: 32 + 32 scorings, where a cold run does 5 x 32 = 160
    assert "signals: 64 example scorings now, 96 reused from earlier runs" in err, err
    assert main(["run", str(config("cold", four, tmp_path / "cold")), "--out",
                 str(tmp_path / "rc")]) == 0
    assert "signals: 160 example scorings now, 0 reused" in capsys.readouterr().err
    for name in ("weights.json", "methods.json", "counts.json"):
        a = json.loads((tmp_path / "r4" / name).read_text())
        b = json.loads((tmp_path / "rc" / name).read_text())
        assert a == b, name
