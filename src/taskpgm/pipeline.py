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
    """One run: its config and directory, the inputs the tasks stage loads, and what each
    later stage produced (filled stage by stage; a stage reads only what came before)."""

    config: RunConfig
    run_dir: Path
    stream: TextIO
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the inputs (the tasks stage)
    base: Any = None
    tasks: Tasks = field(default_factory=dict)
    heldout: Tasks = field(default_factory=dict)
    mmlu: Tasks = field(default_factory=dict)
    targets: Tasks = field(default_factory=dict)
    mean_tokens: dict[str, float] = field(default_factory=dict)
    caps: Any = None
    compute: dict[str, Any] = field(default_factory=dict)
    probes: dict[str, Any] = field(default_factory=dict)
    tracker: Any = None
    # the products
    experts: dict[str, Any] = field(default_factory=dict)
    signals: Any = None
    relations: Any = None
    weights: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> Path | None:
        return self.config.artifact_root

    @property
    def files(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def train(self) -> dict[str, Any]:
        return {t: s.train for t, s in self.tasks.items()}

    def say(self, text: str) -> None:
        say(text, self.stream)

    def record(self, stage: str, **info: Any) -> None:
        self.stages[stage] = {"done": True, **info}
        self.files.write_stages(self.stages)


def default_run_dir(config_path: Path) -> Path:
    return Path("runs") / config_path.stem


def placements_of(config: RunConfig, stream: TextIO | None) -> dict[str, Any]:
    """Each stage's device and precision: this machine's, with the experts' and the
    scoring's decided by a cluster worker on the Ray backend (the one place that asks)."""
    from taskpgm.device import run_placements

    compute = run_placements(config, stream=stream)  # a device that is not there fails here
    if config.execution.backend == "ray":
        from taskpgm import cluster

        compute.update({k: v for k, v in cluster.placements(config, stream=stream).items()
                        if k in ("experts", "signals")})
    return compute


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
    from taskpgm.device import peak_memory_gib, reset_peak_memory

    state = RunState(config, Path(run_dir), stream or sys.stderr)
    t_run = time.monotonic()
    last = STAGES.index(until) + 1
    for i, (name, step) in enumerate(STEPS[:last], start=1):
        elapsed = format_seconds(time.monotonic() - t_run)
        state.say(f"[stage {i}/{last}: {name}]" + (f" (elapsed {elapsed})" if i > 1 else ""))
        where = state.compute[name].device if name in state.compute else None
        if where is not None:
            reset_peak_memory(where)
        t0 = time.monotonic()
        info = step(state)
        peak = peak_memory_gib(where) if where is not None else None
        if peak is not None:
            info["peak_gpu_gib"] = round(peak, 3)
        state.record(name, seconds=round(time.monotonic() - t0, 2), **info)
    state.say(f"run finished in {format_seconds(time.monotonic() - t_run)}")
    return state


def trained_experts(config: RunConfig, base: Any, train: dict[str, Any], placement: Any,
                    stream: TextIO | None, only: Sequence[str] | None = None
                    ) -> dict[str, Any]:
    """Every expert of ``train`` (or those ``only`` names), trained where missing: on the
    Ray backend as cluster jobs first (the executor), then found here; else here."""
    from taskpgm.experts import ensure_experts

    if config.execution.backend == "ray" and only is None:  # `--only` is one job itself
        from taskpgm import cluster

        cluster.train_experts(config, base, train, placement, root=config.artifact_root,
                              stream=stream)
    return ensure_experts(base, train, config.experts, root=config.artifact_root,
                          stream=stream, placement=placement, only=only)


def scored_signals(config: RunConfig, base: Any, experts: dict[str, Any],
                   probes: dict[str, Any], placement: Any, stream: TextIO | None) -> Any:
    """The probe set scored by the base and every expert: on the Ray backend by scoring
    actors first (the executor), then assembled here; else here."""
    from taskpgm.signals import ensure_signals

    if config.execution.backend == "ray":
        from taskpgm import cluster

        cluster.score_models(config, base, experts, probes, placement,
                             root=config.artifact_root, stream=stream)
    return ensure_signals(base, experts, probes, config.signals, root=config.artifact_root,
                          stream=stream, placement=placement)


# ---------------------------------------------------------------------- the stages
def tasks_step(state: RunState) -> dict[str, Any]:
    """Load every input and check the whole config before any work (nothing is written
    into the run directory before these checks pass)."""
    from taskpgm.device import summary_line
    from taskpgm.models import Base
    from taskpgm.signals import probes_of
    from taskpgm.tracking import Tracker
    from taskpgm.workload import plan_of, plan_run

    config = state.config
    state.compute = placements_of(config, state.stream)
    state.say(summary_line(state.compute))
    state.base = Base.from_config(config.base)  # a bad model fails here
    state.tasks, state.heldout, state.mmlu = load_all_tasks(config)
    state.targets = load_targets(config, state.tasks)
    state.mean_tokens = mean_train_tokens(state.base.load().tokenizer, state.tasks,
                                          config.experts.max_length)
    state.caps = preflight(config, state.tasks, state.mean_tokens)
    state.files.write_config(config_mod.dump(config))
    planned = plan_run(config, loaded={"base": state.base, "tasks": state.tasks,
                                       "heldout": state.heldout, "mmlu": state.mmlu,
                                       "mean_tokens": state.mean_tokens,
                                       "placements": state.compute})
    state.say(planned["summary"])  # what `taskpgm plan` prints
    work = plan_of(config, state.tasks, state.heldout, state.mmlu, state.mean_tokens)
    track = config.tracking
    state.tracker = Tracker(track.report_to, Path(track.log_dir) if track.log_dir
                            else state.files.tracking_dir)
    # every probe example, or signals.probe_total of them
    state.probes = probes_of(config, {**state.tasks, **state.targets})
    return {"tasks": list(state.tasks), "train": {t: len(s.train) for t, s in state.tasks.items()},
            "probe": {t: len(s.probe) for t, s in state.tasks.items()},
            "mean_tokens": state.mean_tokens, "workload": work.as_dict()}


def experts_step(state: RunState) -> dict[str, Any]:
    """One LoRA expert per task (the expensive part; resumable; on Ray as cluster jobs)."""
    placement = state.compute["experts"]
    state.experts = trained_experts(state.config, state.base, state.train, placement,
                                    state.stream)
    for t, e in state.experts.items():
        state.tracker.training_file("experts", t, Path(e.path) / "training_log.json")
    return {"compute": placement.as_dict(),
            "fingerprints": {t: e.fingerprint for t, e in state.experts.items()},
            "paths": {t: str(e.path) for t, e in state.experts.items()}}


def signals_step(state: RunState) -> dict[str, Any]:
    """The base and every expert scored on the probe set (on Ray by scoring actors)."""
    placement = state.compute["signals"]
    state.signals = scored_signals(state.config, state.base, state.experts, state.probes,
                                   placement, state.stream)
    return {"compute": placement.as_dict(),
            "fingerprint": str(state.signals.manifest.get("fingerprint")),
            "path": str(state.signals.path)}


def relations_step(state: RunState) -> dict[str, Any]:
    from taskpgm.relations_stage import ensure_relations
    from taskpgm.signals import probe_set

    probe = probe_set(state.probes)
    rel = ensure_relations(state.signals, list(state.tasks), state.config.relations,
                           correct_sets=[ex.correct for ex in probe],
                           targets=list(state.targets), root=state.root, stream=state.stream)
    state.relations = rel
    return {"fingerprint": rel.fingerprint, "path": str(rel.path), "psd": rel.info.get("psd")}


def weights_step(state: RunState) -> dict[str, Any]:
    """Every method's weights under the same caps; the chosen one into weights.json."""
    from taskpgm.weights import ensure_weights

    config, names = state.config, list(state.tasks)
    ev = config.evaluation
    data = ensure_weights(
        state.relations, config.mrf, caps=state.caps,
        train_sizes=[len(state.tasks[t].train) for t in names], baselines=ev.baselines,
        temperature=ev.temperature, rho_path_points=config.report.rho_path_points,
        root=state.root, stream=state.stream)
    state.weights = data
    chosen = data["methods"][data["chosen"]]
    state.files.write_weights({
        **{k: v for k, v in chosen.items() if k != "weights"},
        "fingerprints": {"relations": state.relations.fingerprint,
                         "weights": data["fingerprint"]},
        "weights": chosen["weights"]})
    state.files.write_methods(data)
    state.tracker.weights(data["chosen"], chosen["weights"])
    from taskpgm import artifacts  # the artifact's folder: its manifest holds method_cpu_s

    path = artifacts.path_of("weights", "weights", data["fingerprint"], root=state.root)
    return {"fingerprint": data["fingerprint"], "chosen": data["chosen"], "path": str(path)}


def mixture_step(state: RunState) -> dict[str, Any]:
    return write_mixture(state)


def evaluation_step(state: RunState) -> dict[str, Any]:
    if not state.config.evaluation.enabled:
        return {"skipped": True}
    info = evaluate(state)
    return {"compute": {**state.compute["evaluation"].as_dict(),
                        "training": state.compute["experts"].as_dict()}, **info}


def report_step(state: RunState) -> dict[str, Any]:
    if not state.config.report.enabled:
        return {"skipped": True}
    from taskpgm.report import render

    return {"path": str(render(state.run_dir))}


#: The stages in order, each a function of the run so far that returns its stages.json
#: entry. A new stage is one function here (and its name in ``rundir.STAGES``).
Step = Callable[[RunState], dict[str, Any]]
STEPS: tuple[tuple[str, Step], ...] = (
    ("tasks", tasks_step), ("experts", experts_step), ("signals", signals_step),
    ("relations", relations_step), ("weights", weights_step), ("mixture", mixture_step),
    ("evaluation", evaluation_step), ("report", report_step))
assert tuple(name for name, _ in STEPS) == STAGES


def write_mixture(state: RunState) -> dict[str, Any]:
    """The chosen method's counts, mixed set and exports, into the run directory."""
    from taskpgm.core.mixture import example_counts, sample_mixture
    from taskpgm.evaluation import sampler_id
    from taskpgm.exports import write_exports
    from taskpgm.tasks.schema import examples_fingerprint

    tasks, mean_tokens, weights = state.tasks, state.mean_tokens, state.weights
    tokenizer = state.base.load().tokenizer
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


def evaluate(state: RunState) -> dict[str, Any]:
    """Train and score every method at every seed; the evaluation files of the run."""
    from taskpgm.core.summary import evaluation_markdown, summarize
    from taskpgm.evaluation import Recipe, ensure_evaluation

    cfg, base, tasks, weights = state.config, state.base, state.tasks, state.weights
    heldout, mmlu, mean_tokens = state.heldout, state.mmlu, state.mean_tokens
    compute, tracker = state.compute, state.tracker
    methods = {m: d["weights"] for m, d in weights["methods"].items()}
    rows = ensure_evaluation(
        base, methods, {t: tasks[t].train for t in tasks}, mean_tokens,
        eval_set(cfg, tasks, heldout, mmlu), Recipe.from_config(cfg, compute),
        seeds=cfg.evaluation.seeds, root=state.root, stream=state.stream, tracker=tracker)
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
    """The experts of a config, trained where missing (``taskpgm experts --only``, and
    what ``signals --only`` scores), without a run directory: (base, tasks, experts)."""
    from taskpgm import device as device_mod
    from taskpgm.inputs import load_tasks
    from taskpgm.models import Base

    base = Base.from_config(config.base)
    tasks = load_tasks(config)
    if config.execution.backend == "ray" and only is None:
        placement = placements_of(config, stream)["experts"]
    else:  # one job's share, on this machine
        placement = device_mod.resolve(config.base.device, config.experts.precision,
                                       stream=stream)
    say(device_mod.summary_line({"experts": placement}), stream)
    found = trained_experts(config, base, {t: s.train for t, s in tasks.items()}, placement,
                            stream, only)
    return base, tasks, found


def signals_of(config: RunConfig, *, stream: TextIO | None = None) -> Any:
    """The signals of a config (:class:`taskpgm.readers.Signals`), with everything before
    them ensured, without a run directory (``benchmarks/experts_table.py``)."""
    from taskpgm import device as device_mod
    from taskpgm.signals import probes_of

    base, tasks, found = experts_of(config, stream=stream)
    placement = placements_of(config, stream)["signals"]
    say(device_mod.summary_line({"signals": placement}), stream)
    return scored_signals(config, base, found, probes_of(config, tasks), placement, stream)
