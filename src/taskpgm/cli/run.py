"""The pipeline commands: ``run``, ``experts``, ``signals``, ``status``, ``solve``, ``report``,
``mix`` and ``evaluate``, and ``config show``.

``run``, ``experts`` and ``signals`` take a run config and run the stages up to
and including theirs (``--out`` is the run directory, ``--set`` overrides the
config); the others take a run directory that ``run`` (or one of those) filled.
``config show`` prints a run config resolved (every default filled in) or, with
``--doc``, the reference of every key (docs/config.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from taskpgm import config as config_mod
from taskpgm.errors import ConfigError, NotFoundError
from taskpgm.pipeline import default_run_dir, run
from taskpgm.rundir import STAGES, RunDir

RUN_HELP = "run directory that `taskpgm run` wrote"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("run", help="run every stage: experts to mixture, evaluation, report",
                              description="Run the whole pipeline on a run config.")
    p.add_argument("config", type=Path, help="run config (YAML)")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<config>)")
    _overrides(p)
    _json(p, "print the final summary as JSON (weights, intervals, counts, export paths) "
             "instead of tables")
    p.set_defaults(handler=cmd_run)

    for name, text in (
            ("experts", "train one LoRA expert per task of a run config (finished experts are "
                        "reused; a killed run resumes from the last checkpoint)"),
            ("signals", "score the base model and every expert on the whole probe set (experts "
                        "still missing are trained first; finished work is reused)")):
        p = subparsers.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("config", type=Path, help="run config (YAML)")
        p.add_argument("--out", type=Path, default=None,
                       help="run directory (default runs/<config>)")
        p.add_argument("--only", action="append", default=None, metavar="TASK" if
                       name == "experts" else "MODEL",
                       help="just this task's expert (repeatable): one scheduler job per task, "
                            "all sharing the cache" if name == "experts" else
                            "just this model: base or a task's expert (repeatable): one "
                            "scheduler job per model, all sharing the cache")
        _overrides(p)
        p.set_defaults(handler=cmd_until, until=name)

    p = subparsers.add_parser(
        "plan", help="what a run will do and about how long, before any work",
        description="Load the tasks and print the run's work: experts to train (and which "
                    "are cached), probe scorings, evaluation trainings, with a time estimate "
                    "from this machine's measured matmul rate.")
    p.add_argument("config", type=Path, help="run config (YAML)")
    _overrides(p)
    _json(p, "print the plan as JSON")
    p.set_defaults(handler=cmd_plan)

    p = subparsers.add_parser(
        "swarm", help="train and score random mixtures: headroom above uniform, RegMix, and "
                      "whether each energy ranks mixtures the way training does",
        description="Run the stages up to the weights, then train and score N mixtures drawn "
                    "from a Dirichlet around uniform, or around mrf.anchor.prior with --around "
                    "prior (one evaluation training each, resumable) and write RUN/swarm.json: "
                    "every mixture's score, the best against uniform, RegMix's mixture (the "
                    "mean of its 128 best-predicted candidates, and their argmax; linear and "
                    "LightGBM) and the Spearman correlation of each energy, and of MixMin's "
                    "loss, with the scores.")
    p.add_argument("config", type=Path, help="run config (YAML)")
    p.add_argument("--mixtures", type=int, default=32, help="swarm size")
    p.add_argument("--concentration", type=float, default=1.0,
                   help="Dirichlet concentration a (1: uniform over the simplex)")
    p.add_argument("--around", choices=("uniform", "prior"), default="uniform",
                   help="uniform: Dirichlet(a 1), the draw the fidelity table needs; prior: "
                        "as RegMix draws, Dirichlet(s T q) around mrf.anchor.prior q with s "
                        "log-uniform on [0.1, 5] per mixture")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<config>)")
    _overrides(p)
    p.set_defaults(handler=cmd_swarm)

    p = subparsers.add_parser("status", help="list a run's stages, done or not, with fingerprints")
    p.add_argument("run_dir", type=Path, metavar="RUN", help=RUN_HELP)
    _json(p, "print the stages as JSON")
    p.set_defaults(handler=cmd_status)

    p = subparsers.add_parser("solve", help="re-solve the weights from a run's relations",
                              description="Re-solve from existing relations in seconds.")
    p.add_argument("run_dir", type=Path, metavar="RUN", help=RUN_HELP)
    p.add_argument("--rho", type=float, default=None, help="rho (default: the run's)")
    p.add_argument("--budget", type=int, default=None,
                   help="at most K tasks (default: the run's mrf.budget)")
    p.add_argument("--rho-path", action="store_true",
                   help="print the weights along rho from 0 to 2/T instead")
    p.add_argument("--anchor-path", action="store_true",
                   help="print the weights along the anchor's strength lambda instead: 0 "
                        "(the plain energy), 1e-4 .. 1e2, and infinity (the prior)")
    _json(p, "print the solution (or the rho path) as JSON")
    p.set_defaults(handler=cmd_solve)

    p = subparsers.add_parser("report", help="render RUN/report.html again from the artifacts")
    p.add_argument("run_dir", type=Path, metavar="RUN", help=RUN_HELP)
    p.set_defaults(handler=cmd_report)

    for name, until, text in (("mix", "mixture", "rewrite the mixture and exports of a run"),
                              ("evaluate", "evaluation", "train on every mixture and score")):
        p = subparsers.add_parser(name, help=text, description=text.capitalize() + ".")
        p.add_argument("run_dir", type=Path, metavar="RUN", help=RUN_HELP)
        _overrides(p)
        p.set_defaults(handler=cmd_stage, until=until)

    p = subparsers.add_parser(
        "config", help="a run config with every default filled in, or the reference of every key",
        description="Run config help. `taskpgm config show --doc` prints the reference of every "
                    "key (section, type, default, what it trades off: docs/config.md); "
                    "`taskpgm config show CONFIG` prints CONFIG resolved, every default filled "
                    "in.")
    sub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("show", help="print a run config resolved, or with --doc every key's help",
                       description="Print CONFIG (default: an empty config) with its --set "
                                   "overrides applied and every default filled in, as YAML; or, "
                                   "with --doc, the Markdown reference of every key.")
    p.add_argument("config", type=Path, nargs="?", default=None,
                   help="run config (YAML); without it, the defaults")
    _overrides(p)
    p.add_argument("--doc", action="store_true",
                   help="print the reference of every key (section, type, default, "
                        "description) as Markdown instead; docs/config.md is its output")
    p.set_defaults(handler=cmd_config_show)


def _json(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--json", action="store_true", help=text)


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set mrf.rho=0.02 (repeatable)")


def print_weights(run_dir: Path) -> None:
    files = RunDir(run_dir)
    weights = files.read_weights()
    if weights is None:
        return
    counts = files.read_counts()
    print(f"\nweights ({weights['method']}, rho={weights['rho']}, "
          f"KKT residual {weights['kkt_residual']:.1e}):")
    width = max(len(t) for t in weights["weights"])
    for task, w in sorted(weights["weights"].items(), key=lambda kv: -kv[1]):
        extra = f"  {counts[task]:6d} examples" if task in counts else ""
        print(f"  {task:<{width}}  {w:7.4f}{extra}")


def print_paths(run_dir: Path) -> None:
    print(f"\nrun directory: {run_dir}")
    files = RunDir(run_dir)
    for label, path in (("weights", files.file(RunDir.WEIGHTS)),
                        ("mixture", files.mixture_dir / "train.jsonl"),
                        ("exports", files.exports_dir),
                        ("evaluation", files.file(RunDir.EVALUATION_MD)),
                        ("report", files.report_path)):
        if path.exists():
            print(f"  {label:<11} {path}")


def print_evaluation(run_dir: Path) -> None:
    text = RunDir(run_dir).read_evaluation_markdown()
    if text is not None:  # everything but the title: the seed note and every metric's table
        print("\n" + "\n".join(text.splitlines()[2:]))


def cmd_config_show(args: argparse.Namespace) -> int:
    """``taskpgm config show [CONFIG] [--doc]``: the resolved config, or the key reference."""
    if args.doc:
        if args.config is not None or args.overrides:
            raise ConfigError("config show --doc prints the reference of every key, which no "
                              "config changes: drop CONFIG and --set, or drop --doc to see "
                              "the config resolved")
        print(config_mod.config_reference(), end="")
        return 0
    cfg = (config_mod.load(args.config, args.overrides) if args.config is not None
           else config_mod.parse("", source="--set", overrides=args.overrides))
    print(yaml.safe_dump(config_mod.dump(cfg), sort_keys=False, allow_unicode=True), end="")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config, args.overrides)
    out = args.out or default_run_dir(args.config)
    run(cfg, out)
    if args.json:
        from taskpgm.api import load_run

        print(json.dumps(load_run(out).as_dict(), indent=1))
        return 0
    print_weights(out)
    print_evaluation(out)
    print_paths(out)
    return 0


def _top3(weights: dict[str, float]) -> str:
    """The three largest weights, ``"task 0.412, task 0.301, task 0.102"``."""
    top = sorted(weights.items(), key=lambda kv: -kv[1])[:3]
    return ", ".join(f"{t} {w:.3f}" for t, w in top)


def cmd_swarm(args: argparse.Namespace) -> int:
    """``taskpgm swarm CONFIG --mixtures N``: the swarm, RegMix, Olmix and the fidelity
    table."""
    from taskpgm.swarm import run_swarm

    if args.mixtures < 2:
        raise ConfigError(f"--mixtures must be at least 2 (a regression needs data), got "
                          f"{args.mixtures}")
    cfg = config_mod.load(args.config, args.overrides)
    out = args.out or default_run_dir(args.config)
    result = run_swarm(cfg, out, mixtures=args.mixtures, concentration=args.concentration,
                       around=args.around)
    print(f"uniform {result['uniform']:.3f}; best of {args.mixtures} mixtures "
          f"{result['best']['score']:.3f} ({result['best']['minus_uniform']:+.3f})")
    for name, fits in (("regmix", result["regmix"]), ("regmix-argmax", result["regmix_argmax"])):
        for kind, fit in fits.items():
            print(f"{name} {kind}: predicted {fit['predicted']:.3f}; {_top3(fit['weights'])}")
    fit = result["olmix"]
    if "skipped" in fit:
        print(f"olmix: skipped: {fit['skipped']}")
    else:
        print(f"olmix (lambda {fit['strength']:g}, gap {fit['certificate']['gap']:.1e}): "
              f"predicted loss {fit['predicted_loss']:.3f}; {_top3(fit['weights'])}")
    for row in result["fidelity"]:
        print(f"fidelity {row['energy']:<9} rho={row['rho']:<6.3g} Spearman "
              f"{row['spearman']:+.2f} [{row['lo']:+.2f}, {row['hi']:+.2f}]")
    print(f"swarm: {RunDir(out).file(RunDir.SWARM)}")
    return 0


def cmd_until(args: argparse.Namespace) -> int:
    """``taskpgm experts`` / ``signals``: the stages up to this one; print what it made."""
    from taskpgm import artifacts

    cfg = config_mod.load(args.config, args.overrides)
    if args.only:
        return _only(cfg, args.until, args.only)
    out = args.out or default_run_dir(args.config)
    state = run(cfg, out, until=args.until)
    info = state.stages[args.until]
    if args.until == "experts":
        for task, path in info["paths"].items():
            source = artifacts.read_manifest(Path(path)).get("source", "trained")
            print(f"{task}\t{source}\t{path}")
    else:
        print(info["path"])
    return 0


def _only(cfg: config_mod.RunConfig, until: str, only: list[str]) -> int:
    """``experts --only TASK`` / ``signals --only MODEL``: one job's share, into the cache."""
    from taskpgm import device as device_mod
    from taskpgm.pipeline import experts_of
    from taskpgm.signals import probes_of, score_only

    if until == "experts":
        _, _, found = experts_of(cfg, only=only)
        for task, expert in found.items():
            print(f"{task}\t{expert.source}\t{expert.path}")
        return 0
    base, tasks, found = experts_of(cfg)
    root = cfg.artifact_root
    placement = device_mod.resolve(cfg.base.device, cfg.signals.precision)
    signals = score_only(base, found, probes_of(cfg, tasks), cfg.signals, only, root=root,
                         placement=placement)
    print(signals.path if signals is not None else
          f"scored {', '.join(only)}; the signals are assembled when every model is scored")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """``taskpgm plan CONFIG``: the work and an estimate of its time, before any work."""
    from taskpgm.workload import plan_run

    cfg = config_mod.load(args.config, args.overrides)
    info = plan_run(cfg)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(info["summary"])
    return 0


def _run_config(run_dir: Path, overrides: list[str]) -> config_mod.RunConfig:
    files = RunDir(run_dir)
    if not files.is_run():
        raise NotFoundError(f"{run_dir} is not a run directory (no {RunDir.CONFIG}); "
                            "start one with `taskpgm run CONFIG`")
    return config_mod.load(files.config_path, overrides)


def cmd_stage(args: argparse.Namespace) -> int:
    cfg = _run_config(args.run_dir, args.overrides)
    run(cfg, args.run_dir, until=args.until)
    print_weights(args.run_dir)
    if args.until == "evaluation":
        print_evaluation(args.run_dir)
    print_paths(args.run_dir)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from taskpgm.report import render

    _run_config(args.run_dir, [])
    print(f"report: {render(args.run_dir)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    _run_config(args.run_dir, [])
    stages = RunDir(args.run_dir).read_stages()
    if args.json:
        print(json.dumps({"run_dir": str(args.run_dir), "stages": {
            name: {"done": bool(stages.get(name, {}).get("done", False)),
                   **{k: v for k, v in stages.get(name, {}).items()
                      if k in ("seconds", "fingerprint", "fingerprints", "skipped", "path")}}
            for name in STAGES}}, indent=1))
        return 0
    print(f"run {args.run_dir}")
    for name in STAGES:
        info: dict[str, Any] = dict(stages.get(name, {}))
        done = info.get("done", False)
        fp = info.get("fingerprint") or ""
        if not fp and isinstance(info.get("fingerprints"), dict):
            fp = ", ".join(f"{t}={f}" for t, f in info["fingerprints"].items())
        extra = " (skipped)" if info.get("skipped") else ""
        took = f" {info['seconds']:.1f} s" if "seconds" in info else ""
        print(f"  {name:<11} {'done' if done else 'not done':<9}{took}{extra}  {fp}")
    return 0


def cmd_solve(args: argparse.Namespace) -> int:
    from taskpgm.readers import open_relations
    from taskpgm.weights import anchor_path, rho_path, solve, with_intervals

    cfg = _run_config(args.run_dir, [])
    files = RunDir(args.run_dir)
    rel_path = files.read_stages().get("relations", {}).get("path")
    methods = files.read_methods()
    if not rel_path or not Path(rel_path).is_dir() or "caps" not in methods:
        raise NotFoundError(f"{args.run_dir} has no finished relations and weights stages; "
                            "run `taskpgm run` on it first")
    relations = open_relations(Path(rel_path))
    caps = np.asarray(methods["caps"], dtype=np.float64)
    rho = cfg.mrf.rho if args.rho is None else args.rho
    tasks = relations.tasks
    width = max(len(t) for t in tasks)
    prior = np.asarray(methods.get("prior", {}).get("weights", np.full(len(tasks),
                                                                          1.0 / len(tasks))))
    if args.anchor_path:
        path = anchor_path(relations, cfg.mrf, caps, prior, cfg.report.rho_path_points, rho)
        if args.json:
            print(json.dumps({"anchor_path": [{"strength": p["strength"], "kl": p["kl"],
                                               "weights": dict(zip(tasks, p["weights"],
                                                                   strict=True))}
                                              for p in path]}, indent=1))
            return 0
        print(f"anchor path ({cfg.mrf.energy}, rho = {rho:g}, prior "
              f"{cfg.mrf.anchor.prior}): {len(path)} strengths from 0 (the plain energy) to "
              "the prior (lambda = inf)")
        print(f"  {'lambda':>8}  {'KL':>8}  " + "  ".join(f"{t[:10]:>10}" for t in tasks))
        for p in path:
            lam = "inf" if p["strength"] is None else f"{p['strength']:.2g}"
            print(f"  {lam:>8}  {p['kl']:8.4f}  " + "  ".join(f"{w:10.4f}" for w in p["weights"]))
        return 0
    if args.rho_path and cfg.mrf.energy == "mixmin":
        raise ConfigError("mrf.energy: mixmin has no rho, so no rho path; try --anchor-path")
    if args.rho_path:  # the path methods.json holds (the same grid, around this rho)
        path = rho_path(relations, cfg.mrf, caps, cfg.report.rho_path_points, rho, prior=prior)
        if args.json:
            print(json.dumps({"rho_path": [{"rho": p["rho"], "weights": dict(
                zip(tasks, p["weights"], strict=True))} for p in path]}, indent=1))
            return 0
        print(f"rho path: {len(path)} points from 0 to {path[-1]['rho']:g} (max(2/T, 2 rho)), "
              f"the chosen rho = {rho:g} within it")
        print(f"  {'rho':>8}  " + "  ".join(f"{t[:10]:>10}" for t in tasks))
        for p in path:
            mark = "  <- rho" if abs(p["rho"] - rho) < 1e-9 else ""
            print(f"  {p['rho']:8.4f}  " + "  ".join(f"{w:10.4f}" for w in p["weights"])
                  + mark)
        return 0
    budget = args.budget if args.budget is not None else cfg.mrf.budget
    settings: dict[str, Any] = {"budget": budget, "utility_kind": cfg.mrf.utility, "caps": caps,
                                "untrusted": cfg.mrf.untrusted, "energy": cfg.mrf.energy,
                                "anchor": cfg.mrf.anchor.strength, "prior": prior}
    result = with_intervals(relations, solve(relations, rho, **settings), rho, **settings)
    if args.json:
        print(json.dumps(result, indent=1, default=float))
        return 0
    what = ("MixMin loss" if cfg.mrf.energy == "mixmin" else
            f"rho={rho:g}: energy") + (f" + {cfg.mrf.anchor.strength:g} KL"
                                       if cfg.mrf.anchor.strength else "")
    print(f"{result['method']} {what} {result.get('objective', result['energy']):.6f}, "
          f"{'gap' if 'gap' in result['certificate'] else 'KKT residual'} "
          f"{result['kkt_residual']:.1e}")
    if result["untrusted_tasks"]:
        print(f"experts that did not learn ({cfg.mrf.untrusted}): "
              + ", ".join(result["untrusted_tasks"]))
    spans = result.get("intervals", {}).get("tasks", {})
    if spans:
        print(f"  {'':<{width}}  weight   5-95% over {result['intervals']['draws']} bootstrap "
              "draws   P(weight > 0)")
    for task, w in sorted(result["weights"].items(), key=lambda kv: -kv[1]):
        span = spans.get(task)
        extra = (f"   [{span['lo']:.4f}, {span['hi']:.4f}]   {span['p_positive']:.2f}"
                 if span else "")
        print(f"  {task:<{width}}  {w:.4f}{extra}")
    if result.get("intervals", {}).get("dropped"):
        print("dropped (no weight in >= 90% of draws): "
              + ", ".join(result["intervals"]["dropped"]))
    if budget is not None:
        print("greedy order: " + ", ".join(result["selected"]))
    return 0
