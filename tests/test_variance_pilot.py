"""The variance pilot's statistics from a hand-made ledger (no training)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vp():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # where the script finds `quality`
    spec = importlib.util.spec_from_file_location("variance_pilot",
                                                  ROOT / "benchmarks" / "variance_pilot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(a: float, b: float, lp: float) -> list[dict[str, object]]:
    return [{"task": "x", "split": "dev", "accuracy": a, "logprob": lp, "n": 10},
            {"task": "y", "split": "dev", "accuracy": b, "logprob": lp, "n": 10}]


# macro accuracy minus uniform's, per seed, by hand: (independent, crn, crn-keyed) x
# (aa, good)
DIFFS = {("independent", "aa"): [0.10, -0.10, 0.05], ("crn", "aa"): [0.01, -0.01, 0.0],
         ("crn-keyed", "aa"): [0.02, 0.0, 0.0],
         ("independent", "good"): [0.2, 0.0, 0.1], ("crn", "good"): [0.12, 0.08, 0.1],
         ("crn-keyed", "good"): [0.1, 0.1, 0.13]}
SAMPLERS = ("independent", "crn", "crn-keyed")


def ledger() -> dict[str, object]:
    trainings = {}
    for seed_i, seed in enumerate((100, 101, 102)):
        for sampler in SAMPLERS:
            trainings[f"u-{sampler}-{seed}"] = {
                "method": f"uniform@{sampler}", "seed": seed, "cpu_s": 1.0,
                "rows": rows(0.5, 0.5, -1.0)}
            for arm in ("aa", "good"):
                d = DIFFS[(sampler, arm)][seed_i]
                # the macro mean moves by d when both tasks move by d
                trainings[f"{arm}-{sampler}-{seed}"] = {
                    "method": f"{arm}@{sampler}", "seed": seed, "cpu_s": 1.0,
                    "rows": rows(0.5 + d, 0.5 + d, -1.0 + d / 10)}
    # a seed with the A/A pair only: counted for aa, not for good
    for sampler in SAMPLERS:
        for arm, d in (("uniform", 0.0), ("aa", 0.0)):
            trainings[f"{arm}-{sampler}-103"] = {"method": f"{arm}@{sampler}", "seed": 103,
                                                 "cpu_s": 1.0, "rows": rows(0.5 + d, 0.5, -1.0)}
    return {"pool": "p", "budget": 8000, "tasks": ["x", "y"], "per_task": {"dev": 10},
            "families": None, "trainings": trainings}


def sd(values: list[float]) -> float:
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def test_pool_results_pairs_each_arm_with_uniform_over_its_complete_seeds(vp):
    res = vp.pool_results(ledger())
    assert res["complete_seeds"] == {"aa": [100, 101, 102, 103], "good": [100, 101, 102]}
    assert res["samplers"]["crn"]["aa"]["accuracy"]["seeds"] == 4
    assert res["reduction"]["crn"]["aa"]["seeds"] == 4
    for (sampler, arm), diffs in DIFFS.items():
        if arm == "aa":
            diffs = [*diffs, 0.0]
        got = res["samplers"][sampler][arm]["accuracy"]
        assert got["diffs"] == pytest.approx(diffs, abs=1e-9)
        assert got["sd"] == pytest.approx(sd(diffs), abs=1e-9)
        assert got["mean"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-9)
        lp = res["samplers"][sampler][arm]["logprob"]
        assert lp["sd"] == pytest.approx(sd(diffs) / 10, abs=1e-9)
    ratio = sd([0.10, -0.10, 0.05, 0.0]) / sd([0.01, -0.01, 0.0, 0.0])
    assert res["reduction"]["crn"]["aa"]["accuracy"]["sd_ratio"] == pytest.approx(ratio)
    assert res["reduction"]["crn"]["aa"]["accuracy"]["variance_ratio"] == pytest.approx(
        ratio ** 2)
    keyed = sd([0.2, 0.0, 0.1]) / sd([0.1, 0.1, 0.13])
    assert res["reduction"]["crn-keyed"]["good"]["accuracy"]["sd_ratio"] == pytest.approx(keyed)
    # the detectable difference at 10 seeds is (t_.975,9 + t_.8,9) · sd / sqrt(10)
    from scipy import stats

    crn = res["samplers"]["crn"]["good"]["accuracy"]
    want = (stats.t.ppf(0.975, 9) + stats.t.ppf(0.8, 9)) * crn["sd"] / math.sqrt(10)
    assert crn["detectable_at_10"] == pytest.approx(want)


def with_items(rows_: list[dict[str, object]], lp: list[float], ok: list[int]
               ) -> list[dict[str, object]]:
    """Rows with per-item scores: two items on task x, one on task y."""
    out = [dict(r) for r in rows_]
    out[0]["items"] = {"ids": ["a", "b"], "logprob": lp[:2], "correct": ok[:2]}
    out[1]["items"] = {"ids": ["c"], "logprob": lp[2:], "correct": ok[2:]}
    return out


def test_a_sampler_behind_the_others_counts_its_own_seeds(vp):
    """Seed 103's A/A pair without crn-keyed: crn and independent use it, crn-keyed does
    not, and crn-keyed's reduction pairs only the seeds both samplers hold."""
    led = ledger()
    del led["trainings"]["aa-crn-keyed-103"]
    res = vp.pool_results(led)
    assert res["complete_seeds"]["aa"] == [100, 101, 102]
    assert res["samplers"]["crn"]["aa"]["accuracy"]["seeds"] == 4
    assert res["samplers"]["crn-keyed"]["aa"]["accuracy"]["seeds"] == 3
    assert res["reduction"]["crn-keyed"]["aa"]["seeds"] == 3
    ratio = sd([0.10, -0.10, 0.05]) / sd([0.02, 0.0, 0.0])
    assert res["reduction"]["crn-keyed"]["aa"]["accuracy"]["sd_ratio"] == pytest.approx(ratio)


def test_item_distances_of_the_aa_pair_and_of_two_seeds(vp):
    """RMS of the per-item log-prob difference and the share of flipped items, by hand."""
    base = rows(0.5, 0.5, -1.0)
    trainings = {
        "u100": {"method": "uniform@crn", "seed": 100,
                 "rows": with_items(base, [-1.0, -2.0, -3.0], [1, 0, 1])},
        "a100": {"method": "aa@crn", "seed": 100,
                 "rows": with_items(base, [-1.3, -2.0, -3.4], [1, 1, 1])},
        "u101": {"method": "uniform@crn", "seed": 101,
                 "rows": with_items(base, [-2.0, -1.0, -3.0], [0, 0, 0])},
        "u102": {"method": "uniform@crn", "seed": 102, "rows": base},  # no items: skipped
    }
    got = vp.distances({(e["method"], e["seed"]): e["rows"] for e in trainings.values()})
    aa, seeds = got["crn"]["aa"], got["crn"]["seeds"]
    assert aa["pairs"] == 1 and seeds["pairs"] == 1
    assert aa["logprob_rms"] == pytest.approx(math.sqrt((0.09 + 0.0 + 0.16) / 3))
    assert aa["flips"] == pytest.approx(1 / 3)
    assert seeds["logprob_rms"] == pytest.approx(math.sqrt(2 / 3))
    assert seeds["flips"] == pytest.approx(2 / 3)
    assert got["independent"]["aa"]["pairs"] == 0
    assert math.isnan(got["independent"]["aa"]["logprob_rms"])


def mq_pool(good: str) -> object:
    from types import SimpleNamespace

    return SimpleNamespace(good=good)


def test_arms_move_one_hundredth_between_the_first_two_tasks(vp):
    class FakeRun:
        def __init__(self) -> None:
            self.names = ["a", "b", "c", "d"]
            self.pool = mq_pool("swarm-best")

        def as_dict(self, w):
            return dict(zip(self.names, map(float, w), strict=True))

    arms = vp.arm_weights(FakeRun(), {"good": {"a": 0.7, "b": 0.1, "c": 0.1, "d": 0.1}})
    assert arms["uniform"] == pytest.approx({"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25})
    assert arms["aa"] == pytest.approx({"a": 0.26, "b": 0.24, "c": 0.25, "d": 0.25})
    assert arms["good"]["a"] == 0.7


def test_the_docs_quote_the_pilot_results_as_rendered(vp):
    """docs/benchmarks.md holds the table the committed results render to, unchanged."""
    import json

    results = json.loads(vp.RESULTS.read_text())
    assert vp.table(results) in (ROOT / "docs" / "benchmarks.md").read_text()
