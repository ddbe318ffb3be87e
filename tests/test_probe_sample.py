"""signals.probe_total: a stratified, deterministic, nested probe sample."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from taskpgm.signals import sample_probes


def pool(sizes: dict[str, int]) -> dict[str, list[SimpleNamespace]]:
    return {t: [SimpleNamespace(id=f"{t}-{i}") for i in range(n)] for t, n in sizes.items()}


def test_total_floor_and_proportions_by_hand():
    probes = pool({"a": 100, "b": 50, "c": 4})
    got = sample_probes(probes, 44, floor=8, seed=0)
    # floors: a 8, b 8, c 4 (all it has) = 20; the other 24 in proportion to the room
    # (92, 42, 0): 24·92/134 = 16.48 -> 16, 24·42/134 = 7.52 -> 7, plus the largest
    # remainder (b, .52 against a's .48): a 8+16 = 24, b 8+8 = 16, c 4.
    assert {t: len(v) for t, v in got.items()} == {"a": 24, "b": 16, "c": 4}
    assert sum(len(v) for v in got.values()) == 44


def test_deterministic_nested_and_in_order():
    probes = pool({"a": 60, "b": 60})
    small = sample_probes(probes, 20, floor=4, seed=3)
    assert small == sample_probes(probes, 20, floor=4, seed=3)
    big = sample_probes(probes, 40, floor=4, seed=3)
    for t in probes:
        assert {e.id for e in small[t]} <= {e.id for e in big[t]}  # nested
        index = [probes[t].index(e) for e in big[t]]
        assert index == sorted(index)  # in the split's order
    assert sample_probes(probes, 20, floor=4, seed=4) != small  # the seed matters


@pytest.mark.parametrize("total", [None, 120, 500])
def test_no_total_or_a_large_one_keeps_everything(total):
    probes = pool({"a": 60, "b": 60})
    assert sample_probes(probes, total, floor=4) == probes


def test_the_floor_wins_over_a_smaller_total():
    got = sample_probes(pool({"a": 30, "b": 30, "c": 30}), 6, floor=8)
    assert {t: len(v) for t, v in got.items()} == {"a": 8, "b": 8, "c": 8}


def test_plan_counts_the_sampled_probe_set(tmp_path, capsys):
    import json

    from taskpgm.cli import main
    from test_pipeline import tiny_config, tiny_tasks
    from tiny_model import tiny_dir

    cfg = tiny_config(tmp_path / "c.yaml", tiny_dir(str(tmp_path)), tiny_tasks(tmp_path),
                      tmp_path / "cache", steps=3, seeds=[0], baselines=["uniform"])
    assert main(["plan", str(cfg), "--json", "--set", "signals.probe_total=12",
                 "--set", "signals.probe_floor=2"]) == 0
    assert json.loads(capsys.readouterr().out)["workload"]["probe_scorings"] == 4 * 12
