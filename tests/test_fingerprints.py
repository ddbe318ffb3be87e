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


# ------------------------------------------- the sampler of version 2 (common random numbers)
FP32_ = Placement("cpu", "fp32")
POOL = {t: [Example(task=t, id=f"{t}-{i}", prompt=f"{t} {i}?", choices=("a", "b"),
                    correct=(i % 2,)) for i in range(n)] for t, n in (("a", 9), ("b", 30))}
#: Computed by the code before the sampler changed (the commit that precedes it), on the
#: inputs of these tests: the stages above the mixture must keep them. (The relations'
#: "688f8ab2990f30dc" changed later on purpose: version 4, the block bootstrap.)
BEFORE_UPSTREAM = {"experts": "196dd9c7cfcbc8a2", "signals": "166beab3bba01ff5"}
BEFORE_MIXED = "3854515f9ce3896c7ea5a4a321144760"  # sample_mixture(POOL, {a: 20, b: 11}, 5)
BEFORE_EVALUATION = "63cd6d76930ecaa4"  # that set's evaluation training, version 3


def test_the_sampler_change_leaves_every_upstream_fingerprint_as_it_was():
    examples = [Example(task="t", id=str(i), prompt=f"{i}+1=", targets=(str(i + 1),))
                for i in range(3)]
    assert {"experts": experts.fingerprint_of("base", "t", examples, ExpertsConfig(layers=15),
                                              FP32_),
            "signals": signals.fingerprint_of(["base", "probe"], SignalsConfig(), FP32_),
            } == BEFORE_UPSTREAM


def test_the_mixture_and_evaluation_fingerprints_change_with_the_sampler():
    from taskpgm import evaluation
    from taskpgm.core.mixture import sample_mixture
    from taskpgm.tasks.schema import examples_fingerprint

    counts = {"a": 20, "b": 11}
    old = sample_mixture(POOL, counts, 5, "independent")
    new = sample_mixture(POOL, counts, 5)
    assert examples_fingerprint(old) == BEFORE_MIXED  # version 1, drawn as before
    assert examples_fingerprint(new) != BEFORE_MIXED
    recipe = ExpertsConfig(steps=None, epochs=1.0, seed=5)
    scoring = signals.fingerprint_settings(SignalsConfig(), FP32_)

    def fp(mixed: list[Example], sampler: str) -> str:
        return evaluation.fingerprint_of("base", mixed, "evalfp", recipe, FP32_, "length",
                                         scoring, sampler)  # type: ignore[arg-type]

    assert evaluation.VERSION == 4 and evaluation.sampler_id("crn") == "crn-v2"
    # the same set under version 4 is another artifact than under version 3, and the
    # sampler is part of what it is
    assert BEFORE_EVALUATION not in {fp(old, "independent"), fp(new, "crn")}
    assert fp(old, "independent") != fp(old, "crn")
    # crn-keyed draws the crn set and trains it otherwise: another artifact, and its
    # batches per epoch are part of it
    assert evaluation.sampler_id("crn-keyed") == "crn-keyed-v3"
    keyed = {evaluation.fingerprint_of("base", new, "evalfp", recipe, FP32_, "length", scoring,
                                       "crn-keyed", b) for b in (4, 5)}
    assert len(keyed) == 2 and fp(new, "crn") not in keyed
    assert sample_mixture(POOL, counts, 5, "crn-keyed") == new
