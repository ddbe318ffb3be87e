from __future__ import annotations

from pathlib import Path

import pytest

from taskpgm import config
from taskpgm.errors import ConfigError, NotFoundError

CONFIGS = Path(config.__file__).parent / "configs"


def test_defaults_fit_the_embedded_model() -> None:
    cfg = config.parse("")
    assert cfg.base.model == "smollm2-135m" and not cfg.base.trust_remote_code
    assert cfg.experts.rank == 8 and cfg.experts.lr == 3e-3 and cfg.experts.precision == "auto"
    assert cfg.experts.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert cfg.signals.top_k == 32
    assert cfg.tasks.splits.max_train == 2000


def test_every_problem_is_reported_with_its_line() -> None:
    text = "experts:\n  rank: 8\n  lr: -1\n  stepz: 3\nsignals:\n  top_k: many\n"
    with pytest.raises(ConfigError) as err:
        config.parse(text, source="run.yaml")
    msg = str(err.value)
    assert "3 problem(s)" in msg
    assert "run.yaml:3: experts.lr" in msg
    assert "run.yaml:4: experts.stepz: unknown key; allowed here:" in msg and "steps" in msg
    assert "run.yaml:6: signals.top_k" in msg


def test_unknown_section_and_bad_yaml() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        config.parse("expert:\n  rank: 4\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.parse("experts: [\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        config.parse("- 1\n")


def test_tasks_entries_and_import_alias(tmp_path: Path) -> None:
    file = tmp_path / "run.yaml"
    file.write_text(
        "tasks:\n  names: [bigbench:navigate, {spec: data.jsonl, name: mine}]\n"
        "  splits: {probe: 50}\nexperts:\n  import: {navigate: adapters/nav}\n"
        "output_dir: out\n"
    )
    cfg = config.load(file)
    assert cfg.tasks.splits.probe == 50
    # Like task files and output_dir, imported adapters are relative to the config file.
    nav = str(tmp_path.resolve() / "adapters" / "nav")
    assert cfg.experts.import_ == {"navigate": nav}
    assert cfg.output_dir == str(tmp_path.resolve() / "out")
    assert config.dump(cfg)["experts"]["import"] == {"navigate": nav}
    file.write_text(f"experts:\n  import: {{navigate: {tmp_path / 'abs'}}}\n")
    assert config.load(file).experts.import_ == {"navigate": str(tmp_path / "abs")}


def test_missing_file() -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        config.load("/nonexistent/run.yaml")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse(path: Path) -> None:
    assert config.load(path).tasks.names


def test_unknown_energy_and_utility_are_reported_together() -> None:
    with pytest.raises(ConfigError) as err:
        config.parse("mrf:\n  energy: paper\n  utility: nope\n")
    text = str(err.value)
    assert "2 problem(s)" in text and ":2: mrf.energy" in text and ":3: mrf.utility" in text
    assert "'split'" in text and "'reference'" in text


def test_each_energy_brings_its_own_rho_and_untrusted_policy(tmp_path: Path) -> None:
    shipped = config.parse("")
    assert (shipped.mrf.energy, shipped.mrf.rho, shipped.mrf.untrusted) == (
        "reference", 0.2, "keep")
    affinity = config.parse("mrf:\n  energy: affinity\n")
    assert (affinity.mrf.rho, affinity.mrf.untrusted) == (0.0, "exclude")
    explicit = config.parse("mrf:\n  energy: split\n  rho: 1\n  untrusted: uniform\n")
    assert (explicit.mrf.rho, explicit.mrf.untrusted) == (1.0, "uniform")
    # --set on the shipped demo config: the override's energy brings its defaults
    demo = config.load(CONFIGS / "demo.yaml", overrides=["mrf.energy=split"])
    assert (demo.mrf.energy, demo.mrf.rho, demo.mrf.untrusted) == ("split", 0.0, "exclude")
    with pytest.raises(ConfigError, match=r"set mrf\.energy: split, affinity or gain-model"):
        config.parse(f"mrf:\n  target: ['{tmp_path / 't.jsonl'}']\n")
