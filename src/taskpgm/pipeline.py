"""``taskpgm run``: every stage, from the task collection to the report.

Stages (docs/design.md): tasks → experts → signals → relations → weights →
mixture → evaluation → report. Each writes a fingerprinted artifact in the
cache (shared across runs); this module checks the whole config before any
work, runs the stages in order with progress, and fills the run directory:

    RUN/config.yaml      the resolved config
    RUN/stages.json      each stage: done or not, fingerprint, artifact path, seconds
    RUN/weights.json     the chosen method's weights and certificate
    RUN/methods.json     every method's weights (TaskPGM, budgeted, baselines) and the rho path
    RUN/counts.json      examples of each task in the mixture
    RUN/mixture/, RUN/exports/   see :mod:`taskpgm.exports`
    RUN/evaluation.csv, RUN/evaluation.md
    RUN/report.html
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import yaml

from taskpgm import config as config_mod
from taskpgm.atomic import write_json, write_text
from taskpgm.config import RunConfig
from taskpgm.errors import ConfigError, DataError, TaskPGMError
from taskpgm.progress import format_seconds, say

STAGES = ("tasks", "experts", "signals", "relations", "weights", "mixture", "evaluation",
          "report")


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

    def say(self, text: str) -> None:
        say(text, self.stream)

    def record(self, stage: str, **info: Any) -> None:
        self.stages[stage] = {"done": True, **info}
        write_json(self.run_dir / "stages.json",
                   {s: self.stages.get(s, {"done": False}) for s in STAGES})


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
    base = Base(config.base.model, trust_remote_code=config.base.trust_remote_code,
                threads=config.base.threads, device=config.base.device)  # a bad model fails here
    tasks, heldout, mmlu = load_all_tasks(config)
    targets = load_targets(config, tasks)
    names = list(tasks)
    tokenizer = base.load().tokenizer
    mean_tokens = mean_train_tokens(tokenizer, tasks, config.experts.max_length)
    caps = preflight(config, tasks, mean_tokens)
    # nothing is written into the run directory before the checks above pass
    write_text(state.run_dir / "config.yaml",
               yaml.safe_dump(config_mod.dump(config), sort_keys=False))
    from taskpgm.workload import plan_run

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
                      else state.run_dir / "tracking")

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
        write_json(state.run_dir / "weights.json", {
            **{k: v for k, v in chosen.items() if k != "weights"},
            "fingerprints": {"relations": holder["relations"].fingerprint,
                             "weights": data["fingerprint"]},
            "weights": chosen["weights"]})
        write_json(state.run_dir / "methods.json", data)
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


def mean_train_tokens(tokenizer: Any, tasks: dict[str, Any], max_length: int
                      ) -> dict[str, float]:
    """Mean tokens (prompt + training target) of a training example of each task.

    Raises:
        DataError: tasks left with no training example (every one of them listed), which
            no expert could be trained on.
    """
    from taskpgm.trainer import tokenize_training

    empty = [f"{t} ({s.examples} examples: {len(s.probe)} probe, {len(s.eval)} eval, "
             f"{s.duplicates_dropped} duplicates, {s.leaked_dropped} whose prompts are in "
             "other tasks' probe or eval splits)" for t, s in tasks.items() if not s.train]
    if empty:
        raise DataError(
            f"{len(empty)} task(s) have no training examples left: "
            + "; ".join(empty[:10]) + ("; ..." if len(empty) > 10 else "")
            + ". Give them more distinct examples, lower tasks.splits.probe and eval, or "
            "drop them")
    return {t: float(np.mean([len(ids) for ids, _ in tokenize_training(
                tokenizer, splits.train, max_length)]))
            for t, splits in tasks.items()}


def plan_of(config: RunConfig, tasks: dict[str, Any], heldout: dict[str, Any],
            mmlu: dict[str, Any], mean_tokens: dict[str, float]) -> Any:
    """The run's :class:`taskpgm.workload.Workload`."""
    from taskpgm.signals import probes_of
    from taskpgm.workload import plan

    evaluated = len(eval_set(config, tasks, heldout, mmlu).examples())
    return plan(config, {t: len(s.train) for t, s in tasks.items()},
                {t: len(v) for t, v in probes_of(config, tasks).items()}, mean_tokens,
                evaluated)


def read_stages(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The run's ``stages.json`` (empty when the run never started)."""
    try:
        data = json.loads((run_dir / "stages.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def load_all_tasks(config: RunConfig) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    from taskpgm.experts import load_tasks
    from taskpgm.tasks import load_collection

    tasks = load_tasks(config)
    heldout: dict[str, Any] = {}
    mmlu: dict[str, Any] = {}
    ev = config.evaluation
    if ev.enabled and ev.heldout:
        loaded = load_collection(list(ev.heldout), options=config.tasks.splits)
        heldout = {s.name: s for s in loaded}
    if ev.enabled and ev.mmlu:
        loaded = load_collection(list(ev.mmlu), options=config.tasks.splits)
        mmlu = {s.name: s for s in loaded}
    clash = sorted((set(heldout) | set(mmlu)) & set(tasks))
    if clash:
        raise ConfigError(f"evaluation.heldout/mmlu name tasks that are in the mixture: {clash}; "
                          "a held-out task must not be trained on — remove it from one list")
    return tasks, heldout, mmlu


def load_targets(config: RunConfig, tasks: dict[str, Any]) -> dict[str, Any]:
    """The ``mrf.target`` tasks with their splits; each must have probe examples and must
    not be a pool task (checked by name here, by spec when the config is read)."""
    if not config.mrf.target:
        return {}
    from taskpgm.tasks import load_collection

    loaded = {s.name: s for s in load_collection(list(config.mrf.target),
                                                  options=config.tasks.splits)}
    problems = [f"mrf.target: {name} is also a pool task; a target is not trained on"
                for name in loaded if name in tasks]
    problems += [f"mrf.target: {name} has no probe examples; give it more examples or a "
                 "larger tasks.splits.probe" for name, s in loaded.items() if not s.probe]
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the run config:\n  "
                          + "\n  ".join(problems))
    return loaded


def preflight(config: RunConfig, tasks: dict[str, Any], mean_tokens: dict[str, float]
              ) -> np.ndarray:
    """Every constraint problem at once, before any training. Returns the weight caps."""
    from taskpgm.mixture import caps_from_budget

    names = list(tasks)
    problems = []
    k = config.mrf.budget
    if k is not None and k > len(names):
        problems.append(f"mrf.budget: k={k} is larger than the number of tasks ({len(names)}); "
                        "lower it or leave it unset")
    caps = np.full(len(names), np.inf)
    try:
        caps = caps_from_budget([len(tasks[t].train) for t in names],
                                [mean_tokens[t] for t in names],
                                config.mixture.token_budget, config.mrf.max_repeat)
    except TaskPGMError as err:
        problems.append(f"mixture.token_budget: {err}")
    if k is not None and k <= len(names) and np.isfinite(caps).all():
        top = float(np.sort(caps)[::-1][:k].sum())
        if top < 1.0:
            problems.append(
                f"mrf.budget: the {k} tasks with the most training data hold only "
                f"{top:.0%} of mixture.token_budget within mrf.max_repeat; raise k, "
                "mrf.max_repeat, or lower the token budget")
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the run config:\n  "
                          + "\n  ".join(problems))
    return caps


def write_mixture(state: RunState, tasks: dict[str, Any], mean_tokens: dict[str, float],
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
    write_json(state.run_dir / "counts.json", count_map)
    state.say(f"mixture: {len(mixed)} examples, "
              f"{sum(count_map[t] * mean_tokens[t] for t in names):,.0f} tokens")
    return {"examples": len(mixed), "sampler": sampler_id(cfg.mixture.sampler),
            "fingerprint": examples_fingerprint(mixed),
            "paths": {k: str(v) for k, v in paths.items()}}


def eval_set(config: RunConfig, tasks: dict[str, Any], heldout: dict[str, Any],
             mmlu: dict[str, Any]) -> Any:
    """The examples every trained model is scored on, at most ``evaluation.max_eval`` a task.

    ``eval``: each mixture task's eval split, or with ``evaluation.test_share`` > 0 its
    disjoint ``dev`` and ``test`` parts (:func:`dev_test`); ``heldout`` and ``mmlu``: tasks
    outside the mixture, so every split of theirs is unseen (eval first, then probe, then
    train).
    """
    from taskpgm.evaluation import EvalSet

    cap = config.evaluation.max_eval
    share = config.evaluation.test_share
    groups: dict[tuple[str, str], tuple[Any, ...]] = {}
    for name, splits in tasks.items():
        if share > 0:
            dev, test = dev_test(splits.eval[:cap], share)
            groups[("dev", name)], groups[("test", name)] = dev, test
        else:
            groups[("eval", name)] = tuple(splits.eval[:cap])
    for split, source in (("heldout", heldout), ("mmlu", mmlu)):
        for name, splits in source.items():
            groups[(split, name)] = tuple((splits.eval + splits.probe + splits.train)[:cap])
    return EvalSet(groups)


def dev_test(examples: Any, share: float) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """A task's eval examples cut once into dev and test: the round(share · n) examples with
    the smallest sha256 of their id go to test, the rest (in their order) to dev."""
    import hashlib

    n_test = round(share * len(examples))
    ranked = sorted(range(len(examples)),
                    key=lambda i: hashlib.sha256(examples[i].id.encode()).hexdigest())
    test = set(ranked[:n_test])
    return (tuple(ex for i, ex in enumerate(examples) if i not in test),
            tuple(ex for i, ex in enumerate(examples) if i in test))


def eval_scoring(config: RunConfig) -> Any:
    """How trained models are scored: the signals' settings at the evaluation's precision."""
    return config.signals.model_copy(update={"precision": config.evaluation.precision})


def evaluate(state: RunState, base: Any, tasks: dict[str, Any], heldout: dict[str, Any],
             mmlu: dict[str, Any], mean_tokens: dict[str, float], weights: dict[str, Any],
             compute: dict[str, Any], tracker: Any = None) -> dict[str, Any]:
    from taskpgm.evaluation import ensure_evaluation, evaluation_markdown, summarize

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
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["method", "seed", "task", "split", "accuracy",
                                             "logprob", "bpb"],
                            extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(state.run_dir / "evaluation.csv", buf.getvalue())
    summary = summarize(rows)
    logprob = {(e["method"], e["split"]): e for e in summarize(rows, metric="logprob")}
    for e in summary:  # each accuracy entry carries the log-probability's beside it
        lp = logprob[(e["method"], e["split"])]
        e["logprob"] = {k: lp[k] for k in ("mean", "lo", "hi", "diff", "diff_lo", "diff_hi")
                        if k in lp}
    write_json(state.run_dir / "evaluation_summary.json", summary)
    write_text(state.run_dir / "evaluation.md", evaluation_markdown(rows, summary=summary))
    return {"rows": len(rows)}
