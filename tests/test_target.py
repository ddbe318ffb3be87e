"""Target mode end to end on the tiny model: a task that is scored but not trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from taskpgm.cli import main
from taskpgm.errors import ConfigError
from test_pipeline import tiny_config, tiny_tasks, write_task
from tiny_model import tiny_dir


def target_config(root: Path, *, energy: str = "split") -> Path:
    path = tiny_config(root / "target.yaml", tiny_dir(str(root)), tiny_tasks(root),
                       root / "artifacts", steps=3, seeds=[0], baselines=["uniform"])
    cfg = yaml.safe_load(path.read_text())
    cfg["mrf"] = {"energy": energy, "target": [str(write_task(root / "delta.jsonl", 40, 4,
                                                              True))], "untrusted": "keep"}
    cfg["evaluation"]["enabled"] = False
    cfg["relations"] = {"bootstrap": 20}
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_target_mode_uses_each_experts_transfer_onto_the_target(tmp_path, capsys):
    from taskpgm.core.split import redundancy_kernel
    from taskpgm.readers import open_relations
    from taskpgm.weights import solve

    config = target_config(tmp_path)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out)]) == 0
    capsys.readouterr()
    stages = json.loads((out / "stages.json").read_text())
    relations = open_relations(Path(stages["relations"]["path"]))
    assert relations.info["targets"] == ["delta"] and relations.tasks == ["alpha", "beta",
                                                                          "gamma"]
    signals = json.loads((Path(stages["signals"]["path"]) / "manifest.json").read_text())
    assert "delta" in signals["probe"]["tasks"]  # every model scored the target's probe set
    weights = json.loads((out / "weights.json").read_text())
    assert weights["target"] == ["delta"] and weights["utility"] == "target transfer"
    # The target transfer by hand from the shards: mean over delta's examples of the gain.
    tasks_of = signals["probe"]["tasks"]
    rows = [i for i, t in enumerate(tasks_of) if t == "delta"]
    target = relations.arrays["target_pmi"][:, 0]
    assert target.shape == (3,) and np.isfinite(target).all() and rows
    # The weights are the split energy's exact minimizer with t = target transfer / ḡ.
    r, _ = redundancy_kernel(relations.arrays["jsd"])
    tau = target / np.diag(relations.arrays["pmi"]).mean()
    from taskpgm.core.mrf import TaskMixtureMRF
    caps = np.asarray(json.loads((out / "methods.json").read_text())["caps"])
    want = TaskMixtureMRF(0.0, caps=caps).fit(r, utility=tau).weights_
    got = [weights["weights"][t] for t in relations.tasks]
    np.testing.assert_allclose(got, want, atol=1e-9)
    at_one = solve(relations, 1.0, budget=None, utility_kind="representativeness", caps=caps,
                   untrusted="keep", energy="split")
    want_one = TaskMixtureMRF(1.0, caps=caps).fit(r, utility=tau).weights_
    np.testing.assert_allclose(list(at_one["weights"].values()), want_one, atol=1e-9)


def test_bad_targets_are_clear_errors_before_any_work(tmp_path, capsys):
    config = target_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["mrf"]["target"] = [cfg["tasks"]["names"][0]]  # a pool task
    config.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(config), "--out", str(tmp_path / "r")]) == 1
    assert "mrf.target names pool tasks" in capsys.readouterr().err
    (tmp_path / "tiny.jsonl").write_text(
        json.dumps({"prompt": "Q", "choices": ["a", "b"], "answer": 0}) + "\n")
    cfg["mrf"]["target"] = [str(tmp_path / "tiny.jsonl")]  # too small for a probe split
    config.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(config), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "tiny" in err and "Traceback" not in err
    assert not (tmp_path / "artifacts" / "experts").exists()  # nothing was trained
    with pytest.raises(ConfigError, match=r"does not apply to mrf\.energy: reference"):
        from taskpgm import config as config_mod

        cfg["mrf"]["energy"] = "reference"
        config.write_text(yaml.safe_dump(cfg))
        config_mod.load(config)
