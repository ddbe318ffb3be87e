"""The rerun's whole protocol on the tiny model: the dev phase (pilot, swarm, fidelity,
RegMix, Olmix, the λ paths, MixMin, the final table), two test seeds and the docs, with real
trainings. The unit tests beside it (test_mixture_rerun.py) check each rule with fake
trainings; this one checks that the pieces meet (a run of the real pools takes hours)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from test_pipeline import tiny_config, tiny_tasks
from tiny_model import tiny_dir

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rr():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "benchmarks"))
        from quality import ledger, protocol, rerun, rerun_render
    return ledger, protocol, rerun, rerun_render


def test_the_rerun_runs_dev_then_test_then_the_docs(rr, tmp_path, monkeypatch):
    ledger_mod, protocol, rerun, render = rr
    path = tiny_config(tmp_path / "tiny.yaml", tiny_dir(str(tmp_path)), tiny_tasks(tmp_path),
                       tmp_path / "artifacts", steps=3, seeds=[0], baselines=["uniform"])
    cfg = yaml.safe_load(path.read_text())
    cfg["evaluation"].update(test_share=0.5, baselines=["uniform", "size", "temperature",
                                                         "reference"])
    path.write_text(yaml.safe_dump(cfg))
    spec = rerun.RerunPool(protocol.Pool("tiny", str(path), (1500,), "family-uniform",
                                         {"hint": ("alpha", "beta")}), 1500, "family-uniform")
    monkeypatch.setitem(rerun.POOLS, "tiny", spec)
    monkeypatch.setattr(rerun, "SWARM", 6)
    led = ledger_mod.Ledger(tmp_path / "tiny.json", "tiny")
    pool = protocol.PoolRun(spec.pool, tmp_path / "work", led, sampler=rerun.SAMPLER,
                            precision=rerun.PRECISION)
    run = rerun.Rerun(spec, pool)
    dec = run.dev()
    final = dec["final_methods"]
    assert set(final) == {"uniform", "size", "temperature", "family-uniform", "swarm-top1",
                          "swarm-top3", "regmix", "regmix-argmax", "olmix", "mixmin", "taskpgm",
                          "reference+kl", "affinity+kl", "split+kl"}
    for w in final.values():
        assert set(w) == {"alpha", "beta", "gamma"} and abs(sum(w.values()) - 1) < 1e-6
    assert final["family-uniform"] == pytest.approx({"alpha": 0.25, "beta": 0.25, "gamma": 0.5})
    assert len(dec["swarm"]["draws"]) == 6 and dec["olmix"]["certificate"]["gap"] <= 1e-8
    for name, p in dec["paths"].items():  # λ = ∞ (uniform) is always a candidate
        assert p["points"][-1]["strength"] is None, name
        assert p["chosen"] in [q["strength"] for q in p["points"] if "dev" in q], name
    assert led.data["pipeline_cpu_s"] > 0  # the compute of the methods that read the experts
    trained = len(led.data["trainings"])
    assert run.dev()["final_methods"] == final and len(led.data["trainings"]) == trained

    for seed in (rerun.TEST_SEED0, rerun.TEST_SEED0 + 1):
        rerun.test_round({"tiny": run}, seed)
    saved = json.loads((tmp_path / "tiny.json").read_text())
    for method in final:
        for seed in (rerun.TEST_SEED0, rerun.TEST_SEED0 + 1):
            rows = saved["trainings"][f"test|1500|{method}|{seed}"]["rows"]
            assert {r["split"] for r in rows} == {"test"}, method
    dev_keys = [k for k, e in saved["trainings"].items() if e["phase"] != "test"]
    assert all(r["split"] == "dev" for k in dev_keys for r in saved["trainings"][k]["rows"])

    doc, out = tmp_path / "results.md", tmp_path / "results.json"
    render.write_docs({"tiny": saved}, doc, out)
    text = doc.read_text()
    assert "**Test (2 paired seeds: 2000–2001).**" in text
    for method in final:
        assert f"\n| {method} | " in text, method
    js = json.loads(out.read_text())["pools"]["tiny"]
    assert set(js["methods"]) == set(final) and js["primary_metric"] == "accuracy"
    assert all(len(m["test"]["accuracy"]) == 3 and len(m["minus_uniform"]["logprob"]) == 3
               for m in js["methods"].values())
    for method in ("taskpgm", "mixmin", "reference+kl", "swarm-top1", "regmix", "olmix"):
        assert js["methods"][method]["compute_cpu_s"] > 0, method
    assert js["methods"]["uniform"]["compute_cpu_s"] == 0
