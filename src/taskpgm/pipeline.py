"""``taskpgm run``: every stage, from the task collection to the report.

Stages (docs/design.md): tasks → experts → signals → relations → weights →
mixture → evaluation → report. Each writes a fingerprinted artifact in the
cache (shared across runs); this module checks the whole config before any
work, runs the stages in order with progress, and fills the run directory
(:class:`taskpgm.rundir.RunDir` names its files).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from taskpgm import config as config_mod
from taskpgm.config import RunConfig
from taskpgm.errors import ConfigError
from taskpgm.inputs import (
    Tasks,
    eval_scoring,
    eval_set,
    load_all_tasks,
    load_targets,
    mean_train_tokens,
    preflight,
)
from taskpgm.progress import format_seconds, say
from taskpgm.rundir import STAGES, RunDir


@dataclass
class RunState:
    """What a run has produced so far (filled stage by stage)."""

    config: RunConfig
    run_dir: Path
    stream: TextIO
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def root(self) -> Path | None:
        return self.config.artifact_root

    @property
    def files(self) -> RunDir:
        return RunDir(self.run_dir)

    def say(self, text: str) -> None:
        say(text, self.stream)

    def record(self, stage: str, **info: Any) -> None:
        self.stages[stage] = {"done": True, **info}
        self.files.write_stages(self.stages)


def default_run_dir(config_path: Path) -> Path:
    return Path("runs") / config_path.stem


def run(
    config: RunConfig,
    run_dir: Path,
    *,
    stream: TextIO | None = None,
    until: str = "report",
) -> RunState:
    """Run the stages up to and including ``until`` and fill ``run_dir``.

    Finished stage artifacts are reused, so ``until="mixture"`` after a full run
    only rewrites the mixture (``taskpgm mix``).
    """
    if until not in STAGES:
        raise ConfigError(f"unknown stage {until!r}; stages: {', '.join(STAGES)}")
    from taskpgm.device import peak_memory_gib, reset_peak_memory, run_placements, summary_line
    from taskpgm.experts import ensure_experts
    from taskpgm.models import Base
    from taskpgm.relations_stage import ensure_relations
    from taskpgm.signals import ensure_signals, probe_set, probes_of
    from taskpgm.weights import ensure_weights

    out = stream or sys.stderr
    state = RunState(config, Path(run_dir), out)
    t_run = time.monotonic()

    last = STAGES.index(until) + 1

    def stage(i: int, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if i > last:
            return
        elapsed = format_seconds(time.monotonic() - t_run)
        state.say(f"[stage {i}/{last}: {name}] (elapsed {elapsed})")
        where = compute[name].device if name in compute else None
        if where is not None:
            reset_peak_memory(where)
        t0 = time.monotonic()
        info = fn()
        peak = peak_memory_gib(where) if where is not None else None
        if peak is not None:
            info["peak_gpu_gib"] = round(peak, 3)
        state.record(name, seconds=round(time.monotonic() - t0, 2), **info)

    # 1. tasks (and the base model's tokenizer), checked with everything else before any work
    t_tasks = time.monotonic()
    state.say(f"[stage 1/{STAGES.index(until) + 1}: tasks]")
    compute = run_placements(config, stream=out)  # a device that is not there fails here
    on_ray = config.execution.backend == "ray"
    if on_ray:  # experts and scoring run where the cluster's workers decide
        from taskpgm import cluster

        compute.update({k: v for k, v in cluster.placements(config, stream=out).items()
                        if k in ("experts", "signals")})
    state.say(summary_line(compute))
    base = Base.from_config(config.base)  # a bad model fails here
    tasks, heldout, mmlu = load_all_tasks(config)
    targets = load_targets(config, tasks)
    names = list(tasks)
    tokenizer = base.load().tokenizer
    mean_tokens = mean_train_tokens(tokenizer, tasks, config.experts.max_length)
    caps = preflight(config, tasks, mean_tokens)
    # nothing is written into the run directory before the checks above pass
    state.files.write_config(config_mod.dump(config))
    from taskpgm.workload import plan_of, plan_run

    planned = plan_run(config, loaded={"base": base, "tasks": tasks, "heldout": heldout,
                                       "mmlu": mmlu, "mean_tokens": mean_tokens,
                                       "placements": compute})
    state.say(planned["summary"])  # what `taskpgm plan` prints
    work = plan_of(config, tasks, heldout, mmlu, mean_tokens)
    state.record("tasks", seconds=round(time.monotonic() - t_tasks, 2), tasks=names,
                 train={t: len(s.train) for t, s in tasks.items()},
                 probe={t: len(s.probe) for t, s in tasks.items()}, mean_tokens=mean_tokens,
                 workload=work.as_dict())

    from taskpgm.tracking import Tracker

    track = config.tracking
    tracker = Tracker(track.report_to, Path(track.log_dir) if track.log_dir
                      else state.files.tracking_dir)

    probes = probes_of(config, {**tasks, **targets})  # all, or signals.probe_total of them

    # 2-3. experts and signals (the expensive part; resumable)
    experts: dict[str, Any] = {}

    def do_experts() -> dict[str, Any]:
        if on_ray:
            cluster.train_experts(config, base, {t: s.train for t, s in tasks.items()},
                                  compute["experts"], root=state.root, stream=out)
        experts.update(ensure_experts(base, {t: s.train for t, s in tasks.items()},
                                      config.experts, root=state.root, stream=out,
                                      placement=compute["experts"]))
        for t, e in experts.items():
            tracker.training_file("experts", t, Path(e.path) / "training_log.json")
        return {"compute": compute["experts"].as_dict(),
                "fingerprints": {t: e.fingerprint for t, e in experts.items()},
                "paths": {t: str(e.path) for t, e in experts.items()}}

    stage(2, "experts", do_experts)
    holder: dict[str, Any] = {}

    def do_signals() -> dict[str, Any]:
        if on_ray:
            cluster.score_models(config, base, experts, probes, compute["signals"],
                                 root=state.root, stream=out)
        sig = ensure_signals(base, experts, probes, config.signals, root=state.root,
                             stream=out, placement=compute["signals"])
        holder["signals"] = sig
        return {"compute": compute["signals"].as_dict(),
                "fingerprint": str(sig.manifest.get("fingerprint")), "path": str(sig.path)}

    stage(3, "signals", do_signals)

    def do_relations() -> dict[str, Any]:
        probe = probe_set(probes)
        rel = ensure_relations(holder["signals"], names, config.relations,
                               correct_sets=[ex.correct for ex in probe], targets=list(targets),
                               root=state.root, stream=out)
        holder["relations"] = rel
        return {"fingerprint": rel.fingerprint, "path": str(rel.path),
                "psd": rel.info.get("psd")}

    stage(4, "relations", do_relations)

    def do_weights() -> dict[str, Any]:
        ev = config.evaluation
        data = ensure_weights(
            holder["relations"], config.mrf, caps=caps,
            train_sizes=[len(tasks[t].train) for t in names], baselines=ev.baselines,
            temperature=ev.temperature, rho_path_points=config.report.rho_path_points,
            root=state.root, stream=out)
        holder["weights"] = data
        chosen = data["methods"][data["chosen"]]
        state.files.write_weights({
            **{k: v for k, v in chosen.items() if k != "weights"},
            "fingerprints": {"relations": holder["relations"].fingerprint,
                             "weights": data["fingerprint"]},
            "weights": chosen["weights"]})
        state.files.write_methods(data)
        tracker.weights(data["chosen"], chosen["weights"])
        return {"fingerprint": data["fingerprint"], "chosen": data["chosen"]}

    stage(5, "weights", do_weights)

    def do_mixture() -> dict[str, Any]:
        return write_mixture(state, tasks, mean_tokens, holder["weights"], tokenizer)

    stage(6, "mixture", do_mixture)

    def do_evaluation() -> dict[str, Any]:
        if not config.evaluation.enabled:
            return {"skipped": True}
        info = evaluate(state, base, tasks, heldout, mmlu, mean_tokens, holder["weights"],
                        compute, tracker)
        return {"compute": {**compute["evaluation"].as_dict(),
                            "training": compute["experts"].as_dict()}, **info}

    stage(7, "evaluation", do_evaluation)

    def do_report() -> dict[str, Any]:
        if not config.report.enabled:
            return {"skipped": True}
        from taskpgm.report import render

        path = render(state.run_dir)
        return {"path": str(path)}

    stage(8, "report", do_report)
    state.say(f"run finished in {format_seconds(time.monotonic() - t_run)}")
    return state


def write_mixture(state: RunState, tasks: Tasks, mean_tokens: dict[str, float],
                  weights: dict[str, Any], tokenizer: Any = None) -> dict[str, Any]:
    """The chosen method's counts, mixed set and exports, into the run directory."""
    from taskpgm.evaluation import sampler_id
    from taskpgm.exports import write_exports
    from taskpgm.mixture import example_counts, sample_mixture
    from taskpgm.tasks.schema import examples_fingerprint

    cfg = state.config
    names = list(tasks)
    chosen = weights["methods"][weights["chosen"]]["weights"]
    w = np.array([chosen[t] for t in names])
    counts = example_counts(w / w.sum(), [len(tasks[t].train) for t in names],
                            [mean_tokens[t] for t in names], cfg.mixture.token_budget,
                            cfg.mrf.max_repeat)
    count_map = {t: int(c) for t, c in zip(names, counts, strict=True)}
    train = {t: tasks[t].train for t in names}
    mixed = sample_mixture(train, count_map, cfg.mixture.seed, cfg.mixture.sampler)
    paths = write_exports(state.run_dir, tasks=names, weights=list(w / w.sum()),
                          mean_tokens=[mean_tokens[t] for t in names], train=train, mixed=mixed,
                          tokenizer=tokenizer, tokenizer_name=str(cfg.base.model),
                          max_length=cfg.experts.max_length, seed=cfg.mixture.seed)
    state.files.write_counts(count_map)
    state.say(f"mixture: {len(mixed)} examples, "
              f"{sum(count_map[t] * mean_tokens[t] for t in names):,.0f} tokens")
    return {"examples": len(mixed), "sampler": sampler_id(cfg.mixture.sampler),
            "fingerprint": examples_fingerprint(mixed),
            "paths": {k: str(v) for k, v in paths.items()}}


def evaluate(state: RunState, base: Any, tasks: Tasks, heldout: Tasks,
             mmlu: Tasks, mean_tokens: dict[str, float], weights: dict[str, Any],
             compute: dict[str, Any], tracker: Any = None) -> dict[str, Any]:
    from taskpgm.evaluation import ensure_evaluation
    from taskpgm.summary import evaluation_markdown, summarize

    cfg = state.config
    methods = {m: d["weights"] for m, d in weights["methods"].items()}
    rows = ensure_evaluation(
        base, methods, {t: tasks[t].train for t in tasks}, mean_tokens,
        eval_set(cfg, tasks, heldout, mmlu),
        seeds=cfg.evaluation.seeds, token_budget=cfg.mixture.token_budget,
        max_repeat=cfg.mrf.max_repeat, experts_cfg=cfg.experts, scoring=eval_scoring(cfg),
        normalization=cfg.relations.normalization, root=state.root, stream=state.stream,
        training=compute["experts"], scoring_placement=compute["evaluation"], tracker=tracker,
        sampler=cfg.mixture.sampler)
    summary = summarize(rows)
    logprob = {(e["method"], e["split"]): e for e in summarize(rows, metric="logprob")}
    for e in summary:  # each accuracy entry carries the log-probability's beside it
        lp = logprob[(e["method"], e["split"])]
        e["logprob"] = {k: lp[k] for k in ("mean", "lo", "hi", "diff", "diff_lo", "diff_hi")
                        if k in lp}
    state.files.write_evaluation(rows, summary, evaluation_markdown(rows, summary=summary))
    return {"rows": len(rows)}


def experts_of(config: RunConfig, *, stream: TextIO | None = None,
               only: Sequence[str] | None = None) -> tuple[Any, Tasks, dict[str, Any]]:
    """The experts of a config, trained where missing (``taskpgm experts``, and what
    ``signals --only`` scores): the base, the tasks, {task: expert}. On the Ray backend
    the missing ones train as cluster jobs first, unless ``only`` names this job's share."""
    from taskpgm import device as device_mod
    from taskpgm.experts import ensure_experts
    from taskpgm.inputs import load_tasks
    from taskpgm.models import Base

    base = Base.from_config(config.base)
    tasks = load_tasks(config)
    train = {t: s.train for t, s in tasks.items()}
    if config.execution.backend == "ray" and only is None:  # `--only` is one job itself
        from taskpgm import cluster

        placement = cluster.placements(config, stream=stream)["experts"]
        say(device_mod.summary_line({"experts": placement}), stream)
        cluster.train_experts(config, base, train, placement, root=config.artifact_root,
                              stream=stream)
    else:
        placement = device_mod.resolve(config.base.device, config.experts.precision,
                                       stream=stream)
        say(device_mod.summary_line({"experts": placement}), stream)
    found = ensure_experts(base, train, config.experts, root=config.artifact_root,
                           stream=stream, placement=placement, only=only)
    return base, tasks, found


def signals_of(config: RunConfig, *, stream: TextIO | None = None) -> Any:
    """The signals of a config (:class:`taskpgm.readers.Signals`), with everything before
    them ensured: what ``taskpgm signals`` computes, without a run directory."""
    from taskpgm import device as device_mod
    from taskpgm.signals import ensure_signals, probes_of

    base, tasks, found = experts_of(config, stream=stream)
    probes = probes_of(config, tasks)
    if config.execution.backend == "ray":
        from taskpgm import cluster

        placement = cluster.placements(config, stream=stream)["signals"]
        say(device_mod.summary_line({"signals": placement}), stream)
        cluster.score_models(config, base, found, probes, placement,
                             root=config.artifact_root, stream=stream)
    else:
        placement = device_mod.resolve(config.base.device, config.signals.precision,
                                       stream=stream)
        say(device_mod.summary_line({"signals": placement}), stream)
    return ensure_signals(base, found, probes, config.signals, root=config.artifact_root,
                          stream=stream, placement=placement)
