"""The relations stage: a signals artifact in, ``relations.safetensors`` out.

From what every model predicts on the probe set (:mod:`taskpgm.predictions`) it
computes, with :mod:`taskpgm.core.relations`, the raw JSD over base + experts, the
displacement cosine, the transfer PMI, the affinity S, every model's probe
accuracy and each task's probe count; the manifest holds the task order and
what the PSD projection changed. A pure function of its parent and settings:
seconds, no model. See docs/design.md, "Relations".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from safetensors.numpy import save_file

from taskpgm import artifacts
from taskpgm.bootstrap import relations_with_replicates
from taskpgm.config import RelationsConfig
from taskpgm.core.relations import (
    AffinityInfo,
    affinity,
    displacement_cosine,
    jsd_matrix,
    transfer_pmi,
)
from taskpgm.jsd_torch import default_pairs
from taskpgm.predictions import ProbePredictions, from_signals
from taskpgm.progress import say
from taskpgm.readers import RELATIONS_FILE, Relations, Signals, open_relations

STAGE = "relations"
VERSION = 4  # 2: probe_n, each task's probe count; 3: pmi_sequence, targets, bootstrap draws;
# 4: the block bootstrap (bootstrap_blocks), its draws from the main pass; the probe
# examples' gold log-likelihoods (probe_loglik, probe_tokens, probe_task) for MixMin
#: The ``relations`` defaults of VERSION, frozen: a setting equal to its entry here stays
#: out of the fingerprint. When a default in config.RelationsConfig changes, bump VERSION
#: and refresh this snapshot (tests/test_fingerprints.py fails until both are done).
DEFAULTS: dict[str, Any] = {
    "alpha": 0.5, "kernel": "displacement", "pmi_form": "symmetric", "normalization": "length",
    "bootstrap": 200, "bootstrap_blocks": 64, "precision": "float64",
}


def fingerprint_of(signals_fp: str, tasks: Sequence[str], cfg: RelationsConfig,
                   targets: Sequence[str] = ()) -> str:
    """The relations artifact's fingerprint: its signals, the task order (and the target
    tasks, when there are any), the settings."""
    parents = [signals_fp, *tasks, *(["targets", *targets] if targets else [])]
    return artifacts.fingerprint(STAGE, VERSION, parents, cfg.model_dump(), DEFAULTS)


def target_transfer(pred: ProbePredictions, n_pool: int) -> np.ndarray:
    """(T, K): expert i's gain on target k, mean over probe(k) of (ℓ_{i+1} − ℓ_0) / n."""
    gain = (pred.loglik[1:] - pred.loglik[0]) / pred.tokens
    k = len(pred.tasks) - n_pool
    return np.stack([gain[:, pred.task_of == n_pool + j].mean(axis=1) for j in range(k)],
                    axis=1)


def relation_arrays(pred: Any, tasks: list[str], cfg: RelationsConfig,
                    jsd: np.ndarray | None = None
                    ) -> tuple[dict[str, np.ndarray], AffinityInfo]:
    """Every relation matrix of the pool from its probe predictions (no bootstrap); ``jsd``
    when the mean-JSD matrix is already computed (by the bootstrap's pass)."""
    if jsd is None:
        jsd = jsd_matrix(pred.rows, weights=pred.row_weights,
                         pairs=default_pairs(precision=cfg.precision))
    pmi = transfer_pmi(pred.loglik, pred.tokens, pred.task_of)
    s, info = affinity(jsd, pmi, cfg.alpha, kernel=cfg.kernel, pmi_form=cfg.pmi_form,
                       names=tasks, return_info=True)
    assert isinstance(info, AffinityInfo)
    arrays = {
        "jsd": jsd, "displacement": displacement_cosine(jsd, names=tasks),
        "pmi": pmi, "affinity": s, "accuracy": pred.accuracy(),
        "probe_n": np.bincount(pred.task_of, minlength=len(tasks)).astype(np.float64),
        # the paper's setting works on sequence log-likelihoods: n(x) = 1
        "pmi_sequence": transfer_pmi(pred.loglik, np.ones_like(pred.tokens), pred.task_of),
    }
    return arrays, info


def relations_of(pred: Any, tasks: list[str], cfg: RelationsConfig
                 ) -> tuple[dict[str, np.ndarray], AffinityInfo]:
    """The relation matrices and, with ``cfg.bootstrap``, the block-bootstrap draws: one pass
    over the midpoints for both (:func:`taskpgm.bootstrap.relations_with_replicates`)."""
    if not cfg.bootstrap:
        return relation_arrays(pred, tasks, cfg)
    jsd, boot = relations_with_replicates(
        pred, alpha=cfg.alpha, kernel=cfg.kernel, pmi_form=cfg.pmi_form, draws=cfg.bootstrap,
        blocks=cfg.bootstrap_blocks, pairs=default_pairs(precision=cfg.precision))
    arrays, info = relation_arrays(pred, tasks, cfg, jsd=jsd)
    arrays.update(boot)
    return arrays, info


def ensure_relations(
    signals: Signals,
    tasks: Sequence[str],
    cfg: RelationsConfig,
    *,
    correct_sets: Sequence[Sequence[int]] | None = None,
    targets: Sequence[str] = (),
    root: Path | None = None,
    stream: TextIO | None = None,
) -> Relations:
    """Compute (or reuse) the relations of a signals artifact.

    With ``targets`` (``mrf.target``: tasks without an expert whose probe examples
    were scored too) it also stores ``target_pmi`` (T, K), each expert's transfer
    onto each target; every other relation uses the pool's examples only.
    """
    signals_fp = str(signals.manifest.get("fingerprint", signals.path.name))
    fp = fingerprint_of(signals_fp, tasks, cfg, targets)

    def compute(tmp: Path) -> dict[str, Any]:
        say(f"relations: {len(tasks)} tasks from {signals.path.name}", stream)
        pred = from_signals(signals, tasks, normalization=cfg.normalization,
                            correct_sets=correct_sets, targets=targets)
        # every model's gold log-likelihood per probe example (targets' included): MixMin's
        # input (weights.mixmin), (T + 1) x N numbers
        extra: dict[str, np.ndarray] = {"probe_loglik": pred.loglik, "probe_tokens": pred.tokens,
                                        "probe_task": pred.task_of.astype(np.float64)}
        if targets:
            extra["target_pmi"] = target_transfer(pred, len(tasks))
            pred = pred.only_tasks(len(tasks))
        arrays, info = relations_of(pred, list(tasks), cfg)
        arrays.update(extra)
        save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()},
                  str(tmp / RELATIONS_FILE))
        return {
            "tasks": list(tasks), "targets": list(targets), "models": pred.models,
            "signals": signals_fp, "config": cfg.model_dump(),
            "psd": {"clipped_eigenvalues": list(info.clipped_eigenvalues),
                    "correction_norm": info.correction_norm, "pmi_scale": info.pmi_scale,
                    "jsd_scale": info.jsd_scale},
            "probe_examples": int(pred.task_of.size),
        }

    found, computed = artifacts.ensure(STAGE, STAGE, fp, compute, root=root, stream=stream)
    if not computed:
        say(f"relations: reusing {found}", stream)
    return open_relations(found)
