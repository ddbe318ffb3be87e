"""The model-free stages as fingerprinted artifacts: relations and weights.

* ``relations`` reads a signals artifact and writes ``relations.safetensors``
  (raw JSD over base + experts, displacement cosine, transfer PMI, the cross
  log-likelihood matrix L, the affinity S and every model's probe accuracy)
  with a manifest holding the task order and what the PSD projection changed.
* ``weights`` reads the relations and writes ``weights.json``: TaskPGM's
  exact weights (and the budgeted variant when a budget is set), the
  baselines under the same caps, and the weights along a range of rho.

Both are pure functions of their parents and parameters, so they take
seconds and changing ``mrf.rho`` recomputes only ``weights`` and what follows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from safetensors.numpy import load_file, save_file

from taskpgm import artifacts
from taskpgm.config import MrfConfig, RelationsConfig
from taskpgm.mixture import baseline_weights
from taskpgm.mrf import TaskMixtureMRF, utility
from taskpgm.predictions import from_signals
from taskpgm.relations import AffinityInfo, affinity, displacement_cosine, jsd_matrix, transfer_pmi
from taskpgm.signals import Signals

RELATIONS_VERSION = 1
WEIGHTS_VERSION = 1


@dataclass(frozen=True)
class Relations:
    """A finished relations artifact."""

    path: Path
    fingerprint: str
    tasks: list[str]
    arrays: dict[str, np.ndarray]
    info: dict[str, Any]

    @property
    def affinity(self) -> np.ndarray:
        return self.arrays["affinity"]


def _say(stream: TextIO | None, text: str) -> None:
    print(text, file=stream or sys.stderr, flush=True)


def ensure_relations(
    signals: Signals,
    tasks: Sequence[str],
    cfg: RelationsConfig,
    *,
    correct_sets: Sequence[Sequence[int]] | None = None,
    root: Path | None = None,
    stream: TextIO | None = None,
) -> Relations:
    """Compute (or reuse) the relations of a signals artifact."""
    signals_fp = str(signals.manifest.get("fingerprint", signals.path.name))
    fp = artifacts.fingerprint("relations", RELATIONS_VERSION, [signals_fp, *tasks],
                               cfg.model_dump(), RelationsConfig().model_dump())
    found = artifacts.find("relations", "relations", fp, root=root)
    if found is None:
        _say(stream, f"relations: {len(tasks)} tasks from {signals.path.name}")
        pred = from_signals(signals, tasks, normalization=cfg.normalization,
                            correct_sets=correct_sets)
        jsd = jsd_matrix(pred.rows, weights=pred.row_weights)
        pmi = transfer_pmi(pred.loglik, pred.tokens, pred.task_of)
        per_token = pred.loglik / pred.tokens
        # L_mj = mean over probe(j) of l_m(x) / n(x): every PMI variant derives from it.
        cross = np.stack([per_token[:, pred.task_of == j].mean(axis=1)
                          for j in range(len(tasks))], axis=1)
        s, info = affinity(jsd, pmi, cfg.alpha, kernel=cfg.kernel, pmi_form=cfg.pmi_form,
                           names=list(tasks), return_info=True)
        assert isinstance(info, AffinityInfo)
        arrays = {
            "jsd": jsd, "displacement": displacement_cosine(jsd, names=list(tasks)),
            "pmi": pmi, "cross_loglik": cross, "affinity": s,
            "accuracy": pred.accuracy(),
        }
        manifest: dict[str, Any] = {
            "tasks": list(tasks), "models": pred.models, "signals": signals_fp,
            "config": cfg.model_dump(),
            "psd": {"clipped_eigenvalues": list(info.clipped_eigenvalues),
                    "correction_norm": info.correction_norm, "pmi_scale": info.pmi_scale,
                    "jsd_scale": info.jsd_scale},
            "probe_examples": int(pred.task_of.size),
        }
        with artifacts.write("relations", "relations", fp, manifest, root=root) as tmp:
            save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()},
                      str(tmp / "relations.safetensors"))
        found = artifacts.find("relations", "relations", fp, root=root)
        assert found is not None
    else:
        _say(stream, f"relations: reusing {found}")
    return open_relations(found)


def open_relations(path: Path) -> Relations:
    """Read a finished relations artifact."""
    manifest = artifacts.read_manifest(path)
    arrays = load_file(str(path / "relations.safetensors"))
    return Relations(path, str(manifest["fingerprint"]), list(manifest["tasks"]), arrays,
                     manifest)


def solve(
    relations: Relations, rho: float, *, budget: int | None, utility_kind: str,
    caps: np.ndarray | None,
) -> dict[str, Any]:
    """Fit TaskPGM on the relations; the result as plain data (weights.json's shape)."""
    s = relations.affinity
    u = utility(utility_kind, s, relations.arrays["pmi"])  # type: ignore[arg-type]
    model = TaskMixtureMRF(rho, caps=caps, budget=budget).fit(s, utility=u)
    tasks = relations.tasks
    out: dict[str, Any] = {
        "method": "taskpgm" if budget is None else f"taskpgm-k{budget}",
        "rho": rho, "budget": budget, "utility": utility_kind,
        "energy": model.energy_, "kkt_residual": model.kkt_residual_,
        "certificate": model.certificate_,
        "weights": {t: float(w) for t, w in zip(tasks, model.weights_, strict=True)},
    }
    if budget is not None:
        out["selected"] = [tasks[j] for j in model.selected_ or []]
        out["greedy_gains"] = model.greedy_gains_
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
    """Compute (or reuse) every method's weights under the same caps."""
    params = {"mrf": cfg.model_dump(), "caps": [round(float(c), 12) for c in caps],
              "sizes": list(map(int, train_sizes)), "baselines": list(baselines),
              "temperature": temperature, "path": rho_path_points}
    fp = artifacts.fingerprint("weights", WEIGHTS_VERSION, [relations.fingerprint], params, {})
    found = artifacts.find("weights", "weights", fp, root=root)
    if found is not None:
        _say(stream, f"weights: reusing {found}")
        data: dict[str, Any] = json.loads((found / "weights.json").read_text())
        return data
    tasks = relations.tasks
    t = len(tasks)
    methods: dict[str, dict[str, Any]] = {}
    main = solve(relations, cfg.rho, budget=None, utility_kind=cfg.utility, caps=caps)
    methods["taskpgm"] = main
    if cfg.budget is not None:
        methods[main_name(cfg)] = solve(relations, cfg.rho, budget=cfg.budget,
                                        utility_kind=cfg.utility, caps=caps)
    for kind in baselines:
        w = baseline_weights(kind, train_sizes, tau=temperature, caps=caps)  # type: ignore[arg-type]
        methods[kind] = {"method": kind,
                         "weights": {name: float(v) for name, v in zip(tasks, w, strict=True)}}
    top = max(2.0 / t, 2.0 * cfg.rho)
    grid = np.linspace(0.0, top, rho_path_points)
    path = []
    for rho in grid:
        fit = TaskMixtureMRF(float(rho), caps=caps).fit(
            relations.affinity, utility=utility(cfg.utility, relations.affinity,  # type: ignore[arg-type]
                                                relations.arrays["pmi"]))
        path.append({"rho": float(rho), "weights": [float(v) for v in fit.weights_]})
    data = {"tasks": tasks, "chosen": main_name(cfg), "methods": methods,
            "rho_path": path, "caps": [float(c) for c in caps], "relations": relations.fingerprint}
    manifest = {"relations": relations.fingerprint, "params": params}
    with artifacts.write("weights", "weights", fp, manifest, root=root) as tmp:
        (tmp / "weights.json").write_text(json.dumps(data, indent=1))
    _say(stream, f"weights: rho={cfg.rho:g} energy {main['energy']:.5f}, "
                 f"KKT residual {main['kkt_residual']:.1e}")
    data["fingerprint"] = fp
    return data


def main_name(cfg: MrfConfig) -> str:
    """The method a run reports as its mixture: TaskPGM, budgeted when a budget is set."""
    return "taskpgm" if cfg.budget is None else f"taskpgm-k{cfg.budget}"
