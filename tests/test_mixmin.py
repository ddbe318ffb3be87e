"""MixMin from the experts' predictions, the anchored energies in the weights stage, and the
CLI on the tiny model.

Oracles: cvxpy for the solver (tests/test_convex.py); here, two solves that must agree (a
pool with three copies of a task against the pool with one), a target that is a copy of a
pool task, and the plain energy's stage output at strength 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from taskpgm.core.convex import kl_divergence
from taskpgm.core.mixmin import gold_probability, mixmin_solve, task_mean_weights
from taskpgm.readers import Relations
from taskpgm.weights import resolve_prior, solve, solve_mixmin


def specialist_pool(rng: np.random.Generator, n_tasks: int, items: int = 30):
    """(T, N) gold probabilities: expert i is good on task i's items (0.6-0.95), near chance on
    the others (0.2-0.4), with noise; (N,) the items' tasks."""
    task_of = np.repeat(np.arange(n_tasks), items)
    gold = rng.uniform(0.2, 0.4, size=(n_tasks, task_of.size))
    for i in range(n_tasks):
        gold[i, task_of == i] = rng.uniform(0.6, 0.95, size=items)
    return gold, task_of


def test_three_copies_of_a_task_share_what_one_would_get():
    """Pool A, B, C, D against A, B, C, D1, D2, D3 (D's expert three times), both judged on
    the four distinct tasks' items: the copies' total equals D's weight alone."""
    rng = np.random.default_rng(0)
    gold, task_of = specialist_pool(rng, 4)
    w = task_mean_weights(task_of, [0, 1, 2, 3])
    one = mixmin_solve(gold, w)
    copies = mixmin_solve(np.vstack([gold, gold[3], gold[3]]), w)
    assert one.certificate["gap"] <= 1e-10 and copies.certificate["gap"] <= 1e-10
    np.testing.assert_allclose(copies.p[:3], one.p[:3], atol=1e-6)
    assert copies.p[3] + copies.p[4] + copies.p[5] == pytest.approx(one.p[3], abs=1e-6)
    assert copies.value == pytest.approx(one.value, abs=1e-10)


def test_macro_over_the_pool_counts_copies_as_tasks():
    """Judged on the pool's own tasks (the default without mrf.target), three copies are three
    tasks of the target: the family gets about three shares (MixMin reproduces its target's
    weighting; the redundancy answer needs a target that counts the family once)."""
    rng = np.random.default_rng(1)
    gold, task_of = specialist_pool(rng, 4)
    pool_gold = np.vstack([gold, gold[3], gold[3]])
    pool_items = np.concatenate([task_of, np.where(task_of == 3, 4, -1)[task_of == 3],
                                 np.where(task_of == 3, 5, -1)[task_of == 3]])
    gold_items = np.hstack([pool_gold, pool_gold[:, task_of == 3], pool_gold[:, task_of == 3]])
    got = mixmin_solve(gold_items, task_mean_weights(pool_items, list(range(6))))
    family = got.p[3:].sum()
    assert family > 0.4  # about 3/6, where one task's share is about 1/4


def test_a_target_that_copies_a_pool_task_gets_that_task():
    rng = np.random.default_rng(2)
    gold, task_of = specialist_pool(rng, 5)
    w = task_mean_weights(task_of, [2])  # the target's items are task 2's
    got = mixmin_solve(gold, w)
    assert got.p[2] > 0.999 and got.certificate["gap"] <= 1e-10


def test_held_shares_and_the_anchor_in_mixmin():
    rng = np.random.default_rng(3)
    gold, task_of = specialist_pool(rng, 4)
    w = task_mean_weights(task_of, [0, 1, 2, 3])
    free = np.array([True, True, False, True])
    got = mixmin_solve(gold, w, free=free, held=np.full(4, 0.25))
    assert got.p[2] == pytest.approx(0.25) and got.p.sum() == pytest.approx(1.0)
    strong = mixmin_solve(gold, w, strength=1e6, prior=[0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(strong.p, [0.1, 0.2, 0.3, 0.4], atol=1e-5)


def mixmin_relations(n_tasks: int = 4, seed: int = 4) -> Relations:
    rng = np.random.default_rng(seed)
    gold, task_of = specialist_pool(rng, n_tasks)
    base = np.full((1, task_of.size), 0.25)
    loglik = np.log(np.vstack([base, gold]))
    acc = np.zeros((n_tasks + 1, n_tasks))
    acc[0] = 0.25
    for i in range(n_tasks):
        acc[i + 1, i] = 0.9 if i != 1 else 0.25  # expert 1 did not learn
    arrays = {"probe_loglik": loglik, "probe_tokens": np.ones(task_of.size),
              "probe_task": task_of.astype(float), "accuracy": acc,
              "probe_n": np.full(n_tasks, 30.0)}
    return Relations(Path("."), "f" * 16, [f"t{i}" for i in range(n_tasks)], arrays,
                     {"config": {"bootstrap_blocks": 8}})


def test_the_weights_stage_solves_mixmin_with_the_untrusted_policy():
    rel = mixmin_relations()
    gold = gold_probability(rel.arrays["probe_loglik"][1:], rel.arrays["probe_tokens"])
    w = task_mean_weights(rel.arrays["probe_task"].astype(int), [0, 1, 2, 3])
    out = solve(rel, 0.0, budget=None, utility_kind="representativeness", caps=None,
                untrusted="exclude", energy="mixmin")
    assert out["energy_form"] == "mixmin" and out["untrusted_tasks"] == ["t1"]
    assert out["weights"]["t1"] == 0.0
    direct = mixmin_solve(gold, w, free=[True, False, True, True])
    assert out["energy"] == pytest.approx(direct.value)
    kept = solve_mixmin(rel, caps=None, untrusted="keep")
    assert kept["weights"]["t1"] > 0  # trusted anyway, it still helps its own items a bit
    assert kept["certificate"]["gap"] <= 1e-10


def test_the_anchor_in_the_weights_stage_records_its_kl_and_objective():
    rng = np.random.default_rng(5)
    t = 5
    a = rng.normal(size=(t, t + 2))
    s = a @ a.T / t
    arrays = {"affinity": s, "pmi": rng.normal(size=(t, t)),
              "accuracy": np.vstack([np.zeros(t), np.eye(t)]), "probe_n": np.full(t, 50.0)}
    rel = Relations(Path("."), "f" * 16, [f"t{i}" for i in range(t)], arrays, {})
    prior = np.array([0.1, 0.1, 0.2, 0.3, 0.3])
    kw = {"budget": None, "utility_kind": "representativeness", "caps": None,
          "untrusted": "keep", "energy": "affinity"}
    plain = solve(rel, 0.1, **kw)
    zero = solve(rel, 0.1, **kw, anchor=0.0, prior=prior)
    assert zero["weights"] == plain["weights"] and "kl" not in zero
    anchored = solve(rel, 0.1, **kw, anchor=0.5, prior=prior)
    w = np.array(list(anchored["weights"].values()))
    assert anchored["kl"] == pytest.approx(kl_divergence(w, prior))
    assert anchored["objective"] == pytest.approx(anchored["energy"] + 0.5 * anchored["kl"])
    assert anchored["certificate"]["gap"] <= 1e-10
    assert kl_divergence(w, prior) < kl_divergence(np.array(list(plain["weights"].values())),
                                                   prior)


def test_resolve_prior_from_names_and_files(tmp_path):
    from taskpgm.config import AnchorConfig
    from taskpgm.errors import InvalidInputError

    tasks, sizes = ["a", "b"], [10, 30]
    np.testing.assert_allclose(resolve_prior(AnchorConfig(), tasks, sizes, 2.0), [0.5, 0.5])
    np.testing.assert_allclose(resolve_prior(AnchorConfig(prior="size"), tasks, sizes, 2.0),
                               [0.25, 0.75])
    path = tmp_path / "prior.json"
    path.write_text(json.dumps({"a": 1, "b": 3}))
    np.testing.assert_allclose(resolve_prior(AnchorConfig(prior=str(path)), tasks, sizes, 2.0),
                               [0.25, 0.75])
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(InvalidInputError, match="missing"):
        resolve_prior(AnchorConfig(prior=str(path)), tasks, sizes, 2.0)
    with pytest.raises(InvalidInputError, match="neither"):
        resolve_prior(AnchorConfig(prior="nowhere.json"), tasks, sizes, 2.0)


def test_the_methods_run_from_the_cli_on_the_tiny_model(tmp_path, capsys):
    """mrf.energy=mixmin and mrf.anchor.strength from --set, mixmin as a named baseline, and
    `taskpgm solve --anchor-path`, end to end on the tiny model."""
    import yaml

    from taskpgm.cli import main
    from test_pipeline import tiny_config, tiny_tasks
    from tiny_model import tiny_dir

    config = tiny_config(tmp_path / "m.yaml", tiny_dir(str(tmp_path)), tiny_tasks(tmp_path),
                         tmp_path / "artifacts", steps=3, seeds=[0], baselines=["uniform"])
    cfg = yaml.safe_load(config.read_text())
    cfg["relations"] = {"bootstrap": 20}
    cfg["evaluation"]["enabled"] = False
    config.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["run", str(config), "--out", str(run), "--set", "mrf.energy=mixmin",
                 "--set", "mrf.untrusted=keep",
                 "--set", "evaluation.baselines=[uniform,mixmin]"]) == 0
    methods = json.loads((run / "methods.json").read_text())
    main_fit = methods["methods"]["taskpgm"]
    assert main_fit["energy_form"] == "mixmin" and main_fit["certificate"]["gap"] <= 1e-10
    assert main_fit["intervals"]["draws"] == 20
    t = len(methods["tasks"])  # the compute record: counts, the same on every machine
    assert main_fit["compute"]["solves"] == 21 and main_fit["compute"]["models_read"] == t + 1
    scorings = main_fit["compute"]["probe_scorings"]  # every model on every probe example
    assert scorings > 0 and scorings % (t + 1) == 0
    assert methods["methods"]["mixmin"]["compute"]["solves"] == 21
    assert methods["methods"]["uniform"]["compute"] == {"solves": 0, "models_read": 0,
                                                        "probe_scorings": 0}
    from taskpgm.artifacts import read_manifest  # CPU seconds: in the manifest, not the json

    stages = json.loads((run / "stages.json").read_text())
    cpu = read_manifest(Path(stages["weights"]["path"]))["method_cpu_s"]
    assert set(cpu) == {"taskpgm", "uniform", "mixmin"} and all(v >= 0 for v in cpu.values())
    assert methods["methods"]["mixmin"]["certificate"]["gap"] <= 1e-10
    assert methods["rho_path"] == []
    html = (run / "report.html").read_text()
    assert "Solves" in html and "mixmin" in html
    anchored = tmp_path / "anchored"
    assert main(["run", str(config), "--out", str(anchored), "--set", "mrf.energy=affinity",
                 "--set", "mrf.untrusted=keep", "--set", "mrf.anchor.strength=0.05",
                 "--set", "mrf.anchor.prior=size"]) == 0
    methods = json.loads((anchored / "methods.json").read_text())
    fit = methods["methods"]["taskpgm"]
    assert fit["anchor"] == 0.05 and fit["certificate"]["gap"] <= 1e-10
    path = methods["anchor_path"]
    assert path[0]["strength"] == 0 and path[-1]["strength"] is None  # null: the prior
    prior, caps = np.array(methods["prior"]["weights"]), np.array(methods["caps"])
    end = np.array(path[-1]["weights"])
    if (prior <= caps).all():
        np.testing.assert_allclose(end, prior, atol=1e-12)
    else:  # the prior's KL projection onto the caps
        assert end.sum() == pytest.approx(1.0) and (end <= caps + 1e-12).all()
    assert path[0]["weights"] != path[-1]["weights"]
    assert "fig-anchor" in (anchored / "report.html").read_text()
    capsys.readouterr()
    assert main(["solve", str(anchored), "--anchor-path"]) == 0
    printed = capsys.readouterr().out
    assert "anchor path (affinity" in printed and "inf" in printed.splitlines()[-1]
    assert main(["solve", str(anchored)]) == 0
    assert "+ 0.05 KL" in capsys.readouterr().out
    import taskpgm  # the Python API takes the same settings

    result = taskpgm.run(config, tmp_path / "api", overrides=["mrf.energy=mixmin",
                                                              "mrf.untrusted=keep"])
    assert result.weights == pytest.approx(
        json.loads((run / "methods.json").read_text())["methods"]["taskpgm"]["weights"])
    assert set(result.intervals) == set(result.weights)
