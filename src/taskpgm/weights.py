"""The weights stage: a relations artifact in, ``weights.json`` out.

It holds TaskPGM's exact weights (and the budgeted variant when a budget is
set), the baselines under the same caps, and TaskPGM's weights along a range of
rho. Only tasks whose expert learned (:func:`learned`) steer the solve; the
others are excluded, held at the uniform share, or kept (``mrf.untrusted``; the
math is :func:`taskpgm.mrf.solve_trusted`). Every parameter enters the
fingerprint, so nothing here can go stale; changing ``mrf.rho`` recomputes only
this stage and what follows. See docs/design.md, "Untrusted experts".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from taskpgm import artifacts
from taskpgm.config import MrfConfig
from taskpgm.errors import InvalidInputError
from taskpgm.mixture import baseline_weights
from taskpgm.mrf import energy, solve_trusted, utility
from taskpgm.progress import say
from taskpgm.readers import WEIGHTS_FILE, Relations, open_weights
from taskpgm.stats import wilson_interval

STAGE = "weights"
VERSION = 2  # 2: untrusted tasks (experts that did not learn) leave the solve


def learned(relations: Relations) -> tuple[np.ndarray, np.ndarray]:
    """Whether each task's expert beat the base model on its own probe examples.

    learned_i  <=>  lower end of the Wilson 95% interval of expert i's accuracy on
    probe(i) > the base model's accuracy on probe(i). Returns (learned, the (T, 2)
    intervals).
    """
    acc = relations.arrays["accuracy"]
    n = relations.arrays["probe_n"].astype(int)
    intervals = np.array([wilson_interval(round(acc[i + 1, i] * n[i]), int(n[i]))
                          for i in range(len(relations.tasks))])
    return intervals[:, 0] > acc[0], intervals


def solve(
    relations: Relations, rho: float, *, budget: int | None, utility_kind: str,
    caps: np.ndarray | None, untrusted: str = "exclude",
) -> dict[str, Any]:
    """Fit TaskPGM on the relations; the result as plain data (weights.json's shape).

    Tasks whose expert did not learn (:func:`learned`) do not steer the solve:
    ``untrusted="exclude"`` gives them 0, ``"uniform"`` holds them at min(1/T, cap),
    ``"keep"`` trusts them anyway (:func:`taskpgm.mrf.solve_trusted`). With a
    budget, untrusted tasks are never selected. When no expert learned there is
    nothing to go on: the uniform mixture (with a budget, an error).
    """
    tasks = relations.tasks
    t = len(tasks)
    cap = np.full(t, np.inf) if caps is None else np.asarray(caps, dtype=np.float64)
    trusted = (np.ones(t, dtype=bool) if untrusted == "keep" else learned(relations)[0])
    hold = untrusted == "uniform"
    mass = 1.0 - (float(np.minimum(1.0 / t, cap[~trusted]).sum())
                  if hold and budget is None else 0.0)
    out: dict[str, Any] = {
        "method": "taskpgm" if budget is None else f"taskpgm-k{budget}",
        "rho": rho, "budget": budget, "utility": utility_kind, "untrusted": untrusted,
        "untrusted_tasks": [tasks[i] for i in np.flatnonzero(~trusted)],
    }
    if not trusted.any() and budget is None:  # nothing learned, nothing to go on: uniform
        w = baseline_weights("uniform", [1] * t, caps=cap)
        u_all = utility(utility_kind, relations.affinity,  # type: ignore[arg-type]
                        relations.arrays["pmi"])
        return {**out, "energy": energy(w, relations.affinity, rho, u_all),
                "kkt_residual": 0.0, "certificate": {},
                "weights": {name: float(v) for name, v in zip(tasks, w, strict=True)}}
    if not trusted.any():
        raise InvalidInputError(
            f"no expert beat the base model on its own task, so {out['method']} has no "
            "trusted relations to choose tasks by; train the experts longer (experts.steps, "
            "experts.lr) or set mrf.untrusted: keep to choose by them anyway")
    if float(cap[trusted].sum()) < mass - 1e-12:
        raise InvalidInputError(
            f"the {int(trusted.sum())} tasks whose experts beat the base model cannot hold "
            f"weight {mass:.3f} under their caps; train the experts longer (experts.steps), "
            "raise mrf.max_repeat, lower mixture.token_budget, or set mrf.untrusted: keep")
    sol = solve_trusted(relations.affinity, rho, trusted, caps=cap, budget=budget,
                        hold_uniform=hold, utility_kind=utility_kind,  # type: ignore[arg-type]
                        pmi=relations.arrays["pmi"])
    out.update(energy=sol.energy, kkt_residual=sol.kkt_residual, certificate=sol.certificate,
               weights={name: float(w) for name, w in zip(tasks, sol.weights, strict=True)})
    if budget is not None:
        out["selected"] = [tasks[i] for i in sol.selected or []]
        out["greedy_gains"] = sol.greedy_gains
    return out


def ensure_weights(
    relations: Relations,
    cfg: MrfConfig,
    *,
    caps: np.ndarray,
    train_sizes: Sequence[int],
    baselines: Sequence[str],
    temperature: float,
    rho_path_points: int = 25,
    root: Path | None = None,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Compute (or reuse) every method's weights under the same caps.

    Returns ``weights.json``'s content with the artifact's ``fingerprint`` added,
    whether it was computed now or reused.
    """
    params = {"mrf": cfg.model_dump(), "caps": [round(float(c), 12) for c in caps],
              "sizes": list(map(int, train_sizes)), "baselines": list(baselines),
              "temperature": temperature, "path": rho_path_points}
    fp = artifacts.fingerprint(STAGE, VERSION, [relations.fingerprint], params, {})
    found = artifacts.find(STAGE, STAGE, fp, root=root)
    if found is not None:
        say(f"weights: reusing {found}", stream)
        return open_weights(found)
    tasks = relations.tasks
    t = len(tasks)
    methods: dict[str, dict[str, Any]] = {}
    main = solve(relations, cfg.rho, budget=None, utility_kind=cfg.utility, caps=caps,
                 untrusted=cfg.untrusted)
    methods["taskpgm"] = main
    if cfg.budget is not None:
        methods[main_name(cfg)] = solve(relations, cfg.rho, budget=cfg.budget,
                                        utility_kind=cfg.utility, caps=caps,
                                        untrusted=cfg.untrusted)
    for kind in baselines:
        w = baseline_weights(kind, train_sizes, tau=temperature, caps=caps)  # type: ignore[arg-type]
        methods[kind] = {"method": kind,
                         "weights": {name: float(v) for name, v in zip(tasks, w, strict=True)}}
    top = max(2.0 / t, 2.0 * cfg.rho)
    path = []
    for rho in np.linspace(0.0, top, rho_path_points):
        fit = solve(relations, float(rho), budget=None, utility_kind=cfg.utility, caps=caps,
                    untrusted=cfg.untrusted)
        path.append({"rho": float(rho), "weights": list(fit["weights"].values())})
    data = {"tasks": tasks, "chosen": main_name(cfg), "methods": methods,
            "rho_path": path, "caps": [float(c) for c in caps], "relations": relations.fingerprint}
    manifest = {"relations": relations.fingerprint, "params": params}
    with artifacts.write(STAGE, STAGE, fp, manifest, root=root) as tmp:
        (tmp / WEIGHTS_FILE).write_text(json.dumps(data, indent=1))
    say(f"weights: rho={cfg.rho:g} energy {main['energy']:.5f}, "
        f"KKT residual {main['kkt_residual']:.1e}", stream)
    found = artifacts.find(STAGE, STAGE, fp, root=root)
    assert found is not None
    return open_weights(found)


def main_name(cfg: MrfConfig) -> str:
    """The method a run reports as its mixture: TaskPGM, budgeted when a budget is set."""
    return "taskpgm" if cfg.budget is None else f"taskpgm-k{cfg.budget}"
