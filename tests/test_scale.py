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


def own_tasks(folder: Path, n: int) -> list[Path]:
    """n tiny tasks, each with prompts of its own (a prompt shared with another task would
    move that task's splits)."""
    from test_pipeline import write_task

    out = []
    for k in range(n):
        path = write_task(folder / f"task{k:02d}.jsonl", 60, 10 + k, k % 2 == 0)
        path.write_text(path.read_text().replace('"Q', f'"Task {k} question '))
        out.append(path)
    return out


def scorings(err: str) -> tuple[int, int]:
    """(scored now, reused) from the signals stage's line."""
    line = next(x for x in err.splitlines() if "example scorings now" in x)
    now, rest = line.removeprefix("signals: ").split(" example scorings now, ")
    return int(now.replace(",", "")), int(rest.split(" reused")[0].replace(",", ""))


def test_adding_a_7th_task_scores_only_what_is_new_and_equals_a_cold_run(tmp_path, capsys):
    model = tiny_dir(str(tmp_path))
    seven = own_tasks(tmp_path, 7)

    def config(name: str, tasks: list[Path], cache: Path) -> Path:
        return tiny_config(tmp_path / f"{name}.yaml", model, tasks, cache, steps=3, seeds=[0],
                           baselines=["uniform"])

    shared = tmp_path / "shared"
    assert main(["run", str(config("six", seven[:6], shared)), "--out",
                 str(tmp_path / "r6")]) == 0
    capsys.readouterr()
    assert main(["run", str(config("seven", seven, shared)), "--out",
                 str(tmp_path / "r7")]) == 0
    err = capsys.readouterr().err
    assert "experts: 6 of 7 finished already, 1 to do" in err
    # 8 probe examples a task: the new expert on all 7 tasks' 56, and the base and the 6
    # old experts on the new task's 8 (7 x 8 = 56): 112 scorings, where a cold run does
    # 8 models x 56 = 448
    assert scorings(err) == (56 + 7 * 8, 8 * 56 - 112), err
    assert main(["run", str(config("cold", seven, tmp_path / "cold")), "--out",
                 str(tmp_path / "rc")]) == 0
    assert scorings(capsys.readouterr().err) == (448, 0)
    for name in ("weights.json", "methods.json", "counts.json"):
        a = json.loads((tmp_path / "r7" / name).read_text())
        b = json.loads((tmp_path / "rc" / name).read_text())
        assert a == b, name


def test_with_a_probe_sample_the_scorings_grow_linearly_in_t(tmp_path, capsys):
    """T = 3, 6, 12 tasks of 8 probe examples each, signals.probe_total = 24: every run
    scores (T + 1) x 24 examples (the whole probe set would be (T + 1) x 8T)."""
    model = tiny_dir(str(tmp_path))
    pool = own_tasks(tmp_path, 12)
    done = {}
    for t in (3, 6, 12):
        cfg = tiny_config(tmp_path / f"t{t}.yaml", model, pool[:t], tmp_path / f"cache{t}",
                          steps=2, seeds=[0], baselines=["uniform"])
        sample = ["--set", "signals.probe_total=24", "--set", "signals.probe_floor=2"]
        assert main(["plan", str(cfg), "--json"]) == 0
        whole = json.loads(capsys.readouterr().out)["workload"]["probe_scorings"]
        assert whole == (t + 1) * 8 * t
        assert main(["signals", str(cfg), *sample]) == 0
        done[t] = scorings(capsys.readouterr().err)[0]
    assert done == {3: 4 * 24, 6: 7 * 24, 12: 13 * 24}
