"""Artifact identity: a changed default can never reuse artifacts built under the old one.

Each stage keeps its defaults as a literal snapshot beside its VERSION; the
fingerprint leaves out only parameters equal to that snapshot. These tests fail
when a config default drifts from the snapshot (bump the version, refresh the
snapshot), and show that a default changed in code changes the fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from taskpgm import experts, relations_stage, signals
from taskpgm.artifacts import _canonical
from taskpgm.config import ExpertsConfig, RelationsConfig, SignalsConfig
from taskpgm.device import Placement
from taskpgm.tasks.schema import Example

BF16, FP32 = Placement("cpu", "bf16"), Placement("cpu", "fp32")

# (stage module, the settings today's config defaults give, as the fingerprint sees them)
SNAPSHOTS: list[tuple[Any, Callable[[], dict[str, Any]]]] = [
    (experts, lambda: experts.fingerprint_settings(ExpertsConfig(), BF16)),
    (signals, lambda: signals.fingerprint_settings(SignalsConfig(), FP32)),
    (relations_stage, lambda: RelationsConfig().model_dump()),
]


@pytest.mark.parametrize(("module", "current"), SNAPSHOTS, ids=lambda v: getattr(v, "STAGE", ""))
def test_config_defaults_equal_the_snapshot_of_the_current_version(module, current):
    now, frozen = _canonical(current()), _canonical(module.DEFAULTS)
    drift = {k: (frozen.get(k, "<absent>"), now.get(k, "<absent>"))
             for k in set(now) | set(frozen) if now.get(k, "<absent>") != frozen.get(k, "<absent>")}
    assert not drift, (
        f"the {module.STAGE} defaults differ from the snapshot frozen with version "
        f"{module.VERSION} ({{key: (snapshot, now)}}: {drift}); artifacts built under the "
        f"old defaults must not be reused: bump {module.__name__}.VERSION and set "
        f"{module.__name__}.DEFAULTS to today's defaults")


@pytest.fixture
def changed_default() -> Iterator[Callable[[type[BaseModel], str, Any], None]]:
    """Change a config field's default in code for one test (as a commit would)."""
    touched: list[tuple[type[BaseModel], str, Any]] = []

    def change(model: type[BaseModel], name: str, value: Any) -> None:
        field = model.model_fields[name]
        touched.append((model, name, field.default))
        field.default = value
        model.model_rebuild(force=True)

    yield change
    for model, name, old in reversed(touched):
        model.model_fields[name].default = old
        model.model_rebuild(force=True)


EXAMPLES = [Example(task="t", id=str(i), prompt=f"{i}+1=", targets=(str(i + 1),))
            for i in range(3)]


def test_a_changed_experts_default_changes_the_expert_fingerprint(changed_default):
    before = experts.fingerprint_of("base", "t", EXAMPLES, ExpertsConfig(), BF16)
    changed_default(ExpertsConfig, "steps", 40)  # experts.steps 100 -> 40 in code
    assert ExpertsConfig().steps == 40
    after = experts.fingerprint_of("base", "t", EXAMPLES, ExpertsConfig(), BF16)
    assert after != before
    assert after == experts.fingerprint_of("base", "t", EXAMPLES, ExpertsConfig(steps=40), BF16)


def test_a_changed_signals_default_changes_the_signals_fingerprint(changed_default):
    before = signals.fingerprint_of(["base", "probe"], SignalsConfig(), FP32)
    changed_default(SignalsConfig, "top_k", 8)
    assert signals.fingerprint_of(["base", "probe"], SignalsConfig(), FP32) != before


def test_a_changed_relations_default_changes_the_relations_fingerprint(changed_default):
    before = relations_stage.fingerprint_of("sig", ["a", "b"], RelationsConfig())
    changed_default(RelationsConfig, "alpha", 0.25)
    assert relations_stage.fingerprint_of("sig", ["a", "b"], RelationsConfig()) != before


def test_settings_at_the_snapshot_stay_out_of_the_fingerprint():
    """Old caches stay valid: a default setting hashes as if it were not there."""
    from taskpgm.artifacts import fingerprint

    parents = ["base", "data"]
    assert experts.fingerprint_of("base", "t", EXAMPLES, ExpertsConfig(), BF16) == fingerprint(
        "experts", experts.VERSION,
        ["base", experts.examples_fingerprint(EXAMPLES)], {"task": "t"}, {})
    assert signals.fingerprint_of(parents, SignalsConfig(), FP32) == fingerprint(
        "signals", signals.VERSION, parents, {}, {})
