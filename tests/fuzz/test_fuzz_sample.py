"""The fuzzing campaign's fixed-seed sample (the long one is `make fuzz`), and its own
checks: a dying worker is counted and the campaign goes on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

import campaign

from taskpgm.errors import TaskPGMError


def test_a_fixed_seed_sample_has_no_other_exceptions_and_no_crashes():
    counts, log, _ = campaign.campaign(250, 80, seed=1)
    for name, c in counts.items():
        assert c["other exception"] == 0 and c["crash"] == 0, (name, c, log[:5])
        assert c["loaded"] > 0 and c["clear error"] > 0, (name, c)  # both kinds reached


def test_a_worker_that_dies_is_counted_and_replaced(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"q{i}", "choices": ["a", "b"],
                                        "answer": i % 2}) + "\n" for i in range(30)))
    crash = tmp_path / "x.selftest-crash"
    crash.write_text("")
    log: list[dict] = []
    counts = campaign.run_cases("tasks", [good, crash, good, good], log)
    assert counts["crash"] == 1 and counts["loaded"] == 3
    assert log and log[0]["case"] == str(crash)


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
value = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | text,
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(text, inner, max_size=3), max_leaves=12)
record = st.dictionaries(st.sampled_from(["prompt", "choices", "answer", "target", "x"]),
                         value, max_size=5)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(record, min_size=1, max_size=12))
def test_any_jsonl_records_load_or_give_a_clear_error(tmp_path, rows):
    from taskpgm.tasks import load_task

    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
    with contextlib.suppress(TaskPGMError):
        load_task(str(path))
