"""The whole pipeline on a tiny random llama and three local task files."""

from __future__ import annotations

import io
import json
import random
import shutil
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from taskpgm import config as config_mod
from taskpgm.cli import main
from taskpgm.rundir import RunDir
from tiny_model import tiny_dir

COLOURS = ["red", "blue", "green", "cat", "dog"]


def write_task(path: Path, n: int, seed: int, hint: bool) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            k = rng.randrange(len(COLOURS))
            said = COLOURS[k] if hint else rng.choice(COLOURS)
            f.write(json.dumps({"prompt": f"Q{i}: the colour is {said} {said}\nA:",
                                "choices": COLOURS, "answer": k}) + "\n")
    return path


def tiny_config(path: Path, model: Path, tasks: list[Path], artifacts: Path, *, steps: int,
                seeds: list[int], baselines: list[str]) -> Path:
    """A run config for the tiny model and local task files, written to ``path``."""
    cfg = {
        "base": {"model": str(model)},
        "tasks": {"names": [str(t) for t in tasks],
                  "splits": {"probe": 8, "eval": 8, "max_train": 40}},
        "experts": {"steps": steps, "batch_size": 4, "precision": "fp32", "checkpoint_every": 2,
                    "lr": 0.01},
        "signals": {"batch_size": 8},
        "mixture": {"token_budget": 1500},
        "evaluation": {"seeds": seeds, "baselines": baselines, "precision": "fp32"},
        "output_dir": str(artifacts),
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_tasks(root: Path) -> list[Path]:
    return [write_task(root / f"{name}.jsonl", 60, seed, hint)
            for name, seed, hint in (("alpha", 1, True), ("beta", 2, True), ("gamma", 3, False))]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    path = tiny_config(root / "tiny.yaml", tiny_dir(str(root)), tiny_tasks(root),
                       root / "artifacts", steps=3, seeds=[0, 1],
                       baselines=["uniform", "size", "reference"])
    return root, path


@dataclass(frozen=True)
class FirstRun:
    """A full run on an empty artifact cache: its run directory and what it printed."""

    config: Path
    out: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def first_run(setup) -> FirstRun:
    """Made once, before any test that needs it, whatever the order; tests never write to
    its run directory (a test that reruns works on a copy)."""
    root, config = setup
    out = root / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(["run", str(config), "--out", str(out)])
    assert code == 0, stderr.getvalue()
    return FirstRun(config, out, stdout.getvalue(), stderr.getvalue())


def test_run_writes_the_run_directory_contract(first_run):
    out = first_run.out
    assert "[stage 8/8: report]" in first_run.stderr
    for rel in ("config.yaml", "weights.json", "counts.json", "mixture/train.jsonl",
                "mixture/hf", "exports/interleave.json", "exports/llamafactory/dataset_info.json",
                "exports/llamafactory/data.yaml", "exports/megatron/mixture.txt",
                "exports/megatron/mixture_text_document.idx", "exports/axolotl.yaml",
                "exports/README.md", "exports/mixture.json",
                "evaluation.csv", "evaluation.md", "stages.json"):
        assert (out / rel).exists(), rel
    weights = json.loads((out / "weights.json").read_text())
    assert set(weights) >= {"method", "rho", "budget", "energy", "kkt_residual", "fingerprints",
                            "weights"}
    assert abs(sum(weights["weights"].values()) - 1) < 1e-9
    counts = json.loads((out / "counts.json").read_text())
    lines = (out / "mixture/train.jsonl").read_text().splitlines()
    assert len(lines) == sum(counts.values())
    header, *rows = (out / "evaluation.csv").read_text().splitlines()
    assert header == "method,seed,task,split,accuracy,logprob,bpb"
    # the mixture records the sampler that drew it, and its content hash
    mixture = json.loads((out / "stages.json").read_text())["mixture"]
    assert mixture["sampler"] == "crn-keyed-v3"  # the default sampler
    assert len(mixture["fingerprint"]) == 32 and mixture["examples"] == len(lines)
    # every training keeps its items' scores; their group means are the rows
    trained = [d for d in (first_run.config.parent / "artifacts" / "evaluation").iterdir()
               if (d / "items.json").is_file() and not d.name.startswith("base-")]
    assert trained
    for d in trained:
        items = json.loads((d / "items.json").read_text())
        assert json.loads((d / "manifest.json").read_text())["sampler"] == "crn-keyed-v3"
        for row in json.loads((d / "scores.json").read_text()):
            mine = [it for it in items if (it["split"], it["task"]) == (row["split"],
                                                                          row["task"])]
            assert len(mine) == row["n"]
            assert sum(it["correct"] for it in mine) / len(mine) == pytest.approx(
                row["accuracy"], abs=1e-6)
            assert sum(it["logprob"] for it in mine) / len(mine) == pytest.approx(
                row["logprob"], abs=1e-5)
    methods = {r.split(",")[0] for r in rows}
    assert methods == {"base", "taskpgm", "uniform", "size", "reference"}
    assert "weights (taskpgm" in first_run.stdout
    # methods whose mixtures coincide share one training: taskpgm at the shipped default
    # is the reference preset
    listed = json.loads((out / "methods.json").read_text())["methods"]
    assert listed["taskpgm"]["weights"] == pytest.approx(listed["reference"]["weights"])
    mixes = {tuple(round(w, 12) for w in m["weights"].values()) for m in listed.values()}
    assert len(mixes) < len(listed)
    assert first_run.stderr.count("evaluation: training ") == 2 * len(mixes)
    # device and precision: decided once, printed once, recorded for every model stage
    assert first_run.stderr.count("compute: experts cpu fp32") == 1
    stages = json.loads((out / "stages.json").read_text())
    for name in ("experts", "signals", "evaluation"):
        assert stages[name]["compute"]["device"] == "cpu", name
        assert stages[name]["compute"]["precision"] == "fp32", name
        assert stages[name]["compute"]["why"], name
    assert stages["evaluation"]["compute"]["training"]["precision"] == "fp32"
    assert stages["tasks"]["workload"]["experts"] == 3
    assert "device, precision (why)" in (out / "report.html").read_text()


def test_rerun_reuses_and_rho_change_recomputes_only_the_solve(first_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(first_run.out, out)
    assert main(["run", str(first_run.config), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "experts: 3 of 3 finished already, 0 to do" in err
    assert "signals: reusing" in err and "relations: reusing" in err
    assert "weights: reusing" in err
    # A rerun that reuses every stage writes the same files, fingerprints included.
    for name in ("weights.json", "methods.json", "counts.json", "evaluation.csv"):
        assert (out / name).read_bytes() == (first_run.out / name).read_bytes(), name
    fingerprints = json.loads((out / "weights.json").read_text())["fingerprints"]
    assert fingerprints["weights"] is not None and fingerprints["relations"] is not None
    assert main(["run", str(first_run.config), "--out", str(out), "--set", "mrf.rho=0.5"]) == 0
    err = capsys.readouterr().err
    assert "relations: reusing" in err and "weights: reusing" not in err
    assert json.loads((out / "weights.json").read_text())["rho"] == 0.5


def test_status_solve_and_bad_config(first_run, tmp_path, capsys):
    out = first_run.out  # status and solve only read the run directory
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert status.count(" done ") >= 7
    assert main(["solve", str(out), "--rho", "0.1"]) == 0
    assert "KKT residual" in capsys.readouterr().out
    assert main(["solve", str(out), "--rho-path"]) == 0
    assert "rho path: " in capsys.readouterr().out
    # the CLI's path is methods.json's, and both reach the chosen rho
    methods = RunDir(out).read_methods()
    cfg = config_mod.load(out / RunDir.CONFIG)
    assert methods["rho_path"][-1]["rho"] >= cfg.mrf.rho
    assert main(["solve", str(out), "--rho-path", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)["rho_path"]
    assert [p["rho"] for p in cli] == pytest.approx([p["rho"] for p in methods["rho_path"]])
    for ours, theirs in zip(cli, methods["rho_path"], strict=True):
        assert list(ours["weights"].values()) == pytest.approx(theirs["weights"], abs=1e-9)
    # at a rho beyond 1/T the path still reaches it (it once stopped at 2/T)
    assert main(["solve", str(out), "--rho-path", "--json", "--rho", "5"]) == 0
    far = json.loads(capsys.readouterr().out)["rho_path"]
    assert far[-1]["rho"] == pytest.approx(10.0) and any(
        p["rho"] == pytest.approx(5.0) for p in far)
    assert main(["run", str(first_run.config), "--out", str(tmp_path / "bad"), "--set",
                 "mrf.budget=7", "--set", "mixture.token_budget=100000000"]) == 1
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "mrf.budget" in err and "mixture.token_budget" in err
    assert "Traceback" not in err
    assert not (tmp_path / "bad" / "weights.json").exists()


@pytest.mark.slow
def test_another_bigbench_task_set_runs_end_to_end(tmp_path, capsys, bigbench_archive):
    """Real BIG-bench tasks other than the demo's, on the tiny model: no code change needed."""
    cfg = {
        "base": {"model": str(tiny_dir(str(tmp_path)))},
        "tasks": {"names": ["bigbench:arithmetic/1_digit_subtraction", "bigbench:emoji_movie",
                            "bigbench:causal_judgment"],
                  "splits": {"probe": 10, "eval": 10, "max_train": 40}},
        "experts": {"steps": 2, "batch_size": 4, "precision": "fp32"},
        "signals": {"batch_size": 8},
        # two steps of a random model learn nothing: trust the relations anyway
        "mrf": {"budget": 2, "untrusted": "keep"},
        "mixture": {"token_budget": 2000},
        "evaluation": {"seeds": [0], "baselines": ["uniform"],
                       "heldout": ["bigbench:arithmetic/1_digit_addition"]},
        "output_dir": str(tmp_path / "artifacts"),
    }
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 0
    weights = json.loads((out / "weights.json").read_text())
    assert weights["method"] == "taskpgm-k2"
    assert sum(w > 0 for w in weights["weights"].values()) <= 2
    splits = {line.split(",")[3] for line in (out / "evaluation.csv").read_text().splitlines()[1:]}
    assert splits == {"eval", "heldout"}
    assert (out / "report.html").is_file()


def readme_api_example() -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text[text.index("## The pipeline in Python"):]
    start = section.index("```python") + len("```python")
    return section[start : section.index("```", start)]


def test_the_readme_python_api_example_runs(first_run, tmp_path, monkeypatch, capsys):
    """The README's example, executed on the tiny run (a copy: everything is reused)."""
    out = tmp_path / "run"
    shutil.copytree(first_run.out, out)
    code = readme_api_example().replace('"configs/demo.yaml"', repr(str(first_run.config)))
    code = code.replace('"runs/demo"', repr(str(out)))
    assert str(first_run.config) in code and str(out) in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    weights = json.loads((out / "weights.json").read_text())["weights"]
    counts = json.loads((out / "counts.json").read_text())
    for task, share in weights.items():
        assert f"{share:.3f}" in printed and f"{counts[task]} examples" in printed


def test_load_run_and_json_outputs_match_the_run_directory(first_run, tmp_path, capsys):
    import taskpgm

    out = first_run.out
    result = taskpgm.load_run(out)
    assert result.weights == json.loads((out / "weights.json").read_text())["weights"]
    assert result.counts == json.loads((out / "counts.json").read_text())
    assert set(result.intervals) == set(result.weights)
    assert all(lo <= hi for lo, hi in result.intervals.values())
    assert {"train", "readme", "llamafactory_data", "axolotl", "megatron"} <= set(result.exports)
    assert all(p.exists() for p in result.exports.values())
    assert main(["status", str(out), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert all(status["stages"][s]["done"] for s in ("experts", "signals", "weights"))
    assert main(["solve", str(out), "--json"]) == 0
    solved = json.loads(capsys.readouterr().out)
    assert solved["weights"] == pytest.approx(result.weights, abs=1e-9)
    assert main(["solve", str(out), "--rho-path", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["rho_path"]) == len(
        json.loads((out / "methods.json").read_text())["rho_path"])  # report.rho_path_points
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    assert main(["run", str(first_run.config), "--out", str(copy), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(taskpgm.load_run(copy).as_dict()))
    assert printed["weights"] == result.weights
    with pytest.raises(taskpgm.TaskPGMError, match="not a run directory"):
        taskpgm.load_run(tmp_path / "nowhere")


def read_events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of a TensorBoard event folder, read from the record framing by hand."""
    import struct

    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for file in sorted(folder.glob("events.out.tfevents.*")):
        raw, at = file.read_bytes(), 0
        while at < len(raw):
            (length,) = struct.unpack("<Q", raw[at:at + 8])
            event = event_pb2.Event.FromString(raw[at + 12: at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_tensorboard_tracking_logs_every_training_and_the_weights(first_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(first_run.out, out)
    assert main(["run", str(first_run.config), "--out", str(out), "--set",
                 "tracking.report_to=tensorboard"]) == 0
    capsys.readouterr()
    track = out / "tracking"
    experts = sorted(p.name for p in (track / "experts").iterdir())
    assert experts == ["alpha", "beta", "gamma"]
    alpha = read_events(track / "experts" / "alpha")
    log = json.loads((Path(json.loads((out / "stages.json").read_text())["experts"]["paths"][
        "alpha"]) / "training_log.json").read_text())["steps_log"]
    assert [v for _, v in alpha["loss"]] == pytest.approx([e["loss"] for e in log], rel=1e-6)
    assert {"lr", "tokens_per_second"} <= set(alpha)
    trainings = list((track / "evaluation").iterdir())
    assert len(trainings) >= 4  # uniform, size, taskpgm = reference at seeds 0 and 1
    assert all("loss" in read_events(p) for p in trainings)
    weights = read_events(track / "weights")
    chosen = json.loads((out / "weights.json").read_text())["weights"]
    assert {t: v[0][1] for t, v in weights.items()} == pytest.approx(
        {f"weight/{t}": w for t, w in chosen.items()}, rel=1e-6)
