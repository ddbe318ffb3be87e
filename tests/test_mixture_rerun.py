"""The rerun of the decision benchmark: its splits, seeds, mixtures, one-training-per-mixture
rule, shipped-default rule and rendering, without training a model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rr():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "benchmarks"))
        from quality import ledger, protocol, rerun, rerun_render
    return SimpleNamespace(rerun=rerun, render=rerun_render, protocol=protocol,
                           Ledger=ledger.Ledger)


def assert_dev_and_test_disjoint(pool: str, cfg, *, even: bool = False) -> list[str]:
    """Every task of ``cfg`` has dev and test items, and none in both (``even``: and the two
    halves within one item of each other); returns the task names."""
    from taskpgm.inputs import eval_set, load_tasks

    tasks = load_tasks(cfg)
    groups = eval_set(cfg, tasks, {}, {}).groups
    for name in tasks:
        dev = {ex.id for ex in groups[("dev", name)]}
        test = {ex.id for ex in groups[("test", name)]}
        assert dev and test and dev.isdisjoint(test), (pool, name)
        assert not even or abs(len(dev) - len(test)) <= 1, (pool, name)
    return list(tasks)


def test_dev_and_test_are_disjoint_on_every_pool(rr, bigbench_archive):
    from taskpgm import config as config_mod

    for spec in rr.rerun.POOLS.values():
        cfg = config_mod.load(ROOT / spec.pool.config)
        tasks = assert_dev_and_test_disjoint(spec.pool.name, cfg)
        for t in spec.corrupted:
            assert t in tasks and cfg.tasks.names  # the corrupted tasks are pool tasks


def test_dev_and_test_are_disjoint_at_every_pools_split_settings(rr):
    """The same check where BIG-bench is not available: each pool's own split and evaluation
    settings, on the three intent_recognition shards that ship with taskpgm (tasks of the
    redundancy pool)."""
    from taskpgm import config as config_mod

    shards = [str(ROOT / "configs" / "redundancy" / f"intent_{x}.jsonl") for x in "abc"]
    for spec in rr.rerun.POOLS.values():
        cfg = config_mod.load(ROOT / spec.pool.config)
        cfg = cfg.model_copy(update={"tasks": cfg.tasks.model_copy(update={"names": shards})})
        assert cfg.evaluation.test_share == 0.5
        assert_dev_and_test_disjoint(spec.pool.name, cfg, even=True)


def test_only_the_test_phase_reads_test_and_its_seeds_are_fresh(rr):
    for phase in ("sweep", "pilot", "swarm", "dev"):
        assert rr.protocol.split_of(phase) == "dev"
    assert rr.protocol.split_of("test") == "test"
    test_seeds = set(range(rr.rerun.TEST_SEED0, rr.rerun.TEST_SEED0 + rr.rerun.TEST_SEEDS))
    assert test_seeds.isdisjoint(rr.rerun.DEV_SEEDS)
    assert test_seeds.isdisjoint(range(1000, 1010))  # the first run's test seeds


def test_the_noise_pool_corrupts_exactly_the_declared_tasks(rr):
    from taskpgm import config as config_mod

    spec = rr.rerun.POOLS["noise"]
    cfg = config_mod.load(ROOT / spec.pool.config)
    corrupted = {getattr(e, "name", None) for e in cfg.tasks.names
                 if getattr(e, "corrupt_train", None) is not None}
    assert corrupted == set(spec.corrupted)


class FakePool:
    """The part of PoolRun that Rerun.train uses, with trainings that cost nothing."""

    def __init__(self, ledger, names):
        self.ledger, self.names, self.families = ledger, names, None
        self.pool = SimpleNamespace(name="p")
        self.trained: list[tuple[str, str, int]] = []

    def as_dict(self, w):
        return {t: float(v) for t, v in zip(self.names, w, strict=True)}

    def train(self, phase, budget, method, weights, seed):
        got = self.ledger.rows(phase, budget, method, seed)
        if got is not None:
            return got
        self.trained.append((phase, method, seed))
        rows = [{"task": t, "split": "test" if phase == "test" else "dev", "accuracy": weights[t],
                 "logprob": -1.0} for t in self.names]
        self.ledger.data["trainings"][self.ledger.key(phase, budget, method, seed)] = {
            "phase": phase, "budget": budget, "method": method, "seed": seed,
            "weights": weights, "rows": rows, "cpu_s": 10.0, "wall_s": 5.0, "fresh": True,
            "machine": 0, "sampler": "crn-keyed"}
        return rows


def test_one_mixture_is_one_training_on_a_split(rr, tmp_path):
    led = rr.Ledger(tmp_path / "p.json", "p")
    pr = FakePool(led, ["a", "b"])
    run = rr.rerun.Rerun(rr.rerun.POOLS["arith12"], pr)  # the spec is not used by train
    w = {"a": 0.5, "b": 0.5}
    run.train("swarm", 8000, "uniform", w, 100)
    run.train("dev", 8000, "reference(kl=0.3)", {"a": 0.5 + 5e-5, "b": 0.5 - 5e-5}, 100)
    run.train("dev", 8000, "other", {"a": 0.6, "b": 0.4}, 100)  # another mixture: trained
    run.train("dev", 8000, "uniform", w, 101)  # another seed: trained
    run.train("test", 8000, "uniform", w, 100)  # another split: trained
    assert [m for _, m, _ in pr.trained] == ["uniform", "other", "uniform", "uniform"]
    twin = led.data["trainings"]["dev|8000|reference(kl=0.3)|100"]
    assert twin["same_as"] == "swarm|8000|uniform|100" and twin["cpu_s"] == 0.0
    assert twin["phase"] == "dev" and twin["method"] == "reference(kl=0.3)"
    led.data["machines"] = [{"Model name": "A", "CPU(s)": "2", "flags": [], "torch": "t"}]
    assert rr.render.machines_line(led.data).endswith(  # the alias is not a training
        "(trainings: 2 dev, 1 swarm, 1 test).")
    saved = json.loads((tmp_path / "p.json").read_text())["trainings"]  # saved at once
    assert saved["dev|8000|reference(kl=0.3)|100"]["rows"] == twin["rows"]


def test_the_known_answers(rr):
    names = ["arithmetic.2_digit_addition", "arithmetic.3_digit_addition",
             "multiemo.all_sentence_en", "intent_recognition"]
    pr = SimpleNamespace(names=names, as_dict=lambda w: dict(zip(names, w, strict=True)))
    run = rr.rerun.Rerun(rr.rerun.POOLS["noise"], pr)
    known = run.known()
    assert known["arithmetic.3_digit_addition"] == known["multiemo.all_sentence_en"] == 0.0
    assert known["intent_recognition"] == pytest.approx(0.5)
    assert sum(known.values()) == pytest.approx(1.0)
    assert rr.rerun.Rerun(rr.rerun.POOLS["arith12"], pr).known() is None


def _decisions(minus: dict[str, float], sd: float) -> dict:
    path = {"points": [{"strength": s, "dev": 0.5 + v, "minus_uniform": v,
                        "dev_logprob": -1.0, "logprob_minus_uniform": 0.0,
                        "weights": {}} for s, v in minus.items() if s != "mixmin"],
            "chosen": 0.0}
    path["points"].append({"strength": None, "dev": 0.5, "minus_uniform": 0.0,
                           "dev_logprob": -1.0, "logprob_minus_uniform": 0.0, "weights": {}})
    return {"paths": {"reference": path}, "mixmin": {"minus_uniform": minus["mixmin"]},
            "pilot": {"accuracy": {"sd": sd}}}


def test_the_shipped_default_rule(rr):
    pools = list(rr.rerun.POOLS)
    sd = 0.04  # dev noise: sqrt(3 * 0.04^2 / 2) / 3 = 0.0163
    noise = np.sqrt(3 * sd**2 / 2) / 3

    def decide(minus):
        ledgers = {p: {"decisions": _decisions(minus, sd)} for p in pools}
        return rr.render.shipped_default(ledgers)[1]

    # better than today's default, but within the dev noise: today's stays
    got = decide({0.0: 0.0, 0.03: noise - 0.002, 0.3: 0.0, "mixmin": -0.05})
    assert got["best"] == "reference λ=0.03" and got["default"] == "taskpgm (today)"
    assert got["noise"] == pytest.approx(noise)
    # beyond the noise: it replaces today's
    got = decide({0.0: 0.0, 0.03: noise + 0.002, 0.3: 0.0, "mixmin": -0.05})
    assert got["default"] == "reference λ=0.03"
    # uniform best by more than the noise: the reference energy at the largest trained λ
    got = decide({0.0: -0.05, 0.03: -0.04, 0.3: -0.03, "mixmin": -0.05})
    assert got["best"] == "uniform" and got["default"] == "reference λ=0.3"
    # a pool whose dev phase is not done: no decision
    assert rr.render.shipped_default({pools[0]: {"decisions": {}}})[1] == {}


def test_compute_and_known_checks_from_a_ledger(rr):
    led = {"pool": "noise", "pipeline_cpu_s": 100.0, "trainings": {
        "swarm|8000|swarm-000|100": {"phase": "swarm", "method": "swarm-000", "cpu_s": 7.0},
        "dev|8000|split(kl=0.03)|100": {"phase": "dev", "method": "split(kl=0.03)",
                                        "cpu_s": 5.0},
        "dev|8000|mixmin|100": {"phase": "dev", "method": "mixmin", "cpu_s": 3.0}},
        "decisions": {"final_methods": {
            "uniform": {"arithmetic.3_digit_addition": 0.125, "multiemo.all_sentence_en": 0.125,
                        "x": 0.75}}}}
    c = rr.render.compute_of(led)
    assert c["uniform"] == 0.0 and c["regmix"] == 7.0 and c["split+kl"] == 105.0
    assert c["olmix"] == 7.0  # the swarm's trainings, as RegMix
    assert c["affinity+kl"] == 100.0 and c["mixmin"] == 100.0
    assert rr.render.known_checks(led) == {"uniform": {"corrupted": 0.25}}


def test_olmix_reads_the_swarm_rows_of_the_ledger_and_avoids_a_noise_task(rr, tmp_path):
    """Amendment 1: Olmix's mixture from the swarm's per-task dev losses in the ledger. The
    fake trainings score each task by a known law in which task c's data is noise."""
    from taskpgm.core.loglinear import LogLinearLaw
    from taskpgm.swarm import draw_around

    names = ["a", "b", "c"]
    slopes = np.array([[-1.5, 0.2, 1.0], [0.2, -1.5, 1.0], [0.2, 0.2, 1.0]])
    law = LogLinearLaw(np.full(3, 0.2), slopes, np.zeros(3))

    class LawPool(FakePool):
        cfg = SimpleNamespace(mixture=SimpleNamespace(seed=0))

        def train(self, phase, budget, method, weights, seed):
            got = self.ledger.rows(phase, budget, method, seed)
            if got is None:
                loss = law.predict(np.array([[weights[t] for t in names]]))[0]
                self.ledger.data["trainings"][self.ledger.key(phase, budget, method, seed)] = {
                    "phase": phase, "budget": budget, "seed": seed, "weights": weights,
                    "rows": [{"task": t, "split": "dev", "accuracy": 0.5, "logprob": -v}
                             for t, v in zip(names, loss, strict=True)]}
                self.trained.append((phase, method, seed))
            return self.ledger.rows(phase, budget, method, seed)

    pr = LawPool(rr.Ledger(tmp_path / "p.json", "p"), names)
    run = rr.rerun.Rerun(rr.rerun.POOLS["noise"], pr)
    draws = draw_around(np.full(3, 1 / 3), 24, seed=0)
    got = run.olmix(8000, draws, np.ones(3))
    assert len(pr.trained) == 24 and all(p == "swarm" for p, _, _ in pr.trained)
    assert got["weights"]["c"] < 0.05 and got["certificate"]["gap"] <= 1e-9
    again = run.olmix(8000, draws, np.ones(3))  # from the ledger: nothing trained again
    assert len(pr.trained) == 24 and again["weights"] == got["weights"]


def test_olmix_sits_out_on_a_non_finite_swarm_loss_and_the_render_says_why(rr, tmp_path):
    """A swarm training whose log-probability is not finite (a diverged run) leaves Olmix out
    of the final table instead of stopping the dev phase; the decisions' sentence says why."""
    from taskpgm.swarm import draw_around

    class NanPool(FakePool):
        cfg = SimpleNamespace(mixture=SimpleNamespace(seed=0))

        def train(self, phase, budget, method, weights, seed):
            rows = super().train(phase, budget, method, weights, seed)
            if method == "swarm-003":
                rows[0]["logprob"] = float("nan")
            return rows

    pr = NanPool(rr.Ledger(tmp_path / "p.json", "p"), ["a", "b", "c"])
    run = rr.rerun.Rerun(rr.rerun.POOLS["noise"], pr)
    got = run.olmix(8000, draw_around(np.full(3, 1 / 3), 8, seed=0), np.ones(3))
    assert "weights" not in got and "finite" in got["skipped"]
    assert rr.render.olmix_line(got) == f" **Olmix** sat out: {got['skipped']}."
    fit = {"strength": 0.05, "certificate": {"gap": 3e-11}, "predicted_loss": 1.23456}
    assert rr.render.olmix_line(fit) == (" **Olmix** (λ 0.05, certified gap 3e-11): predicted "
                                         "macro loss 1.235 nats.")
    assert rr.render.olmix_line(None) == ""


def test_a_render_for_one_pool_keeps_every_pools_section(rr, tmp_path):
    """Two processes run different pools: each one's render writes every pool's section, the
    other's from its ledger file as it stands."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "benchmarks"))
        import mixture_rerun

    ledgers = tmp_path / "ledgers"
    other = rr.Ledger(ledgers / "arith12.json", "arith12")
    other.data["trainings"]["sweep|8000|uniform|100"] = {
        "phase": "sweep", "budget": 8000, "method": "uniform", "seed": 100, "weights": {},
        "rows": [], "cpu_s": 1.0, "wall_s": 1.0, "fresh": True, "machine": 0,
        "sampler": "crn-keyed"}
    other.save()
    doc, out = tmp_path / "results.md", tmp_path / "results.json"
    assert mixture_rerun.main(["--render", "--pools", "noise", "--ledgers", str(ledgers),
                               "--doc", str(doc), "--json", str(out)]) == 0
    text = doc.read_text()
    arith = text.split("### Pool `arith12`")[1].split("### Pool")[0]
    assert "Dev phase under way" in arith  # from its file, though this run is noise's
    assert "Not started." in text.split("### Pool `redundancy`")[1].split("### Pool")[0]
    assert set(json.loads(out.read_text())["pools"]) == set(rr.rerun.POOLS)


def test_a_ledger_refuses_trainings_on_other_data(rr, tmp_path):
    """The first run records each task's content digest; a later run on the same data goes
    on, one on other examples (another BIG-bench source, a changed corruption) stops with
    the tasks named, before it trains anything or rewrites the file."""
    from taskpgm.errors import DataError

    path = tmp_path / "p.json"
    led = rr.Ledger(path, "p")
    led.check_data({"a": "1111", "b": "2222"})
    led.save()
    again = rr.Ledger(path, "p")
    again.check_data({"a": "1111", "b": "2222"})
    before = path.read_text()
    with pytest.raises(DataError, match=r"p\.json: the examples of b differ"):
        rr.Ledger(path, "p").check_data({"a": "1111", "b": "9999"})
    with pytest.raises(DataError, match="the examples of c differ"):
        rr.Ledger(path, "p").check_data({"a": "1111", "b": "2222", "c": "3333"})
    assert path.read_text() == before


def test_the_pipelines_cpu_is_recorded_by_whichever_run_does_the_work(rr, tmp_path):
    """The dev phase first runs the pipeline for the caps, then asks for the relations (from
    the cache, seconds). The compute column of taskpgm, MixMin and the anchored energies reads
    pipeline_cpu_s, so the first run that did the work records it; a cached run leaves it."""
    worked = {s: {"seconds": i + 1.0} for i, s in enumerate(
        ("experts", "signals", "relations", "weights"))}
    cached = {s: {"seconds": 0.0} for s in worked}
    ticks = iter([0.0, 250.0, 1000.0, 1004.0])  # the caps' run: 250 CPU-s; the next: 4
    led = rr.Ledger(tmp_path / "p.json", "p")
    calls = []

    def runner(cfg, run_dir, until):
        calls.append((run_dir.name, until))
        stages = worked if len(calls) == 1 else cached
        return SimpleNamespace(files=SimpleNamespace(read_stages=lambda: stages))

    for name in ("run-b8000", "run"):
        rr.protocol.timed_pipeline(led, None, tmp_path / name, runner=runner,
                                   clock=lambda: next(ticks))
    assert calls == [("run-b8000", "weights"), ("run", "weights")]
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["pipeline_cpu_s"] == 250.0
    assert saved["pipeline"]["stages"] == {"experts": 1.0, "signals": 2.0, "relations": 3.0,
                                           "weights": 4.0}
    fresh = rr.Ledger(tmp_path / "q.json", "q")  # a run from the cache records nothing
    ticks = iter([0.0, 400.0])
    rr.protocol.timed_pipeline(fresh, None, tmp_path / "run", runner=runner,
                               clock=lambda: next(ticks))
    assert "pipeline_cpu_s" not in fresh.data and not (tmp_path / "q.json").exists()


def test_a_pool_whose_data_is_not_its_ledgers_stops_the_script_with_the_reason(rr, tmp_path,
                                                                               monkeypatch):
    """The ledger's data check (or BIG-bench not served) ends the script with its message,
    not a traceback, before any training or any file is written."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import mixture_rerun
    from taskpgm.errors import DataError

    def refuse(pool, work, ledger, **_):
        raise DataError(f"{ledger.path}: the examples of a differ from those this ledger's "
                        "trainings were run on")

    monkeypatch.setattr(mixture_rerun, "PoolRun", refuse)
    with pytest.raises(SystemExit) as got:
        mixture_rerun.main(["--pools", "noise", "--phase", "dev", "--ledgers",
                            str(tmp_path / "ledgers"), "--doc", str(tmp_path / "r.md"),
                            "--json", str(tmp_path / "r.json")])
    assert str(got.value.code).startswith(f"mixture_rerun: {tmp_path / 'ledgers' / 'noise.json'}:"
                                          " the examples of a differ")
    assert not any(tmp_path.iterdir())
