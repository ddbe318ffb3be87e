"""A small run directory built from the synthetic example, for the report tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from safetensors.numpy import save_file

from taskpgm import artifacts
from taskpgm.core.mixture import baseline_weights
from taskpgm.core.mrf import TaskMixtureMRF
from taskpgm.core.relations import affinity, displacement_cosine, jsd_matrix, transfer_pmi
from taskpgm.core.summary import summarize
from taskpgm.core.synthetic import synthetic_signals
from taskpgm.predictions import ProbePredictions

EVIL = "<script>alert(1)</script>"


def make_run(root: Path, tasks: list[str]) -> Path:
    """A run directory with every file the report reads, for 6 tasks named ``tasks``."""
    sig = synthetic_signals()
    assert len(tasks) == len(sig.tasks)
    jsd = jsd_matrix(sig.dists)
    pmi = transfer_pmi(sig.gold_logprob(), np.ones(sig.gold.size), sig.task_of)
    # the pairwise form makes the blend indefinite here, so the report has a PSD clip to show
    s, info = affinity(jsd, pmi, 0.5, pmi_form="pairwise", return_info=True)
    correct = sig.dists.argmax(axis=-1) == sig.gold[None, :]
    n = sig.gold.size
    pred = ProbePredictions(["base", *tasks], tasks, sig.task_of, sig.gold_logprob(),
                            np.ones(n), correct, sig.dists, np.full(n, 1 / n))
    accuracy = pred.accuracy()
    # One expert that did not learn: better than the base model on its own task, but
    # not by enough (the lower Wilson end stays under the base model's accuracy).
    accuracy[2, 1] = accuracy[0, 1] + 0.03
    arrays = {"jsd": jsd, "displacement": displacement_cosine(jsd), "pmi": pmi,
              "affinity": s,
              "accuracy": accuracy,
              "probe_n": np.bincount(sig.task_of, minlength=len(tasks)).astype(np.float64)}
    manifest = {"tasks": tasks, "psd": {"clipped_eigenvalues": list(info.clipped_eigenvalues),
                                        "correction_norm": info.correction_norm}}
    with artifacts.write("relations", "relations", "0" * 16, manifest, root=root / "art") as tmp:
        save_file(arrays, str(tmp / "relations.safetensors"))
    rel_path = artifacts.find("relations", "relations", "0" * 16, root=root / "art")
    run = root / "run"
    run.mkdir(parents=True, exist_ok=True)
    t = len(tasks)
    fit = TaskMixtureMRF(0.0).fit(s)
    budget = TaskMixtureMRF(0.0, budget=3).fit(s)
    methods = {
        "taskpgm": {"method": "taskpgm", "weights": dict(zip(tasks, fit.weights_.tolist(),
                                                              strict=True))},
        "taskpgm-k3": {"method": "taskpgm-k3",
                       "weights": dict(zip(tasks, budget.weights_.tolist(), strict=True)),
                       "selected": [tasks[j] for j in budget.selected_ or []],
                       "greedy_gains": budget.greedy_gains_},
        "uniform": {"method": "uniform", "weights": dict.fromkeys(tasks, 1 / t)},
        "size": {"method": "size", "weights": dict(zip(
            tasks, baseline_weights("size", [100 * (i + 1) for i in range(t)]).tolist(),
            strict=True))},
    }
    path = [{"rho": float(r), "weights": TaskMixtureMRF(float(r)).fit(s).weights_.tolist()}
            for r in np.linspace(0, 2 / t, 9)]
    (run / "methods.json").write_text(json.dumps({"tasks": tasks, "methods": methods,
                                                  "rho_path": path, "chosen": "taskpgm"}))
    (run / "weights.json").write_text(json.dumps({
        "method": "taskpgm", "rho": 0.0, "budget": None, "energy": fit.energy_,
        "kkt_residual": fit.kkt_residual_, "fingerprints": {"relations": "0" * 16},
        "weights": methods["taskpgm"]["weights"]}))
    (run / "counts.json").write_text(json.dumps({task: 10 * (i + 1)
                                                 for i, task in enumerate(tasks)}))
    (run / "config.yaml").write_text(yaml.safe_dump({"base": {"model": "smollm2-135m"},
                                                     "mixture": {"token_budget": 60000},
                                                     "mrf": {"rho": 0.0, "budget": None}}))
    stages = {"tasks": {"done": True, "seconds": 1.0, "probe": dict.fromkeys(tasks, 100)},
              "relations": {"done": True, "seconds": 0.5, "fingerprint": "0" * 16,
                            "path": str(rel_path)},
              "evaluation": {"done": False}}
    (run / "stages.json").write_text(json.dumps(stages))
    rng = np.random.default_rng(0)
    rows = [{"method": m, "seed": seed, "task": task, "split": "eval",
             "accuracy": float(rng.uniform(0.3, 0.9)), "logprob": float(rng.uniform(-2, -0.5))}
            for m in methods for seed in range(3) for task in tasks]
    # the untrained base model is scored once, as seed 0 (as the evaluation stage does)
    rows += [{"method": "base", "seed": 0, "task": task, "split": "eval",
              "accuracy": float(rng.uniform(0.2, 0.5)), "logprob": float(rng.uniform(-3, -1))}
             for task in tasks]
    lines = ["method,seed,task,split,accuracy,logprob"] + [
        f"{r['method']},{r['seed']},\"{r['task']}\",{r['split']},{r['accuracy']},{r['logprob']}"
        for r in rows]
    (run / "evaluation.csv").write_text("\n".join(lines) + "\n")
    (run / "evaluation_summary.json").write_text(json.dumps(summarize(rows)))
    return run
