"""TaskPGM's weights when some experts did not learn their task (``mrf.untrusted``).

The oracle for the trusted part is cvxpy on the sub-problem written out directly:
minimize 1/2 p_F^T S_FF p_F - rho u_F^T p_F over p_F >= 0, sum p_F = m.
"""

from __future__ import annotations

from pathlib import Path

import cvxpy as cp
import numpy as np
import pytest

from taskpgm.core.mrf import TaskMixtureMRF, energy
from taskpgm.core.stats import wilson_interval
from taskpgm.errors import InvalidInputError
from taskpgm.readers import Relations
from taskpgm.weights import learned, solve

N = 50


def relations(expert_acc: list[float], base_acc: list[float], seed: int = 0) -> Relations:
    """Relations of len(expert_acc) tasks with a random PSD affinity and the given accuracies."""
    t = len(expert_acc)
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(t, t + 2))
    s = a @ a.T
    d = np.sqrt(np.diag(s))
    s = s / np.outer(d, d)
    acc = np.zeros((t + 1, t))
    acc[0] = base_acc
    for i, v in enumerate(expert_acc):
        acc[i + 1, i] = v
    arrays = {"affinity": s, "pmi": rng.normal(size=(t, t)), "accuracy": acc,
              "probe_n": np.full(t, float(N))}
    return Relations(Path("."), "f" * 16, [f"task{i}" for i in range(t)], arrays, {})


def cvxpy_sub(s: np.ndarray, u: np.ndarray, rho: float, mass: float) -> np.ndarray:
    p = cp.Variable(s.shape[0])
    psd = cp.psd_wrap(s)
    cp.Problem(cp.Minimize(0.5 * cp.quad_form(p, psd) - rho * u @ p),
               [p >= 0, cp.sum(p) == mass]).solve(solver=cp.CLARABEL)
    return np.asarray(p.value)


# Task 1: 0.52 against base 0.50 (not learned); task 3: 0.30 against 0.10 (learned).
EXPERT = [0.9, 0.52, 0.8, 0.30, 0.7, 0.6]
BASE = [0.2, 0.50, 0.2, 0.10, 0.2, 0.59]


def test_learned_is_the_wilson_lower_bound_above_the_base():
    ok, intervals = learned(relations(EXPERT, BASE))
    lows = intervals[:, 0]
    for i, (e, b) in enumerate(zip(EXPERT, BASE, strict=True)):
        lo = wilson_interval(round(e * N), N)[0]
        assert lows[i] == pytest.approx(lo)
        assert ok[i] == (lo > b)
    assert ok.tolist() == [True, False, True, True, True, False]


@pytest.mark.parametrize("rho", [0.0, 0.05, 0.3])
def test_uniform_policy_holds_untrusted_tasks_at_one_over_t(rho):
    rel = relations(EXPERT, BASE)
    out = solve(rel, rho, budget=None, utility_kind="representativeness", caps=None,
                untrusted="uniform")
    w = np.array(list(out["weights"].values()))
    assert out["untrusted_tasks"] == ["task1", "task5"]
    assert w[[1, 5]] == pytest.approx([1 / 6, 1 / 6], abs=1e-12)
    free = [0, 2, 3, 4]
    s = rel.affinity[np.ix_(free, free)]
    ref = cvxpy_sub(s, s.sum(axis=1), rho, 4 / 6)
    assert w[free] == pytest.approx(ref, abs=1e-6)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    # the reported energy is E restricted to the trusted tasks, at the weights returned
    assert out["energy"] == pytest.approx(energy(w[free], s, rho), abs=1e-12)


def test_exclude_gives_nothing_and_keep_ignores_the_gate():
    rel = relations(EXPERT, BASE)
    out = solve(rel, 0.0, budget=None, utility_kind="gain", caps=None, untrusted="exclude")
    w = np.array(list(out["weights"].values()))
    assert w[[1, 5]].tolist() == [0.0, 0.0]
    free = [0, 2, 3, 4]
    s = rel.affinity[np.ix_(free, free)]
    ref = cvxpy_sub(s, np.zeros(4), 0.0, 1.0)
    assert w[free] == pytest.approx(ref, abs=1e-6)
    kept = solve(rel, 0.1, budget=None, utility_kind="representativeness", caps=None,
                 untrusted="keep")
    full = TaskMixtureMRF(0.1).fit(rel.affinity).weights_
    assert list(kept["weights"].values()) == pytest.approx(full.tolist(), abs=1e-12)
    assert kept["untrusted_tasks"] == []


def test_rho_one_over_t_is_still_uniform():
    # S 1 utility and an interior optimum: the trusted sub-problem at rho / m = 1 / |F|.
    rel = relations(EXPERT, BASE)
    rel.arrays["affinity"] = 0.9 * np.eye(6) + 0.1
    out = solve(rel, 1 / 6, budget=None, utility_kind="representativeness", caps=None,
                untrusted="uniform")
    assert list(out["weights"].values()) == pytest.approx([1 / 6] * 6, abs=1e-9)


def test_budget_never_selects_untrusted_tasks():
    rel = relations(EXPERT, BASE)
    out = solve(rel, 0.0, budget=3, utility_kind="representativeness", caps=None)
    w = out["weights"]
    assert w["task1"] == 0.0 and w["task5"] == 0.0
    assert sum(v > 0 for v in w.values()) <= 3
    assert set(out["selected"]) <= {"task0", "task2", "task3", "task4"}


def test_nothing_learned_gives_uniform_or_a_clear_error():
    rel = relations([0.5] * 4, [0.5] * 4)
    for policy in ("exclude", "uniform"):
        out = solve(rel, 0.0, budget=None, utility_kind="representativeness", caps=None,
                    untrusted=policy)
        assert list(out["weights"].values()) == pytest.approx([0.25] * 4)
    with pytest.raises(InvalidInputError, match=r"mrf\.untrusted: keep"):
        solve(rel, 0.0, budget=2, utility_kind="representativeness", caps=None)


def test_caps_that_the_trusted_tasks_cannot_fill_are_reported():
    rel = relations(EXPERT, BASE)
    caps = np.array([0.1, 1.0, 0.1, 0.1, 0.1, 1.0])
    with pytest.raises(InvalidInputError, match="cannot hold weight"):
        solve(rel, 0.0, budget=None, utility_kind="representativeness", caps=caps)


def test_every_named_baseline_is_a_registered_method():
    from taskpgm.config import BASELINES
    from taskpgm.weights import METHODS

    assert set(METHODS) == set(BASELINES)


def test_a_new_method_is_one_registered_function(tmp_path, monkeypatch):
    """The recipe of docs/design.md: a function of MethodInputs in weights.METHODS, and the
    weights stage writes its record beside the others, under the same caps."""
    from taskpgm import weights as weights_mod
    from taskpgm.config import MrfConfig

    seen = {}

    def first_task_only(given):
        seen["caps"] = given.caps
        w = np.zeros(len(given.relations.tasks))
        w[0] = 1.0
        return {"weights": given.as_weights(w), "note": "all on the first task"}

    monkeypatch.setitem(weights_mod.METHODS, "first-task", first_task_only)
    rel = relations(EXPERT, BASE)
    rel.arrays["pmi_sequence"] = rel.arrays["pmi"] + rel.arrays["pmi"].T
    caps = np.full(len(EXPERT), 1.0)
    data = weights_mod.ensure_weights(rel, MrfConfig(), caps=caps, train_sizes=[100] * 6,
                                      baselines=["uniform", "first-task"], temperature=2.0,
                                      root=tmp_path)
    got = data["methods"]["first-task"]
    assert got["method"] == "first-task" and got["note"] == "all on the first task"
    assert got["weights"]["task0"] == 1.0 and seen["caps"] is caps
    assert data["methods"]["uniform"]["weights"]["task3"] == pytest.approx(1 / 6)
