"""The decision benchmark's statistics and its ledger-driven rendering (no training)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mq():
    """The benchmark package's three modules, as the benchmark's scripts import them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "benchmarks"))
        from quality import ledger, protocol, render
    return SimpleNamespace(CANDIDATES=protocol.CANDIDATES, POOLS=protocol.POOLS,
                           PoolRun=protocol.PoolRun, metric=protocol.metric,
                           Ledger=ledger.Ledger, machines_line=render.machines_line,
                           shipped_choice=render.shipped_choice,
                           shipped_default=render.shipped_default, test_table=render.test_table)


def test_metric_macro_over_tasks_and_over_families(mq):
    rows = [{"task": "a1", "split": "dev", "accuracy": 1.0},
            {"task": "a2", "split": "dev", "accuracy": 0.0},
            {"task": "b", "split": "dev", "accuracy": 0.5},
            {"task": "b", "split": "test", "accuracy": 0.9}]
    assert mq.metric(rows, "dev") == pytest.approx(0.5)
    fam = {"a1": "a", "a2": "a", "b": "b"}
    assert mq.metric(rows, "dev", families=fam) == pytest.approx((0.5 + 0.5) / 2)
    assert mq.metric(rows, "test") == pytest.approx(0.9)


def _rows(values: dict[str, float]) -> list[dict[str, object]]:
    return [{"task": t, "split": "test", "accuracy": v, "logprob": -v} for t, v in values.items()]


def test_test_table_pairs_only_seeds_every_method_has(mq):
    methods = {"uniform": {}, "swarm-top1": {}, "taskpgm": {}}
    led = {"tasks": ["x", "y"], "families": None,
           "decisions": {"final_methods": methods}, "trainings": {}}
    add = {"uniform": 0.5, "swarm-top1": 0.6, "taskpgm": 0.55}
    for seed in (1000, 1001, 1002):
        for m, base in add.items():
            if m == "taskpgm" and seed == 1002:
                continue  # stopped before taskpgm's third seed
            noise = 0.01 * (seed - 1000)
            led["trainings"][f"test|1|{m}|{seed}"] = {
                "phase": "test", "method": m, "seed": seed,
                "rows": _rows({"x": base + noise, "y": base - noise})}
    table = mq.test_table(json.loads(json.dumps(led)))
    assert table["seeds"] == [1000, 1001]
    row = table["methods"]["taskpgm"]
    assert row["accuracy_minus_uniform"][0] == pytest.approx(0.05)
    assert row["accuracy_minus_swarm"][0] == pytest.approx(-0.05)
    assert row["win_rate"] == 1.0


def test_a_difference_without_spread_over_seeds_is_not_called_significant(mq):
    # task x: taskpgm − uniform is −0.16 at both seeds, up to float noise (0.04 − 0.2 and
    # 0.2 − 0.36 differ in the last bits): the t-test is undefined there, p stays 1
    acc = {"uniform": (0.2, 0.36), "swarm-top1": (0.3, 0.3), "taskpgm": (0.04, 0.2)}
    led = {"tasks": ["x", "y"], "families": None,
           "decisions": {"final_methods": {m: {} for m in acc}}, "trainings": {}}
    for i, seed in enumerate((1000, 1001)):
        for m, xs in acc.items():
            led["trainings"][f"test|1|{m}|{seed}"] = {
                "phase": "test", "method": m, "seed": seed,
                "rows": _rows({"x": xs[i], "y": 0.5 + 0.1 * i * (m == "taskpgm")})}
    per_task = mq.test_table(led)["methods"]["taskpgm"]["per_task"]
    assert per_task["x"]["diff"] == pytest.approx(-0.16)
    assert per_task["x"]["holm_p"] == 1.0


def test_shipped_default_follows_the_preregistered_rule(mq):
    def ledgers(taskpgm: tuple[float, float], split: tuple[float, float]) -> dict:
        return {pool: {"decisions": {"candidates": {
            "taskpgm": {"minus_uniform": taskpgm[i]},
            "split(rho=1,keep)": {"minus_uniform": split[i]},
            "reference": {"dropped": "fidelity interval below zero"}}}}
            for i, pool in enumerate(("arith12", "redundancy"))}

    # means: taskpgm +0.010, split +0.014: within 0.005, today's default stays
    text = "\n".join(mq.shipped_default(ledgers((0.02, 0.0), (0.008, 0.02))))
    assert "Best: `split(rho=1,keep)` (+0.014" in text and "`taskpgm` stays" in text
    assert "reference" not in text  # dropped on fidelity: no dev score to average
    # split +0.030 against +0.010: it wins
    text = "\n".join(mq.shipped_default(ledgers((0.02, 0.0), (0.04, 0.02))))
    assert "it becomes the shipped default" in text
    # one pool unfinished: no decision
    half = ledgers((0.02, 0.0), (0.04, 0.02))
    half["arith12"]["decisions"] = {}
    assert "Not decided yet: the dev candidates of arith12" in mq.shipped_default(half)[0]
    assert mq.shipped_choice(half) is None
    # today's default dropped on one pool: no mean, so the best of the rest ships
    gone = ledgers((0.02, 0.0), (0.008, 0.02))
    gone["redundancy"]["decisions"]["candidates"]["taskpgm"] = {"dropped": "fidelity"}
    assert mq.shipped_choice(gone)[0] == "split(rho=1,keep)"
    assert "has no dev score on redundancy" in "\n".join(mq.shipped_default(gone))


def test_the_shipped_config_defaults_are_the_variant_dev_chose(mq):
    from taskpgm.config import ENERGY_DEFAULTS, MrfConfig

    ledgers = {p: json.loads((ROOT / "benchmarks" / "results" / "mixture_quality"
                              / f"{p}.json").read_text()) for p in mq.POOLS}
    choice = mq.shipped_choice(ledgers)
    if choice is None:
        pytest.skip("the dev phase of some pool is not finished")
    energy, rho, policy = next((e, r, u) for n, e, r, u in mq.CANDIDATES if n == choice[0])
    shipped = MrfConfig()
    assert (shipped.energy, shipped.rho, shipped.untrusted) == (energy, rho, policy)
    # naming the chosen energy alone gives the same variant
    assert ENERGY_DEFAULTS[energy] == {"rho": rho, "untrusted": policy}


def test_a_ledger_entry_on_other_weights_stops_the_run(mq, tmp_path):
    ledger = mq.Ledger(tmp_path / "pool.json", "pool")
    rows = [{"task": "a", "split": "test", "accuracy": 0.5, "logprob": -1.0}]
    ledger.data["trainings"][mq.Ledger.key("test", 100, "m", 1000)] = {
        "phase": "test", "budget": 100, "method": "m", "seed": 1000,
        "weights": {"a": 0.5, "b": 0.5}, "rows": rows, "cpu_s": 1.0}
    pr = object.__new__(mq.PoolRun)  # no pool loaded: the ledger answers
    pr.ledger = ledger
    assert pr.train("test", 100, "m", {"a": 0.5, "b": 0.5}, 1000) == rows
    assert pr.train("test", 100, "m", {"a": 0.500002, "b": 0.499998}, 1000) == rows  # re-solved
    with pytest.raises(SystemExit, match="trained on other weights"):
        pr.train("test", 100, "m", {"a": 0.6, "b": 0.4}, 1000)


def test_the_machines_line_counts_each_machines_trainings(mq):
    led = {"machines": [{"Model name": "A", "CPU(s)": "2", "flags": ["avx2"], "torch": "t"},
                        {"Model name": "B", "CPU(s)": "2", "flags": ["amx_bf16"], "torch": "t"}],
           "trainings": {"1": {"phase": "dev"}, "2": {"phase": "test"},  # before the field: A
                         "3": {"phase": "test", "machine": 1},
                         "4": {"phase": "test", "machine": 1}}}
    assert mq.machines_line(led) == ("Machines: A, 2 CPUs, avx2, torch t (trainings: 1 dev, "
                                     "1 test); B, 2 CPUs, amx_bf16, torch t (trainings: 2 test).")
    one = {"machines": led["machines"][:1], "trainings": {}}
    assert mq.machines_line(one) == "Machine: A, 2 CPUs, avx2, torch t (trainings: none)."
