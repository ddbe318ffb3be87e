"""The work a run plans, from its config and its tasks: what sets its running time.

With T tasks, s_t optimizer steps of batch B for task t's expert (from ``steps``
or ``epochs``), m_t the mean tokens of one of its training examples, P_t its
probe examples, M methods (TaskPGM, its budgeted variant, the baselines), R
seeds, N the token budget and E the examples scored after each training:

    expert tokens        = Σ_t s_t · B · m_t
    probe scorings       = (T + 1) · Σ_t P_t              (the base and every expert)
    evaluation training  = M · R trainings of N tokens     (coinciding mixtures train once)
    evaluation scorings  = (M · R + 1) · E                 (the base model scored once)

Counts are upper bounds where methods coincide. The demo config's are held to a
budget by the tests, so the demo cannot grow past its time target unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from taskpgm.config import RunConfig
from taskpgm.inputs import Tasks, eval_set, load_all_tasks, mean_train_tokens


@dataclass(frozen=True)
class Workload:
    """Planned work of a run (see the module docstring for each formula)."""

    experts: int
    expert_steps: int
    expert_tokens: float
    probe_scorings: int
    evaluation_trainings: int
    evaluation_training_tokens: int
    evaluation_scorings: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def methods_of(config: RunConfig) -> list[str]:
    """The methods an evaluation trains on: TaskPGM (and budgeted), then the baselines."""
    names = ["taskpgm"]
    if config.mrf.budget is not None:
        names.append(f"taskpgm-k{config.mrf.budget}")
    return names + list(config.evaluation.baselines)


def plan(config: RunConfig, train_sizes: Mapping[str, int], probe_sizes: Mapping[str, int],
         mean_tokens: Mapping[str, float], eval_examples: int) -> Workload:
    """The workload of ``config`` on tasks of these sizes.

    Args:
        train_sizes, probe_sizes: each task's train and probe split sizes.
        mean_tokens: mean tokens (prompt + answer) of a training example of each task.
        eval_examples: examples scored after each evaluation training.
    """
    from taskpgm.trainer import schedule

    ex = config.experts
    steps = {t: schedule(n, ex)[0] for t, n in train_sizes.items()}
    imported = set(ex.import_)
    trained = [t for t in train_sizes if t not in imported]
    ev = config.evaluation
    trainings = len(methods_of(config)) * len(ev.seeds) if ev.enabled else 0
    return Workload(
        experts=len(trained),
        expert_steps=sum(steps[t] for t in trained),
        expert_tokens=sum(steps[t] * ex.batch_size * mean_tokens[t] for t in trained),
        probe_scorings=(len(train_sizes) + 1) * sum(probe_sizes.values()),
        evaluation_trainings=trainings,
        evaluation_training_tokens=trainings * config.mixture.token_budget,
        evaluation_scorings=(trainings + 1) * eval_examples if ev.enabled else 0,
    )


#: Share of the matmul peak that training and scoring reach (bench_precision.py measured
#: 47-72% on the project's 2-core machine); an estimate, not a promise.
EFFICIENCY = 0.5


def model_flops(config_json: Mapping[str, Any]) -> float:
    """Non-embedding parameters N of a decoder (attention with grouped KV heads, gated MLP)."""
    h = float(config_json.get("hidden_size", 0))
    layers = float(config_json.get("num_hidden_layers", 0))
    inter = float(config_json.get("intermediate_size", 4 * h))
    heads = float(config_json.get("num_attention_heads", 1)) or 1.0
    kv = float(config_json.get("num_key_value_heads", heads))
    return layers * (2 * h * h + 2 * h * h * kv / heads + 3 * h * inter)


def estimate_seconds(work: Workload, *, params: float, adapted: float,
                     flops_per_s: Mapping[str, float], probe_tokens: float, eval_tokens: float
                     ) -> dict[str, float]:
    """Seconds per part: training costs 2N(1 + f) FLOPs a token (forward, and backward
    through the adapted fraction f of the layers), scoring 2N, at EFFICIENCY of the peak
    of each part's precision (``flops_per_s``: experts, signals, evaluation)."""
    def per(part: str, flops_per_token: float) -> float:
        return flops_per_token / (EFFICIENCY * flops_per_s[part])

    train = 2 * params * (1 + adapted)
    score = 2 * params
    return {"experts": work.expert_tokens * per("experts", train),
            "signals": work.probe_scorings * probe_tokens * per("signals", score),
            "evaluation": work.evaluation_training_tokens * per("experts", train)
            + work.evaluation_scorings * eval_tokens * per("evaluation", score)}


def plan_of(config: RunConfig, tasks: Tasks, heldout: Tasks, mmlu: Tasks,
            mean_tokens: Mapping[str, float]) -> Workload:
    """The run's :class:`Workload` from its loaded tasks."""
    from taskpgm.signals import probes_of

    evaluated = len(eval_set(config, tasks, heldout, mmlu).examples())
    return plan(config, {t: len(s.train) for t, s in tasks.items()},
                {t: len(v) for t, v in probes_of(config, tasks).items()}, mean_tokens,
                evaluated)


def plan_run(config: RunConfig, *, loaded: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What ``taskpgm run`` would do on ``config`` (``taskpgm plan``): loads the tasks and
    the tokenizer only, trains and scores nothing. ``loaded``: the pipeline's own base,
    tasks, heldout, mmlu, mean_tokens and placements, so ``run`` plans without loading
    anything twice."""
    import json as json_mod

    import numpy as np
    from transformers import AutoTokenizer

    from taskpgm import artifacts
    from taskpgm import device as device_mod
    from taskpgm.experts import STAGE, fingerprint_of
    from taskpgm.models import Base

    if loaded is None:
        base = Base.from_config(config.base)
        tasks, heldout, mmlu = load_all_tasks(config)
        tokenizer = AutoTokenizer.from_pretrained(
            str(base.path), trust_remote_code=config.base.trust_remote_code)
        mean_tokens = mean_train_tokens(tokenizer, tasks, config.experts.max_length)
        with open(os.devnull, "w") as quiet:
            placements = device_mod.run_placements(config, stream=quiet)
    else:
        base, tasks, heldout, mmlu = (loaded["base"], loaded["tasks"], loaded["heldout"],
                                      loaded["mmlu"])
        mean_tokens, placements = loaded["mean_tokens"], loaded["placements"]
    work = plan_of(config, tasks, heldout, mmlu, mean_tokens)
    root = config.artifact_root
    cached = [t for t, s in tasks.items() if artifacts.find(
        STAGE, t, fingerprint_of(base.fingerprint, t, s.train, config.experts,
                                 placements["experts"]), root=root) is not None]
    model_cfg = json_mod.loads((base.path / "config.json").read_text())
    params = model_flops(model_cfg)
    layers = float(model_cfg.get("num_hidden_layers", 1)) or 1.0
    adapted = min(1.0, float(config.experts.layers or layers) / layers)
    probe = device_mod.cached_probe(device_mod.cpu_info())
    flops = {part: 2 * device_mod.PROBE_SIZE ** 3 / float(
                 probe.get(f"{placements[part].precision}_s") or probe["fp32_s"])
             for part in ("experts", "signals", "evaluation")}
    on_cpu = all(p.device == "cpu" for p in placements.values())
    probe_tokens = float(np.mean(list(mean_tokens.values())))
    estimate = (estimate_seconds(work, params=params, adapted=adapted, flops_per_s=flops,
                                 probe_tokens=probe_tokens, eval_tokens=probe_tokens)
                if on_cpu else {})
    if estimate and cached:  # finished experts cost nothing
        done_tokens = sum(mean_tokens[t] for t in cached) / max(sum(mean_tokens.values()), 1e-9)
        estimate["experts"] *= 1 - done_tokens
    basis = ("this machine's measured matmul peak ("
             + ", ".join(f"{k} {placements[k].precision} {v / 1e9:.0f}" for k, v in flops.items())
             + f" GFLOP/s) x {EFFICIENCY}; N = {params / 1e6:.1f}M non-embedding parameters"
             if estimate else "no estimate off the CPU (the matmul probe measures the CPU)")
    busy = float(probe.get("load_per_cpu") or 0.0)
    if estimate and busy > device_mod.BUSY:
        basis += (f"; the peak was measured while the CPUs were busy (load {busy:.1f} per "
                  "CPU), so the estimate runs long; a run on a quiet machine measures again")
    cluster_info: dict[str, Any] | None = None
    if config.execution.backend == "ray":
        cluster_info = on_cluster(config, estimate, work, len(tasks) - len(cached))
        if estimate and cluster_info.get("slots"):
            basis += (f"; on the Ray cluster: {cluster_info['slots']} jobs at once of "
                      f"{config.execution.cpus_per_job:g} CPU, each taken as "
                      f"{cluster_info['job_speed']:.2g}x this machine")
    info = {"config": config.tasks.model_dump(mode="json")["names"], "tasks": len(tasks),
            "workload": work.as_dict(), "experts_cached": cached,
            "experts_to_train": [t for t in tasks if t not in cached],
            "eval_examples": len(eval_set(config, tasks, heldout, mmlu).examples()),
            "compute": {k: v.as_dict() for k, v in placements.items()},
            "estimate_seconds": estimate,
            "estimate_basis": basis}
    if cluster_info is not None:
        info["cluster"] = cluster_info
    info["summary"] = summary(info)
    return info


def on_cluster(config: RunConfig, estimate: dict[str, float], work: Workload,
               experts_left: int) -> dict[str, Any]:
    """Scale ``estimate`` (in place) to the Ray cluster of ``config.execution``: experts and
    scoring run ``slots`` jobs at once, each at ``cpus_per_job`` / this machine's cores of
    this machine's speed (nodes taken to be like this one; GPU jobs are not estimated);
    the evaluation stays on this machine. Returns what the cluster offers, or why not."""
    from taskpgm import cluster
    from taskpgm.errors import ConfigError

    try:
        with open(os.devnull, "w") as quiet:
            n = cluster.slots(cluster.connect(config.execution, stream=quiet), config.execution)
    except ConfigError as err:
        return {"slots": None, "note": f"cluster not reachable, estimate for this machine ({err})"}
    ex = config.execution
    speed = ex.cpus_per_job / max(1, len(os.sched_getaffinity(0)))
    if ex.gpus_per_job > 0:  # the matmul probe measured this CPU, not the cluster's GPUs
        estimate.clear()
    elif estimate and n:
        estimate["experts"] *= 1 / (speed * max(1, min(n, experts_left)))
        estimate["signals"] *= 1 / (speed * max(1, min(n, work.experts + 1)))
    return {"slots": n, "job_speed": speed}


def summary(info: Mapping[str, Any]) -> str:
    """The plan in a few lines (``taskpgm plan`` prints it; so does ``taskpgm run``)."""
    from taskpgm.progress import format_seconds

    w = info["workload"]
    est = info["estimate_seconds"]
    lines = [f"plan: {info['tasks']} tasks; {len(info['experts_to_train'])} experts to train "
             f"({len(info['experts_cached'])} cached), {w['expert_steps']} steps, "
             f"{w['expert_tokens']:,.0f} tokens",
             f"  probe scorings: {w['probe_scorings']:,} (base and every expert on the probe "
             "set)",
             f"  evaluation: {w['evaluation_trainings']} trainings of "
             f"{w['evaluation_training_tokens'] // max(w['evaluation_trainings'], 1):,} tokens, "
             f"{w['evaluation_scorings']:,} scorings"]
    if est:
        lines.append("  estimate: " + ", ".join(f"{k} {format_seconds(v)}"
                                                for k, v in est.items())
                     + f"; total {format_seconds(sum(est.values()))} ({info['estimate_basis']})")
    return "\n".join(lines)
