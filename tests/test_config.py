from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

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


REPO = Path(__file__).resolve().parents[1]


def _sections(model: type[BaseModel] = config.RunConfig) -> list[type[BaseModel]]:
    """``model`` and every section model below it, in field order."""
    out = [model]
    for field in model.model_fields.values():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += _sections(field.annotation)
    return out


def test_every_field_of_every_section_has_a_description() -> None:
    missing = [f"{model.__name__}.{name}" for model in _sections()
               if issubclass(model, config.Section)
               for name, field in model.model_fields.items()
               if not (field.description or "").strip()
               and not (model is config.RunConfig and name != "output_dir")]
    assert not missing, f"fields without Field(description=...): {missing}"
    for model in _sections():
        assert (model.__dict__.get("__doc__") or "").strip(), f"{model.__name__}: no docstring"
    for section in config.config_sections():
        assert section.help.strip(), f"section {section.name or '(top level)'} has no help"
        for key in section.keys:
            assert key.help.strip(), f"{key.key} has no description in the reference"


def test_help_from_elsewhere_only_fills_gaps() -> None:
    for model, helps in config._HELP_ELSEWHERE.items():
        own = [name for name in helps if model.model_fields[name].description]
        assert not own, (f"{model.__name__} now describes {own} itself: remove them from "
                         "config._HELP_ELSEWHERE")


def test_reference_follows_the_models() -> None:
    sections = config.config_sections()
    rest = [n for n in config.RunConfig.model_fields if n not in ("base", "tasks", "output_dir")]
    rest.insert(rest.index("mrf") + 1, "mrf.anchor")  # a sub-section, like tasks.splits
    assert [s.name for s in sections] == ["", "base", "tasks", "tasks.splits", *rest]
    keys = {k.key: k for s in sections for k in s.keys}
    assert keys["output_dir"].type == "str | null"
    assert keys["tasks.splits.max_train"].default == "2000"  # the run config's, not the model's
    assert keys["experts.import"].default == "{}"  # the YAML key, not the Python name
    assert (keys["experts.dropout"].bounds, keys["mrf.rho"].default) == (("≥ 0", "< 1"), "0.2")
    assert keys["signals.precision"].type == "auto | fp32 | bf16"
    text = config.config_reference()
    assert text == config.config_reference()
    assert "| `base.device` | `str`, matches `^(auto\\|cpu" in text  # | escaped in a cell
    assert "## `execution`" in text and "### `tasks.splits`" in text


def test_docs_config_md_is_the_rendered_reference() -> None:
    doc = REPO / "docs" / "config.md"
    text = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    assert text == config.config_reference(), (
        "docs/config.md differs from the reference rendered from src/taskpgm/config.py; "
        f"regenerate it with `{config.REFERENCE_COMMAND}`")
