"""The rerun's tables (docs/results.md's generated part) and docs/results.json, from its
ledgers alone (no training, no model)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from quality.ledger import Ledger
from quality.render import ci, fmt3, machines_line, test_table
from quality.rerun import CANDIDATE_SEEDS, POOLS, PRIMARY, SECONDARY, SWARM, TEST_SEEDS
from taskpgm import atomic

COMMAND = "python benchmarks/mixture_rerun.py --render"
START, END = "<!-- generated:start -->", "<!-- generated:end -->"
METRICS = (PRIMARY, SECONDARY)


def compute_of(led: dict[str, Any]) -> dict[str, float]:
    """CPU seconds each method spent choosing its mixture (the final trainings excluded):
    the pipeline for the methods that read the experts, the swarm's trainings for the swarm
    and RegMix, and an anchored energy's dev trainings along its λ path on top."""
    tr = list(led["trainings"].values())
    swarm = sum(e["cpu_s"] for e in tr if e["phase"] == "swarm")
    pipe = float(led.get("pipeline_cpu_s", math.nan))
    out = dict.fromkeys(("uniform", "size", "temperature", "family-uniform", "clean-uniform"),
                        0.0)
    out.update(dict.fromkeys(("swarm-top1", "swarm-top3", "regmix", "regmix-argmax", "olmix"),
                             swarm))
    out.update({"taskpgm": pipe, "mixmin": pipe})
    for name in ("reference", "affinity", "split"):
        path = sum(e["cpu_s"] for e in tr
                   if e["phase"] == "dev" and e["method"].startswith(f"{name}(kl="))
        out[f"{name}+kl"] = pipe + path
    return out


#: What each method trained or read to choose its mixture, in words (results.json's compute).
WORK = {**dict.fromkeys(("uniform", "size", "temperature", "family-uniform", "clean-uniform"),
                        "none"),
        **dict.fromkeys(("swarm-top1", "swarm-top3", "regmix", "regmix-argmax", "olmix"),
                        "the swarm's dev trainings"),
        "taskpgm": "the experts and the probe scoring", "mixmin": "the experts and the probe "
        "scoring", **{f"{e}+kl": "the experts and the probe scoring, and its dev trainings "
                      "along the λ path" for e in ("reference", "affinity", "split")}}


def power_text(diffs: list[float], sd: float, seeds_002: int, det: float) -> str:
    """A pilot's paired differences, their sd, the seeds 80% power at 0.02 needs and the
    difference the test seeds detect."""
    return (f"differences {', '.join(f'{d:+.3f}' for d in diffs)}; paired sd {sd:.3f}; 80% "
            f"power at 0.02 needs {seeds_002} seeds; at {TEST_SEEDS} seeds the detectable "
            f"difference is **{det:.3f}**")


def olmix_line(fit: dict[str, Any] | None) -> str:
    """The decisions' Olmix sentence: its λ, certificate and predicted loss, or why it sat out."""
    if fit is None:
        return ""
    if "skipped" in fit:
        return f" **Olmix** sat out: {fit['skipped']}."
    return (f" **Olmix** (λ {fit['strength']:g}, certified gap "
            f"{fit['certificate']['gap']:.0e}): predicted macro loss "
            f"{fit['predicted_loss']:.3f} nats.")


def known_checks(led: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per method: the intent family's total weight (redundancy) or the weight on the
    corrupted tasks (noise)."""
    spec = POOLS[led["pool"]]
    final = led["decisions"].get("final_methods", {})
    out: dict[str, dict[str, float]] = {}
    for m, w in final.items():
        row = {}
        for fam, members in spec.pool.families.items():
            row[f"{fam} family"] = float(sum(w[t] for t in members))
        if spec.corrupted:
            row["corrupted"] = float(sum(w[t] for t in spec.corrupted))
        if row:
            out[m] = row
    return out


def dev_so_far(led: dict[str, Any]) -> list[str]:
    """A pool whose dev phase is under way: its budget sweep, its pilot once its four seeds
    are trained (with the detectable difference at the test seeds) and the swarm's count,
    read from the ledger's trainings alone."""
    from quality.protocol import metric
    from quality.rerun import DEV_SEEDS
    from taskpgm.core.stats import detectable, seeds_for_power

    fams = led.get("families")
    held = led["trainings"]

    def score(phase: str, budget: int, method: str, seed: int, field_: str = PRIMARY
              ) -> float | None:
        entry = held.get(Ledger.key(phase, budget, method, seed))
        return None if entry is None else metric(entry["rows"], "dev", field_, fams)

    md = ["Dev phase under way; what its ledger holds so far:", ""]
    for b in sorted({e["budget"] for k, e in held.items() if k.startswith("sweep|")}):
        u = score("sweep", b, "uniform", DEV_SEEDS[0])
        k = score("sweep", b, "known", DEV_SEEDS[0])
        if u is not None and k is not None:
            md.append(f"* sweep, {b:,} tokens (seed {DEV_SEEDS[0]}): uniform {fmt3(u)}, known "
                      f"answer {fmt3(k)}, gap {k - u:+.3f}")
    for b in sorted({e["budget"] for k, e in held.items() if k.startswith("pilot|")}):
        for f in METRICS:
            pairs = [(score("pilot", b, "known", s, f), score("pilot", b, "uniform", s, f))
                     for s in DEV_SEEDS]
            diffs = [kn - un for kn, un in pairs if kn is not None and un is not None]
            if len(diffs) < len(DEV_SEEDS):
                continue
            sd = float(np.std(diffs, ddof=1))
            md.append(f"* pilot at {b:,} tokens ({f}, known answer − uniform, seeds "
                      f"{DEV_SEEDS[0]}–{DEV_SEEDS[-1]}): "
                      + power_text(diffs, sd, seeds_for_power(sd), detectable(sd, TEST_SEEDS)))
    n_swarm = len({k for k in held if k.startswith("swarm|") and "|swarm-" in k})
    md.append(f"* swarm: {n_swarm} of {SWARM} mixtures trained")
    return md


def pool_section(led: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    name = led["pool"]
    spec = POOLS[name]
    dec = led.get("decisions", {})
    md = [f"### Pool `{name}`", ""]
    if not led.get("trainings"):
        return [*md, "Not started.", ""], {"primary_metric": PRIMARY,
                                           "secondary_metric": SECONDARY}
    tasks = led.get("tasks", [])
    extra = ""
    if spec.pool.families:
        extra = " Families: " + "; ".join(f"{f} = {', '.join(m)}"
                                          for f, m in spec.pool.families.items()) + "."
    if spec.corrupted:
        extra = f" Corrupted training labels: {', '.join(spec.corrupted)}."
    per = led.get("per_task", {})
    md += [f"Tasks: {', '.join(tasks)}.{extra} Items a task: dev {per.get('dev')}, test "
           f"{per.get('test')}. {machines_line(led)}", ""]
    if led.get("pipeline_note"):
        md += [f"Pipeline compute: {led['pipeline_note']}", ""]
    js: dict[str, Any] = {"primary_metric": PRIMARY, "secondary_metric": SECONDARY}
    if not dec:
        return [*md, *dev_so_far(led), ""], js
    js.update(budget_tokens=dec["budget"], dev_per_task=per.get("dev"),
              test_per_task=per.get("test"))
    if dec.get("sweep"):
        md += ["**Budget sweep (dev, seed 100).**", "", "| budget | uniform | known answer | gap |",
               "|---|---|---|---|"]
        md += [f"| {s['budget']:,} | {fmt3(s['uniform'])} | {fmt3(s['known'])} | "
               f"{s['gap']:+.3f} |" for s in dec["sweep"]]
        md += ["", f"Chosen: {dec['budget']:,} tokens.", ""]
    else:
        md += [f"Budget: {dec['budget']:,} tokens (the first run's dev choice).", ""]
    pilot = dec["pilot"]
    js["detectable_difference"] = pilot[PRIMARY]["detectable"]  # the first run's key
    js["detectable"] = {f: pilot[f]["detectable"] for f in METRICS}
    js["pilot_sd"] = {f: pilot[f]["sd"] for f in METRICS}
    md += [f"**Pilot** ({pilot['source']}, budget {pilot['budget']:,}). " + " ".join(
        f"{f}: " + power_text(pilot[f]["diffs"], pilot[f]["sd"], pilot[f]["seeds_for_002"],
                              pilot[f]["detectable"]) + "."
        for f in METRICS), ""]
    sw = dec["swarm"]
    acc = np.asarray(sw[PRIMARY])
    md += [f"**Swarm** ({len(acc)} mixtures around uniform, dev, seed 100): uniform "
           f"{fmt3(sw['uniform'][PRIMARY])}, best {fmt3(acc.max())}, median "
           f"{fmt3(float(np.median(acc)))}; {int((acc > sw['uniform'][PRIMARY]).sum())} of "
           f"{len(acc)} above uniform (headroom read with the best's selection bias in mind).",
           "", "**Fidelity** (Spearman of each method's objective with the dev metric over the "
           "swarm, 5–95% bootstrap over mixtures).", "", f"| objective | {PRIMARY} | {SECONDARY} |",
           "|---|---|---|"]
    md += [f"| {label} | {ci(list(v[PRIMARY]), True)} | {ci(list(v[SECONDARY]), True)} |"
           for label, v in dec["fidelity"].items()]
    js["swarm"] = {"mixtures": len(acc), "uniform": sw["uniform"], "best": float(acc.max()),
                   "median": float(np.median(acc))}
    js["fidelity"] = dec["fidelity"]
    rk = dec["regmix_kind"]
    md += ["", "**RegMix.** Leave-one-out Spearman: " + ", ".join(
        f"{k} {v['loo_spearman']:+.2f}" for k, v in dec["regmix"].items()) + f"; used: {rk}."
        + olmix_line(dec.get("olmix")),
        "", f"**The λ paths (dev, seeds {', '.join(map(str, CANDIDATE_SEEDS))}).** Mean dev "
        f"{PRIMARY} (and {SECONDARY}) against uniform's at the same seeds.", "",
        "| energy | λ | dev | − uniform | dev log-prob | − uniform |", "|---|---|---|---|---|---|"]
    for energy, path in dec["paths"].items():
        for p in path["points"]:
            lam = "∞ (uniform)" if p["strength"] is None else f"{p['strength']:g}"
            mark = " **chosen**" if p["strength"] == path["chosen"] else ""
            if "dev" not in p:
                md.append(f"| {energy} | {lam} | {p.get('dropped', '–')} | | | |")
                continue
            md.append(f"| {energy} | {lam}{mark} | {fmt3(p['dev'])} | {p['minus_uniform']:+.3f} | "
                      f"{fmt3(p['dev_logprob'])} | {p['logprob_minus_uniform']:+.3f} |")
    mm = dec["mixmin"]
    md += [f"| mixmin | – | {fmt3(mm['dev'])} | {mm['minus_uniform']:+.3f} | "
           f"{fmt3(mm['dev_logprob'])} | {mm['logprob_minus_uniform']:+.3f} |", ""]
    final = dec["final_methods"]
    md += ["**The final table's mixtures.**", "", "| task | " + " | ".join(final) + " |",
           "|---" * (len(final) + 1) + "|"]
    md += [f"| {t} | " + " | ".join(f"{final[m][t]:.3f}" for m in final) + " |" for t in tasks]
    checks = known_checks(led)
    if checks:
        keys = list(next(iter(checks.values())))
        md += ["", "**Known-answer checks** (weight per method).", "",
               "| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        md += [f"| {m} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |"
               for m, row in checks.items()]
        js["known_answer"] = checks
    md.append("")
    table = test_table(led)
    compute = compute_of(led)
    js["methods"] = {}
    if not table or len(table.get("seeds", [])) < 2:
        done = sorted({e["seed"] for e in led["trainings"].values() if e["phase"] == "test"})
        md += [f"**Test**: {len(table.get('seeds', []))} complete paired seeds so far "
               f"(seeds started: {done or 'none'}).", ""]
        return md, js
    seeds = table["seeds"]
    md += [f"**Test ({len(seeds)} paired seeds: {seeds[0]}–{seeds[-1]}).** Mean and 95% "
           "t-interval over seeds; differences paired by seed. Compute: CPU seconds spent "
           "choosing the mixture.", "",
           "| method | accuracy | − uniform | − swarm-top1 | log-prob | − uniform | win rate | "
           "tasks Holm < 0.05 (+/−) | compute CPU-s |", "|---|---|---|---|---|---|---|---|---|"]
    for m, row in table["methods"].items():
        pos = sum(1 for v in row["per_task"].values() if v["holm_p"] < 0.05 and v["diff"] > 0)
        neg = sum(1 for v in row["per_task"].values() if v["holm_p"] < 0.05 and v["diff"] < 0)
        c = compute.get(m, math.nan)
        md.append(f"| {m} | {ci(row['accuracy'])} | {ci(row['accuracy_minus_uniform'], True)} | "
                  f"{ci(row['accuracy_minus_swarm'], True)} | {ci(row['logprob'])} | "
                  f"{ci(row['logprob_minus_uniform'], True)} | {row['win_rate']:.2f} | "
                  f"{pos}/{neg} | {'–' if not np.isfinite(c) else f'{c:,.0f}'} |")
        js["methods"][m] = {
            "test": {f: row[f] for f in METRICS},
            "minus_uniform": {f: row[f + "_minus_uniform"] for f in METRICS},
            "minus_swarm": {f: row[f + "_minus_swarm"] for f in METRICS},
            "win_rate": row["win_rate"], "per_task": row["per_task"],
            "compute_cpu_s": c if np.isfinite(c) else None, "compute": WORK.get(m, "")}
    js["seeds"] = seeds
    md.append("")
    return md, js


def shipped_default(ledgers: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The pre-registered rule over the pools whose dev phase finished (all three needed)."""
    decs = {p: led["decisions"] for p, led in ledgers.items() if led.get("decisions")}
    if set(decs) != set(POOLS):
        return [f"**Shipped default**: waits for every pool's dev phase "
                f"({len(decs)} of {len(POOLS)} done)."], {}
    scores: dict[str, list[float]] = {}
    for dec in decs.values():
        for energy, path in dec["paths"].items():
            for p in path["points"]:
                label = ("uniform" if p["strength"] is None else
                         "taskpgm (today)" if energy == "reference" and p["strength"] == 0
                         else f"{energy} λ={p['strength']:g}")
                if "dev" in p:
                    scores.setdefault(label, []).append(p["minus_uniform"])
        scores.setdefault("mixmin", []).append(dec["mixmin"]["minus_uniform"])
    full = {k: float(np.mean(v)) for k, v in scores.items() if len(v) == len(decs)}
    sds = [dec["pilot"][PRIMARY]["sd"] for dec in decs.values()]
    noise = math.sqrt(sum(s * s for s in sds) / 2) / len(sds)
    best = max(full, key=lambda k: full[k])
    today = full.get("taskpgm (today)", math.nan)
    if best != "taskpgm (today)" and full[best] - today > noise:
        pick = "reference λ=0.3" if best == "uniform" else best
    else:
        pick = "taskpgm (today)"
    md = [f"**Shipped default** (the pre-registered rule; dev noise {noise:.3f}). Mean over "
          "the pools of dev accuracy − uniform's: " + ", ".join(
              f"{k} {v:+.3f}" for k, v in sorted(full.items(), key=lambda kv: -kv[1]))
          + f". Best: {best}; the default is **{pick}**."]
    return md, {"scores": full, "noise": noise, "best": best, "default": pick}


def write_docs(ledgers: dict[str, dict[str, Any]], doc: Path, out_json: Path) -> None:
    md = [f"Generated by `{COMMAND}` from the ledgers in `benchmarks/results/mixture_rerun/`.",
          ""]
    js: dict[str, Any] = {"command": COMMAND, "pools": {}}
    total = 0.0
    for name, led in ledgers.items():
        part, pj = pool_section(led)
        md += part
        js["pools"][name] = pj
        total += sum(e["cpu_s"] for e in led["trainings"].values())
        total += float(led.get("pipeline_cpu_s", 0.0))
    ship, sj = shipped_default(ledgers)
    md += [*ship, "", f"Compute so far: {total / 3600:.1f} CPU-hours (every training in "
           "the ledgers and the pipelines)."]
    js["shipped_default"] = sj
    js["cpu_hours"] = total / 3600
    text = doc.read_text() if doc.is_file() else f"{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    atomic.write_text(doc, head + START + "\n" + "\n".join(md) + "\n" + END + tail)
    atomic.write_json(out_json, js)
