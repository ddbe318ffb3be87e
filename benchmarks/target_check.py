"""Target mode on the real model: does a held-out sibling pull weight to its family?

The pool: 2- and 4-digit subtraction beside intent recognition and multiemo; the
target: 3-digit subtraction, scored by every model but never trained on. The
subtraction family should get more weight when the mixture is chosen for the
target than without it. Prints the family's weight (with its 5-95% bootstrap
interval) for the split energy along rho, targeted and not. Runs the pipeline up
to the weights twice (the second reuses the experts; only the scoring of the
target's probe examples and the relations differ). Resumable.

    .venv/bin/python benchmarks/target_check.py --out benchmarks/results/target_check.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from taskpgm import atomic
from taskpgm import config as config_mod
from taskpgm.pipeline import run
from taskpgm.readers import open_relations
from taskpgm.rundir import RunDir
from taskpgm.weights import share_with_interval

POOL = ["bigbench:arithmetic/2_digit_subtraction", "bigbench:arithmetic/4_digit_subtraction",
        "bigbench:intent_recognition", "bigbench:multiemo/all_sentence_en"]
FAMILY = ["arithmetic.2_digit_subtraction", "arithmetic.4_digit_subtraction"]
TARGET = "bigbench:arithmetic/3_digit_subtraction"

CONFIG = """# The target check (benchmarks/target_check.py).
base:
  model: smollm2-135m
tasks:
  names: [{pool}]
  splits: {{probe: 24, eval: 30, max_train: 1000}}
experts: {{lr: 0.003, steps: 30, batch_size: 8, layers: 15}}
relations: {{bootstrap: 200}}
mrf: {{energy: split, untrusted: keep{target}}}
mixture: {{token_budget: 12000}}
evaluation: {{enabled: false}}
report: {{enabled: false}}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/target-check"))
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"pool": POOL, "target": TARGET, "family": FAMILY}
    rows = []
    for mode, target in (("untargeted", ""), ("targeted", f", target: [{TARGET}]")):
        path = args.work / f"{mode}.yaml"
        path.write_text(CONFIG.format(pool=", ".join(POOL), target=target))
        out = args.work / mode
        run(config_mod.load(path), out, until="weights")
        stages = RunDir(out).read_stages()
        relations = open_relations(Path(stages["relations"]["path"]))
        caps = np.asarray(RunDir(out).read_methods()["caps"])
        if mode == "targeted":
            result["target_pmi"] = dict(zip(relations.tasks,
                                            relations.arrays["target_pmi"][:, 0].tolist(),
                                            strict=True))
        for rho in (0.0, 0.25, 0.5, 1.0, 2.0, 4.0):
            got = share_with_interval(relations, FAMILY, rho, utility_kind="representativeness",
                                      caps=caps, untrusted="keep", energy="split")
            rows.append({"mode": mode, "rho": rho, **got})
            print(f"{mode:<11} rho={rho:<5} family {got['family']:.3f} "
                  f"[{got['lo']:.3f}, {got['hi']:.3f}]", flush=True)
    result["rows"] = rows
    print("target transfer (expert -> target):", json.dumps(result.get("target_pmi")))
    if args.out:
        atomic.write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
