"""Does an energy see redundancy? Three shards of one task beside three distinct tasks.

The pool: bigbench:intent_recognition cut into three disjoint random shards (three
names, one task; JSONL files written next to the config) beside three distinct
tasks. Uniform gives the shard family 1/2; a method that sees the shards are one
task gives the family about one task's share, 1/4. For each energy (the affinity
energy under each utility, the split energy and the gain model along rho, and the
paper's reference setting) it prints the family's weight with its 5-95% bootstrap
interval over resampled probe examples. Runs the pipeline up to the weights (no
evaluation). Resumable: experts and signals are fingerprinted artifacts.

    .venv/bin/python benchmarks/shard_check.py --out benchmarks/results/shard_check.json
    .venv/bin/python benchmarks/shard_check.py --steps 30 --out ...   # the demo's experts
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

from taskpgm import config as config_mod
from taskpgm.core.reference import REFERENCE_RHO
from taskpgm.pipeline import run
from taskpgm.readers import open_relations
from taskpgm.rundir import RunDir
from taskpgm.tasks import load_task
from taskpgm.weights import share_with_interval

SHARDED = "bigbench:intent_recognition"
DISTINCT = ["bigbench:arithmetic/2_digit_addition", "bigbench:arithmetic/2_digit_subtraction",
            "bigbench:multiemo/all_sentence_en"]
SHARDS = ["intent_a", "intent_b", "intent_c"]

CONFIG = """# The shard check (benchmarks/shard_check.py): three shards of one task, three others.
base:
  model: smollm2-135m
tasks:
  names: [{names}]
  splits: {{probe: 24, eval: 30, max_train: 1000}}
experts: {{lr: 0.003, steps: {steps}, batch_size: 8, layers: 15}}
relations: {{bootstrap: 200}}
mixture: {{token_budget: 12000}}
evaluation: {{enabled: false}}
report: {{enabled: false}}
"""


def write_shards(folder: Path) -> list[str]:
    """The sharded task's examples, shuffled once, into three disjoint JSONL files."""
    task = load_task(SHARDED)
    examples = [*task.train, *task.probe, *task.eval]
    random.Random(0).shuffle(examples)
    paths = []
    for k, name in enumerate(SHARDS):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(
            json.dumps({"prompt": ex.prompt, "choices": list(ex.choices or ()),
                        "answer": ex.correct[0]}) + "\n" for ex in examples[k::3]))
        paths.append(path.name)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/shard-check"))
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON")
    parser.add_argument("--steps", type=int, default=60,
                        help="expert steps (multiemo does not learn in the demo's 30)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    names = [*write_shards(args.work), *DISTINCT]
    cfg_path = args.work / "shard_check.yaml"
    cfg_path.write_text(CONFIG.format(names=", ".join(names), steps=args.steps))
    cfg = config_mod.load(cfg_path)
    run(cfg, args.work / "run", until="weights")
    stages = RunDir(args.work / "run").read_stages()
    relations = open_relations(Path(stages["relations"]["path"]))
    caps = np.asarray(RunDir(args.work / "run").read_methods()["caps"])
    t = len(relations.tasks)
    rows = []
    settings = [("affinity", u, rho) for u in ("representativeness", "transfer", "gain")
                for rho in (0.0, 1.0 / t)]
    settings += [(e, "representativeness", rho) for e in ("split", "gain-model")
                 for rho in (0.0, 0.25, 0.5, 1.0, 2.0)]
    settings += [("reference", "representativeness", REFERENCE_RHO)]
    for energy, utility, rho in settings:
        for untrusted in ("exclude", "keep"):
            got = share_with_interval(relations, SHARDS, rho, utility_kind=utility, caps=caps,
                                      untrusted=untrusted, energy=energy)
            rows.append({"energy": energy, "utility": utility, "rho": rho,
                         "untrusted": untrusted, **got})
            print(f"{energy:<10} {utility:<18} rho={rho:<6.3f} {untrusted:<7} family "
                  f"{got['family']:.3f} [{got['lo']:.3f}, {got['hi']:.3f}]", flush=True)
    acc = relations.arrays["accuracy"]
    learned = {task: [float(acc[0, i]), float(acc[i + 1, i])]
               for i, task in enumerate(relations.tasks)}
    print("probe accuracy (base, expert):", json.dumps(learned))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"tasks": relations.tasks, "accuracy": learned,
                                        "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
