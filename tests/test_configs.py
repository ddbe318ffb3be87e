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


# The demo's work, measured from its config and its real tasks. Its time target (20 minutes
# on 2 AVX2 cores in fp32, setup included; docs/demo.md) was met at this work, measured on a
# 2-core AVX2 EPYC (at 24,000 training tokens and 360 scorings it took 21 min there). Raising any of
# these figures is a decision: measure the demo again and say so in docs/demo.md.
DEMO_BUDGET = {
    "experts": 4,
    "expert_steps": 120,
    "expert_tokens": 70_000,          # 4 experts x 30 steps x 8 examples x ~65 tokens
    "probe_scorings": 480,            # 5 models x 4 tasks x 24 probe examples
    "evaluation_trainings": 2,        # TaskPGM and uniform, one seed
    "evaluation_training_tokens": 16_000,
    "evaluation_scorings": 240,       # (2 trainings + the base) x 4 tasks x 20 examples
}


@pytest.mark.slow
def test_demo_work_stays_within_its_budget(bigbench_archive):
    from transformers import AutoTokenizer

    from taskpgm.inputs import load_all_tasks, load_tasks, mean_train_tokens
    from taskpgm.models import resolve
    from taskpgm.workload import plan_of

    cfg = config_mod.load(DEMO_CONFIG)
    tasks, heldout, mmlu = load_all_tasks(cfg)
    assert list(tasks) == list(load_tasks(cfg))
    tokenizer = AutoTokenizer.from_pretrained(resolve(cfg.base.model))
    work = plan_of(cfg, tasks, heldout, mmlu,
                   mean_train_tokens(tokenizer, tasks, cfg.experts.max_length)).as_dict()
    over = {k: (work[k], limit) for k, limit in DEMO_BUDGET.items() if work[k] > limit}
    assert not over, (f"the demo's work grew past its budget {over}: measure `make demo` on "
                      "2 cores again, record it in docs/demo.md and raise DEMO_BUDGET")
    assert work["expert_tokens"] > 0.8 * DEMO_BUDGET["expert_tokens"]  # the budget is current
