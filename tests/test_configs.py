"""Every shipped config parses; the demo config's tasks exist and the run is sized for 2 cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskpgm import config as config_mod
from taskpgm.cli.demo import DEMO_CONFIG

CONFIGS = sorted((Path(config_mod.__file__).parent / "configs").glob("*.yaml"))


def test_the_configs_folder_is_the_package_one():
    root = Path(__file__).resolve().parents[1] / "configs"
    assert sorted(p.name for p in root.glob("*.yaml")) == [p.name for p in CONFIGS]
    assert DEMO_CONFIG in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path):
    cfg = config_mod.load(path)
    assert cfg.tasks.names, "every shipped config names its tasks"
    assert cfg.base.trust_remote_code is False


def test_demo_config_is_small():
    cfg = config_mod.load(DEMO_CONFIG)
    assert len(cfg.tasks.names) <= 10
    assert cfg.experts.steps is not None and cfg.experts.steps <= 100
    assert len(cfg.evaluation.seeds) == 1


def test_source_specs_with_a_subtask_are_not_made_relative(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tasks:\n  names: [bigbench:arithmetic/2_digit_addition, data/t.jsonl]\n")
    names = config_mod.load(path).tasks.names
    assert names[0] == "bigbench:arithmetic/2_digit_addition"
    assert names[1] == str(tmp_path / "data/t.jsonl")
