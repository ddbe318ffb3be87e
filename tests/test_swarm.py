"""The swarm: Dirichlet draws, RegMix's regression, Spearman fidelity, and the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from taskpgm.errors import InvalidInputError
from taskpgm.swarm import (
    draw_around,
    draw_mixtures,
    fidelity,
    fit_regmix,
    regmix_weights,
    spearman,
)


def test_spearman_by_hand():
    # x ranks 1..5; y ranks (2, 1, 4, 3, 5): d = (-1, 1, -1, 1, 0), Σd² = 4,
    # rho = 1 − 6·4 / (5·24) = 0.8.
    assert spearman([1, 2, 3, 4, 5], [20, 10, 40, 30, 50]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # Ties get their mean rank: x ranks (1.5, 1.5, 3), y ranks (1, 2, 3);
    # Pearson of the ranks = 0.75 / sqrt(0.5 · 2) = 0.8660254.
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254, abs=1e-7)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(InvalidInputError):
        spearman([1, 2], [1, 2, 3])


def test_fidelity_interval_brackets_a_strong_relation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    rho, lo, hi = fidelity(x, x + 0.3 * rng.normal(size=60), draws=300)
    assert 0.8 < lo <= rho <= hi <= 1.0
    rho, lo, hi = fidelity(x, rng.normal(size=60), draws=300)
    assert lo < 0 < hi  # unrelated: the interval holds 0


def test_draws_are_on_the_simplex_and_spread_by_the_concentration():
    wide = draw_mixtures(5, 2000, concentration=1.0, seed=3)
    narrow = draw_mixtures(5, 2000, concentration=50.0, seed=3)
    np.testing.assert_allclose(wide.sum(axis=1), 1.0)
    assert (wide >= 0).all()
    # Dirichlet(a·1) on T = 5: Var p_i = (1/5)(4/5) / (5a + 1), by hand 0.16/6 and 0.16/251.
    assert wide[:, 0].var() == pytest.approx(0.16 / 6, rel=0.1)
    assert narrow[:, 0].var() == pytest.approx(0.16 / 251, rel=0.1)


def test_draws_around_a_prior_are_centred_on_it():
    q = np.array([0.1, 0.2, 0.3, 0.4])
    w = draw_around(q, 4000, seed=5)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    np.testing.assert_allclose(w.mean(axis=0), q, atol=0.01)  # E p = q at every s
    near = draw_around(q, 2000, seed=6, strengths=(5.0, 5.0))
    far = draw_around(q, 2000, seed=6, strengths=(0.1, 0.1))
    # Dirichlet(s T q): Var p_i = q_i (1 - q_i) / (s T + 1), by hand at s = 5 and 0.1
    assert near[:, 3].var() == pytest.approx(0.24 / 21, rel=0.15)
    assert far[:, 3].var() == pytest.approx(0.24 / 1.4, rel=0.15)
    zero = draw_around(np.array([0.5, 0.5, 0.0]), 10, seed=1)
    assert (zero[:, 2] == 0).all()


def test_regmix_linear_recovers_a_linear_score_and_finds_its_best_corner():
    rng = np.random.default_rng(1)
    w = draw_mixtures(4, 40, seed=2)
    coef = np.array([0.2, 0.9, 0.4, 0.1])
    predictor = fit_regmix(w, w @ coef + 1e-6 * rng.normal(size=40), "linear")
    np.testing.assert_allclose(predictor(np.eye(4)), coef, atol=1e-4)
    best, predicted = regmix_weights(predictor, 4, candidates=20000, top=1)  # the argmax
    assert int(np.argmax(best)) == 1 and best[1] > 0.9 and predicted > 0.85
    mean, _ = regmix_weights(predictor, 4, candidates=20000)  # RegMix's: the top 128's mean
    pool = np.vstack([draw_mixtures(4, 20000, seed=1), np.full((1, 4), 0.25)])
    top = pool[np.argsort(-predictor(pool), kind="stable")[:128]]
    np.testing.assert_allclose(mean, top.mean(axis=0), atol=1e-12)
    assert int(np.argmax(mean)) == 1 and mean[1] < best[1]
    trees = fit_regmix(w, w @ coef, "lightgbm")
    assert np.corrcoef(trees(w), w @ coef)[0, 1] > 0.9  # fits its own swarm
    with pytest.raises(InvalidInputError, match="unknown regmix model"):
        fit_regmix(w, w @ coef, "forest")  # type: ignore[arg-type]


def test_swarm_cli_on_the_tiny_model(tmp_path, capsys):
    from taskpgm.cli import main
    from test_pipeline import tiny_config, tiny_tasks
    from tiny_model import tiny_dir

    config = tiny_config(tmp_path / "swarm.yaml", tiny_dir(str(tmp_path)), tiny_tasks(tmp_path),
                         tmp_path / "artifacts", steps=3, seeds=[0], baselines=["uniform"])
    cfg = yaml.safe_load(config.read_text())
    cfg["relations"] = {"bootstrap": 0}
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["swarm", str(config), "--mixtures", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "fidelity split" in printed.out and "regmix lightgbm" in printed.out
    result = json.loads((out / "swarm.json").read_text())
    assert len(result["mixtures"]) == 4 and set(result["regmix"]) == {"linear", "lightgbm"}
    scores = [m["score"] for m in result["mixtures"]]
    assert result["best"]["score"] == max(scores)
    assert result["best"]["minus_uniform"] == pytest.approx(max(scores) - result["uniform"])
    caps = json.loads((out / "methods.json").read_text())["caps"]
    for m in result["mixtures"]:
        w = np.array(list(m["weights"].values()))
        assert w.sum() == pytest.approx(1.0) and (w <= np.array(caps) + 1e-9).all()
    assert {row["energy"] for row in result["fidelity"]} == {"affinity", "split", "reference",
                                                            "mixmin"}
    assert set(result["regmix_argmax"]) == {"linear", "lightgbm"}
    assert result["regmix"]["linear"]["top"] == 128
    assert result["regmix_argmax"]["linear"]["top"] == 1
    olmix = result["olmix"]  # Olmix: the log-linear law and its KL-anchored exact proposal
    w = np.array(list(olmix["weights"].values()))
    assert olmix["strength"] == 0.05 and olmix["certificate"]["gap"] <= 1e-9
    assert w.sum() == pytest.approx(1.0) and (w <= np.array(caps) + 1e-9).all()
    assert "olmix (lambda 0.05" in printed.out
    # A rerun trains nothing new: every swarm training is a finished artifact.
    assert main(["swarm", str(config), "--mixtures", "4", "--out", str(out)]) == 0
    assert "5 done already" in capsys.readouterr().err
    assert main(["swarm", str(config), "--mixtures", "1", "--out", str(out)]) == 1
    around = tmp_path / "around"  # RegMix's swarm, around the size prior
    assert main(["swarm", str(config), "--mixtures", "3", "--out", str(around), "--around",
                 "prior", "--set", "mrf.anchor.prior=size"]) == 0
    result = json.loads((around / "swarm.json").read_text())
    assert result["around"]["prior"] == "size" and result["around"]["strengths"] == [0.1, 5.0]
    assert "regmix-argmax linear" in capsys.readouterr().out
