"""Does the mixture matter, and does TaskPGM's mixture beat the usual ones?

Run (hours on 2 CPU cores; resumable: every training is a fingerprinted
artifact, so a rerun continues where a killed one stopped):

    .venv/bin/python benchmarks/mixture_quality.py configs/mixture-quality.yaml \\
        --out runs/mixture-quality --doc docs/results.md

Design (the pipeline issue):
1. a pool where uniform sampling is a poor default: a family of closely related
   arithmetic subtasks beside unrelated tasks (the config's ``tasks``);
2. a token budget where tasks sit near their learning threshold, picked by a
   short sweep over ``--budgets`` with the uniform mixture (seed 0): the
   smallest budget whose mean eval accuracy is at least halfway from the base
   model to the largest budget's — the sweep is reported;
3. ``--seeds`` seeds per method (mixture draw, LoRA initialization and data
   order), paired across methods; intervals are over seeds;
4. a positive control: a deliberately skewed mixture that gives half the
   budget to the task with the most headroom (expert accuracy minus the
   uniform mixture's at the chosen budget). If it cannot be told apart from
   uniform, the benchmark cannot tell methods apart either, and says so.

Beside the configured TaskPGM it trains TaskPGM under the other ``mrf.untrusted``
policies (what happens to tasks whose expert did not learn), named
``taskpgm(keep)`` and so on, so the default can be chosen by this table.
The sweep scores the eval splits only (it picks a budget); the comparison also
scores the held-out tasks and MMLU subjects.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from taskpgm import config as config_mod
from taskpgm.evaluation import ensure_evaluation, markdown_table, summarize
from taskpgm.pipeline import eval_scoring, eval_set, load_all_tasks, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/mixture-quality"))
    parser.add_argument("--doc", type=Path, default=None, help="write the results as Markdown")
    parser.add_argument("--budgets", type=int, nargs="+", default=[8000, 24000, 72000])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    cfg = config_mod.load(args.config)
    state = run(cfg, args.out, until="weights")  # this script runs the evaluation itself
    weights = json.loads((args.out / "methods.json").read_text())
    stage_info = json.loads((args.out / "stages.json").read_text())
    mean_tokens: dict[str, float] = stage_info["tasks"]["mean_tokens"]
    tasks, heldout, mmlu = load_all_tasks(cfg)
    names = list(tasks)
    from taskpgm.models import Base

    base = Base(cfg.base.model, trust_remote_code=cfg.base.trust_remote_code,
                device=cfg.base.device)
    evalset = eval_set(cfg, tasks, heldout, mmlu)
    train = {t: tasks[t].train for t in names}
    common = dict(train=train, mean_tokens=mean_tokens, max_repeat=cfg.mrf.max_repeat,
                  experts_cfg=cfg.experts, scoring=eval_scoring(cfg),
                  normalization=cfg.relations.normalization, root=state.root)
    uniform = weights["methods"]["uniform"]["weights"]

    # 1. the budget sweep (uniform mixture, seed 0)
    sweep = []
    sweep_set = eval_set(cfg, tasks, {}, {})  # the eval splits only: the sweep picks a budget
    for budget in args.budgets:
        rows = ensure_evaluation(base, {"uniform": uniform}, seeds=[0], token_budget=budget,
                                 evalset=sweep_set, **common)  # type: ignore[arg-type]
        acc = [r["accuracy"] for r in rows if r["method"] == "uniform" and r["split"] == "eval"]
        base_acc = [r["accuracy"] for r in rows if r["method"] == "base" and r["split"] == "eval"]
        per_task = {r["task"]: r["accuracy"] for r in rows
                    if r["method"] == "uniform" and r["split"] == "eval"}
        sweep.append({"budget": budget, "uniform": float(np.mean(acc)),
                      "base": float(np.mean(base_acc)), "per_task": per_task})
        print(f"sweep: budget {budget}: uniform {np.mean(acc):.3f} (base {np.mean(base_acc):.3f})",
              flush=True)
    target = sweep[0]["base"] + 0.5 * (sweep[-1]["uniform"] - sweep[0]["base"])
    chosen = next(s for s in sweep if s["uniform"] >= target)
    budget = int(chosen["budget"])

    # 2. the positive control: half the budget to the task with the most headroom
    relations = json.loads((args.out / "stages.json").read_text())["relations"]
    from taskpgm.readers import open_relations
    from taskpgm.weights import solve

    rel = open_relations(Path(relations["path"]))
    expert_acc = {t: float(rel.arrays["accuracy"][i + 1, i]) for i, t in enumerate(rel.tasks)}
    headroom = {t: expert_acc[t] - chosen["per_task"][t] for t in names}
    focus = max(headroom, key=lambda t: headroom[t])
    skew = {t: (0.5 if t == focus else 0.5 / (len(names) - 1)) for t in names}
    methods = {m: d["weights"] for m, d in weights["methods"].items()}
    caps = np.asarray(weights["caps"], dtype=np.float64)
    for policy in ("uniform", "exclude", "keep"):
        if policy != cfg.mrf.untrusted:
            methods[f"taskpgm({policy})"] = solve(
                rel, cfg.mrf.rho, budget=None, utility_kind=cfg.mrf.utility, caps=caps,
                untrusted=policy)["weights"]
    methods[f"skewed({focus})"] = skew

    # 3. every method, paired seeds
    seeds = list(range(args.seeds))
    rows = ensure_evaluation(base, methods, seeds=seeds, token_budget=budget, evalset=evalset,
                             **common)  # type: ignore[arg-type]
    summary = summarize(rows)
    variants = [m for m in methods if m.startswith("taskpgm(")]
    result = {"budget": budget, "sweep": sweep, "focus": focus, "headroom": headroom,
              "seeds": seeds, "summary": summary, "rows": rows,
              "policies": paired_against(rows, "taskpgm", variants),
              "weights": {m: methods[m] for m in methods},
              "minutes": round((time.monotonic() - t0) / 60, 1)}
    (args.out / "mixture_quality.json").write_text(json.dumps(result, indent=1))
    text = render(result, args)
    print(text)
    if args.doc is not None:
        args.doc.write_text(text + kept_reading(args.doc))
    return 0


READING = "## What came out"


def kept_reading(doc: Path) -> str:
    """The hand-written reading of an earlier run (from ``READING`` on), kept on rewrite."""
    old = doc.read_text() if doc.is_file() else ""
    at = old.find(READING)
    return "\n" + old[at:] if at >= 0 else ""


def paired_against(rows: list[dict[str, Any]], reference: str, others: list[str]
                   ) -> list[dict[str, Any]]:
    """Per split, the reference minus each other method, paired by seed, with its interval."""
    out = []
    for other in others:
        out += [{"split": e["split"], "other": other, "diff": e["diff"], "lo": e["diff_lo"],
                 "hi": e["diff_hi"]}
                for e in summarize(rows, reference=other) if e["method"] == reference]
    return sorted(out, key=lambda d: (d["split"], others.index(d["other"])))


def render(result: dict[str, Any], args: argparse.Namespace) -> str:
    lines = ["# Mixture quality: TaskPGM against the usual mixtures", "",
             "Produced by:", "", "```",
             f".venv/bin/python benchmarks/mixture_quality.py {args.config} --out {args.out} "
             f"--doc {args.doc} --budgets {' '.join(map(str, args.budgets))} "
             f"--seeds {args.seeds}", "```", "",
             f"Wall time of the run that finished it: {result['minutes']} min (resumed runs "
             "count only their own time).", "", "## Budget sweep (uniform mixture, seed 0)", "",
             "| token budget | uniform: mean eval accuracy | base model |", "|---|---|---|"]
    for s in result["sweep"]:
        lines.append(f"| {s['budget']:,} | {s['uniform']:.3f} | {s['base']:.3f} |")
    lines += ["", f"Chosen budget: {result['budget']:,} tokens (the smallest whose uniform "
              "accuracy is at least halfway from the base model to the largest budget's).", "",
              f"Positive control: half the budget to `{result['focus']}`, the task with the most "
              "headroom (its expert's probe accuracy minus the uniform mixture's eval accuracy).",
              "", "## Results", "", markdown_table(result["summary"]), "",
              "## The configured TaskPGM against its other `mrf.untrusted` policies", "",
              "Paired by seed: the configured method minus the other, 95% interval over seeds.",
              "", "| split | other policy | taskpgm minus other | 95% CI |", "|---|---|---|---|",
              *(f"| {d['split']} | {d['other']} | {d['diff']:+.3f} | [{d['lo']:+.3f}, "
                f"{d['hi']:+.3f}] |" for d in result["policies"]), "",
              "## Weights", "", "| method | " + " | ".join(next(iter(result["weights"].values())))
              + " |", "|---|" + "---|" * len(next(iter(result["weights"].values())))]
    for method, w in result["weights"].items():
        lines.append(f"| {method} | " + " | ".join(f"{v:.3f}" for v in w.values()) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
