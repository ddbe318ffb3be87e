"""The decision benchmark's tables, from its ledgers alone (no training, no model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from quality.protocol import POWER_DIFF, metric
from taskpgm import atomic
from taskpgm.core.stats import detectable, holm, mean_interval, paired_difference


def compute_of(led: dict[str, Any]) -> dict[str, float]:
    """CPU-seconds each method spent deciding its mixture (the final trainings excluded)."""
    tr = led["trainings"].values()
    swarm = sum(e["cpu_s"] for e in tr if e["phase"] == "swarm")
    pipe = float(led.get("pipeline_cpu_s", float("nan")))
    cands = sum(e["cpu_s"] for e in tr if e["phase"] == "dev" and e["method"].startswith("split"))
    out = {"uniform": 0.0, "size": 0.0, "temperature": 0.0, "family-uniform": 0.0,
           "swarm-top1": swarm, "swarm-top2": swarm, "swarm-top3": swarm, "regmix": swarm,
           "taskpgm": pipe, "reference": pipe, "split": pipe + cands}
    return out


def work_of(led: dict[str, Any]) -> dict[str, str]:
    """What each method trained and scored to decide its mixture, in words."""
    tr = led["trainings"].values()
    swarm = [e for e in tr if e["phase"] == "swarm"]
    cands = [e for e in tr if e["phase"] == "dev" and e["method"].startswith("split")]
    items = len(led.get("tasks", [])) * int(led.get("per_task", {}).get("dev") or 0)
    w = led.get("pipeline", {}).get("work")
    pgm = (f"{w['experts']} experts ({w['expert_tokens']:,.0f} tokens), "
           f"{w['probe_scorings']:,} probe scorings" if w else "experts and probe scorings")
    sw = (f"{len(swarm)} trainings x {swarm[0]['budget']:,} tokens, "
          f"{len(swarm) * items:,} dev scorings" if swarm else "the swarm")
    out = dict.fromkeys(("uniform", "size", "temperature", "family-uniform"), "none")
    out.update(dict.fromkeys(("swarm-top1", "swarm-top2", "swarm-top3", "regmix"), sw))
    out.update({"taskpgm": pgm, "reference": pgm,
                "split": f"{pgm}; {len(cands)} dev trainings to choose rho and the policy"})
    return out


def test_table(led: dict[str, Any]) -> dict[str, Any]:
    fam = led.get("families")
    by: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for e in led["trainings"].values():
        if e["phase"] == "test":
            by.setdefault(e["method"], {})[e["seed"]] = e["rows"]
    if not by:
        return {}
    methods = list(led["decisions"]["final_methods"])
    complete = sorted(set.intersection(*(set(by.get(m, {})) for m in methods)))
    out: dict[str, Any] = {"seeds": complete, "methods": {}}
    if len(complete) < 2:
        out["seeds_partial"] = {m: len(by.get(m, {})) for m in methods}
        return out
    def per_seed(m: str, field_: str, families: Any) -> list[float]:
        return [metric(by[m][s], "test", field_, families) for s in complete]
    ref = {f: per_seed("uniform", f, fam) for f in ("accuracy", "logprob")}
    best = {f: per_seed("swarm-top1", f, fam) for f in ("accuracy", "logprob")}
    tasks = led["tasks"]
    for m in methods:
        row: dict[str, Any] = {}
        for f in ("accuracy", "logprob"):
            v = per_seed(m, f, fam)
            row[f] = list(mean_interval(v))
            row[f + "_minus_uniform"] = list(paired_difference(v, ref[f]))
            row[f + "_minus_swarm"] = list(paired_difference(v, best[f]))
        if fam:
            v = per_seed(m, "accuracy", None)
            row["task_macro"] = list(mean_interval(v))
            row["task_macro_minus_uniform"] = list(paired_difference(v, per_seed(
                "uniform", "accuracy", None)))
        # per task against uniform: Holm-adjusted p-values, Bonferroni intervals
        diffs = {t: [next(r["accuracy"] for r in by[m][s] if r["task"] == t)
                     - next(r["accuracy"] for r in by["uniform"][s] if r["task"] == t)
                     for s in complete] for t in tasks}
        # no spread over seeds (float noise aside): the t-test is undefined; p = 1 as before
        pv = [float(sps.ttest_1samp(diffs[t], 0.0).pvalue) if np.ptp(diffs[t]) > 1e-9 else 1.0
              for t in tasks]
        adj = holm(pv)
        level = 1 - 0.05 / len(tasks)
        row["per_task"] = {t: {"diff": float(np.mean(diffs[t])),
                               "ci": list(mean_interval(diffs[t], level)[1:]),
                               "holm_p": adj[i]} for i, t in enumerate(tasks)}
        row["win_rate"] = float(np.mean([np.mean(diffs[t]) > 0 for t in tasks]))
        out["methods"][m] = row
    return out


def led_seeds(led: dict[str, Any]) -> set[int]:
    return {e["seed"] for e in led["trainings"].values() if e["phase"] == "test"}


def fmt3(v: Any) -> str:
    return "–" if v is None or not np.isfinite(v) else f"{v:+.3f}" if v < 0 else f"{v:.3f}"


def ci(tri: list[float], signed: bool = False) -> str:
    m, lo, hi = tri
    f = (lambda x: "–" if not np.isfinite(x) else f"{x:+.3f}") if signed else fmt3
    return f"{f(m)} [{f(lo)}, {f(hi)}]"


def machines_line(led: dict[str, Any]) -> str:
    """Which machines ran the pool's trainings, and how many each (by phase).

    A training without a ``machine`` index predates the field and ran on the first; an
    entry ``same_as`` another (the rerun's same mixture asked for under another name) is not
    a training."""
    ran: dict[int, dict[str, int]] = {}
    for e in led.get("trainings", {}).values():
        if "same_as" in e:
            continue
        by_phase = ran.setdefault(int(e.get("machine", 0)), {})
        by_phase[e["phase"]] = by_phase.get(e["phase"], 0) + 1
    parts = []
    for i, m in enumerate(led.get("machines") or [{}]):
        counts = ", ".join(f"{n} {ph}" for ph, n in sorted(ran.get(i, {}).items())) or "none"
        parts.append(f"{m.get('Model name')}, {m.get('CPU(s)')} CPUs, "
                     f"{' '.join(m.get('flags', []))}, torch {m.get('torch')} "
                     f"(trainings: {counts})")
    label = "Machine" if len(parts) == 1 else "Machines"
    return f"{label}: " + "; ".join(parts) + "."


def render(ledgers: dict[str, dict[str, Any]], command: str) -> tuple[str, dict[str, Any]]:
    md: list[str] = [f"Generated by `{command}` from the ledgers in "
                     "`benchmarks/results/mixture_quality/`."]
    js: dict[str, Any] = {"pools": {}}
    for name, led in ledgers.items():
        dec = led.get("decisions", {})
        md += ["", f"### Pool `{name}`", "",
               f"Tasks: {', '.join(led.get('tasks', []))}. Families: "
               f"{(led.get('families') and sorted(set(led['families'].values()))) or 'none'}. "
               f"Items a task: dev {led.get('per_task', {}).get('dev')}, test "
               f"{led.get('per_task', {}).get('test')}. {machines_line(led)}"]
        if not dec:
            md += ["", "Dev phase not finished. Trainings recorded so far (dev metric: "
                   f"{'macro over families' if led.get('families') else 'macro over tasks'}"
                   "):", "", "| phase | budget | method | seed | dev | CPU-s |",
                   "|---|---|---|---|---|---|"]
            for e in led["trainings"].values():
                md.append(f"| {e['phase']} | {e['budget']:,} | {e['method']} | {e['seed']} | "
                          f"{metric(e['rows'], 'dev', families=led.get('families')):.3f} | "
                          f"{e['cpu_s']:,.0f} |")
            continue
        fam = led.get("families")
        primary = ("macro accuracy over families" if fam else "macro accuracy over tasks")
        md += ["", "**Budget sweep (dev, seed 100).**", "",
               "| budget | uniform | good mixture | gap |", "|---|---|---|---|",
               *(f"| {s['budget']:,} | {s['uniform']:.3f} | {s['good']:.3f} | {s['gap']:+.3f} |"
                 for s in dec["sweep"]),
               "", f"Chosen: {dec['budget']:,} tokens (largest gap, ties to the smaller).", ""]
        p = dec["pilot"]
        n_test = max(len(led_seeds(led)), 10)
        md += [f"**Power pilot (dev, seeds {p['seeds'][0]}–{p['seeds'][-1]}).** good − uniform "
               f"per seed: {', '.join(f'{d:+.3f}' for d in p['diff'])}; paired sd "
               f"{p['sd']:.3f}; seeds for 80% power at {POWER_DIFF}: {p['needed_seeds']}. "
               f"Log-probability differences: {', '.join(f'{d:+.3f}' for d in p['logprob_diff'])} "
               f"(sd {p['logprob_sd']:.3f}). With {n_test} seeds the paired difference found "
               f"with 80% power is {detectable(p['sd'], n_test):.3f}.", ""]
        sw = dec["swarm"]
        acc = np.asarray(sw["acc"])
        md += [f"**Swarm (dev, seed 100, {sw['mixtures']} mixtures from Dirichlet("
               f"{sw['concentration']:g}·1) at {sw['budget']:,} tokens).** "
               f"Uniform {sw['uniform']:.3f}; "
               f"swarm median {np.median(acc):.3f}, best {acc.max():.3f}, "
               f"{int((acc > sw['uniform']).sum())} of {acc.size} above uniform. Top 3: "
               f"{', '.join(f'#{i} ({acc[i]:.3f})' for i in sw['top3'])}.", "",
               "**Fidelity: Spearman(−E(p), dev metric) over the swarm, 5–95% bootstrap.**", "",
               f"| energy | vs {primary} | vs gold log-probability |", "|---|---|---|",
               *(f"| {k} | {ci(list(v['acc']), True)} | {ci(list(v['logprob']), True)} |"
                 for k, v in dec["fidelity"].items()), ""]
        rg = dec["regmix"]
        md += ["**RegMix.** " + "; ".join(
            f"{k}: leave-one-out Spearman {fmt3(v['loo_spearman'])}, predicted {v['predicted']:.3f}"
            for k, v in rg.items()) + f". Used: {dec['regmix_kind']}.", "",
               "**TaskPGM candidates (dev, seeds 100–101).**", "",
               "| candidate | dev | minus uniform | gold log-prob |", "|---|---|---|---|"]
        for k, v in dec["candidates"].items():
            md.append(f"| {k} | {v['dev']:.3f} | {v['minus_uniform']:+.3f} | "
                      f"{v['dev_logprob']:.3f} |" if "dev" in v
                      else f"| {k} | {v['dropped']} | | |")
        md += ["", f"Split energy chosen on dev: `{dec['split_pick']}`.", ""]
        tt = test_table(led)
        compute = compute_of(led)
        n_done = len(tt.get("seeds", []))
        found = detectable(p["sd"], n_done) if n_done >= 2 else None  # at the seeds done
        pj: dict[str, Any] = {
            "primary_metric": primary, "seeds": n_done,
            "dev_per_task": led["per_task"]["dev"], "test_per_task": led["per_task"]["test"],
            "budget_tokens": dec["budget"],
            "detectable_difference": found,
            "swarm": {"mixtures": sw["mixtures"], "best_minus_uniform_test": None},
            "fidelity": {k: list(v["acc"]) for k, v in dec["fidelity"].items()},
            "methods": {}}
        if not tt.get("methods"):
            md += [f"Test phase: {len(tt.get('seeds', []))} complete seeds so far "
                   f"({tt.get('seeds_partial', {})})."]
            js["pools"][name] = pj
            continue
        md += [f"**Test ({n_done} paired seeds, {led['per_task']['test']} items a "
               f"task).** Primary: {primary}; 95% t-intervals over seeds; differences paired "
               "by seed. At these seeds the paired difference found with 80% power (the "
               f"pilot's sd) is {'undefined' if found is None else f'{found:.3f}'}. Compute: "
               "CPU-seconds spent choosing the mixture (the final training, the same for every "
               "method, excluded).", "",
               "| method | primary | minus uniform | minus swarm-top1 | gold log-prob | "
               "minus uniform | win rate | compute (CPU-s) | what it trained and scored |",
               "|---|---|---|---|---|---|---|---|---|"]
        work = work_of(led)
        for meth, row in tt["methods"].items():
            md.append(f"| {meth} | {ci(row['accuracy'])} | "
                      f"{ci(row['accuracy_minus_uniform'], True)} "
                      f"| {ci(row['accuracy_minus_swarm'], True)} | {ci(row['logprob'])} | "
                      f"{ci(row['logprob_minus_uniform'], True)} | {row['win_rate']:.2f} | "
                      f"{compute.get(meth, float('nan')):,.0f} | {work.get(meth, '')} |")
            pj["methods"][meth] = {"test": row["accuracy"],
                                   "minus_uniform": row["accuracy_minus_uniform"],
                                   "compute_cpu_s": compute.get(meth),
                                   "compute": work.get(meth)}
        pj["swarm"]["best_minus_uniform_test"] = tt["methods"]["swarm-top1"][
            "accuracy_minus_uniform"]
        md += ["", "Per task, method − uniform on test accuracy (Holm-adjusted p; intervals "
               "Bonferroni-corrected over tasks); only tasks with Holm p < 0.05 are listed:", ""]
        for meth, row in tt["methods"].items():
            sig = [f"{t} {v['diff']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}] "
                   f"p={v['holm_p']:.3f}"
                   for t, v in row["per_task"].items() if v["holm_p"] < 0.05]
            if meth != "uniform":
                md.append(f"* {meth}: " + ("; ".join(sig) if sig else "none"))
        js["pools"][name] = pj
    md += ["", "### Shipped default (dev only)", "", *shipped_default(ledgers)]
    return "\n".join(md) + "\n", js


#: Today's default TaskPGM variant: the candidate that stays unless another beats it on dev
#: by more than SHIP_MARGIN (the pre-registered rule).
TODAY, SHIP_MARGIN = "taskpgm", 0.005


def shipped_choice(ledgers: dict[str, dict[str, Any]]) -> tuple[str, dict[str, float]] | None:
    """The pre-registered rule: (the candidate to ship, each candidate's mean over the pools
    of its dev primary − uniform's at the same seeds); ``None`` until every pool's dev
    candidates are in. The best mean ships unless today's default is within SHIP_MARGIN of
    it; a candidate not trained on some pool (dropped on fidelity) has no mean."""
    pools = {name: led.get("decisions", {}).get("candidates") for name, led in ledgers.items()}
    if not pools or any(not c for c in pools.values()):
        return None
    names = [k for k in next(iter(pools.values()))
             if all("minus_uniform" in c.get(k, {}) for c in pools.values())]
    mean = {k: float(np.mean([c[k]["minus_uniform"] for c in pools.values()])) for k in names}
    best = max(mean, key=lambda k: mean[k])
    stays = TODAY in mean and mean[best] - mean[TODAY] <= SHIP_MARGIN
    return (TODAY if stays else best), mean


def shipped_default(ledgers: dict[str, dict[str, Any]]) -> list[str]:
    """The shipped-default table and verdict (:func:`shipped_choice`) in markdown lines."""
    pools = {name: led.get("decisions", {}).get("candidates") for name, led in ledgers.items()}
    choice = shipped_choice(ledgers)
    if choice is None:
        waiting = [n for n, c in pools.items() if not c]
        return [f"Not decided yet: the dev candidates of {', '.join(waiting) or 'every pool'} "
                "are not finished. The shipped defaults stay today's until they are."]
    ship, mean = choice
    best = max(mean, key=lambda k: mean[k])
    out = ["| candidate | " + " | ".join(pools) + " | mean |",
           "|---|" + "---|" * (len(pools) + 1)]
    out += [f"| {k} | " + " | ".join(f"{c[k]['minus_uniform']:+.3f}" for c in pools.values())
            + f" | {mean[k]:+.3f} |" for k in mean]
    if ship == TODAY:
        verdict = f"Within {SHIP_MARGIN} of today's default, so `{TODAY}` stays."
    elif TODAY in mean:
        verdict = (f"It beats today's default by more than {SHIP_MARGIN}: it becomes the "
                   "shipped default.")
    else:
        dropped = [n for n, c in pools.items() if "minus_uniform" not in c.get(TODAY, {})]
        verdict = (f"Today's default (`{TODAY}`) has no dev score on {', '.join(dropped)} (its "
                   "energy's fidelity interval lay below zero there, so it was not trained): "
                   f"`{best}` becomes the shipped default.")
    return [*out, "", f"Best: `{best}` ({mean[best]:+.3f} over uniform on dev). {verdict}"]


START, END = "<!-- generated:start -->", "<!-- generated:end -->"


def write_docs(ledgers: dict[str, dict[str, Any]], doc: Path, out_json: Path,
               command: str) -> None:
    text, data = render(ledgers, command)
    old = doc.read_text() if doc.is_file() else f"{START}\n{END}\n"
    a, b = old.index(START) + len(START), old.index(END)
    atomic.write_text(doc, old[:a] + "\n" + text + old[b:])
    atomic.write_json(out_json, data)

