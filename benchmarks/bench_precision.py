"""Training and scoring throughput for each precision this machine runs natively, as a
fraction of its own measured matmul peak, so the figures mean something across machines.

For each precision (fp32 always; bf16 where :mod:`taskpgm.device` finds it native,
or every one given with ``--precision``):

* the peak: the best rate of a 1024² matmul in that precision at torch's thread
  count (GFLOP/s);
* training: ``--steps`` steps of an expert at the demo's settings on the demo's
  first task (one warm-up step first), real tokens per second, and model FLOPs
  per token  2·N (forward) + 2·N·f (the backward pass through the adapted top
  fraction f of the layers; frozen weights get no weight gradient), N the
  non-embedding parameters;
* scoring: ``--n`` probe examples scored, scored tokens (prompt + every choice)
  per second, 2·N FLOPs per token.

achieved fraction = tokens/s × FLOPs per token ÷ peak. The CPU model and flags
are printed first, so a figure is never quoted without the machine.

    .venv/bin/python benchmarks/bench_precision.py [--steps 8] [--n 32] [--precision fp32 bf16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import matmul_peak
from taskpgm import config as config_mod
from taskpgm import device, models
from taskpgm.cli.demo import DEMO_CONFIG
from taskpgm.signals import score
from taskpgm.tasks import load_task
from taskpgm.tokens import encode
from taskpgm.trainer import train_adapter


def non_embedding_params(model: torch.nn.Module) -> int:
    embed = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding)
             for p in m.parameters()}
    head = getattr(model, "lm_head", None)
    if head is not None:
        embed |= {id(p) for p in head.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed training steps")
    parser.add_argument("--n", type=int, default=32, help="probe examples scored")
    parser.add_argument("--precision", nargs="*", choices=["fp32", "bf16"], default=None,
                        help="precisions to measure (default: fp32, and bf16 where native)")
    args = parser.parse_args(argv)

    info = device.cpu_info()
    print(f"machine: {info.model}; {torch.get_num_threads()} torch threads; bf16-relevant "
          f"flags: {sorted(f for f in info.flags if 'avx' in f or 'amx' in f or f == 'fma')}")
    auto = device.resolve("cpu", "auto")
    precisions = args.precision or (["fp32", "bf16"] if auto.bf16 else ["fp32"])
    if "bf16" not in precisions:
        print(f"precision: bf16 not measured ({auto.why})")
    cfg = config_mod.load(DEMO_CONFIG)
    lm = models.load(cfg.base.model)
    n_params = non_embedding_params(lm.model)
    layers = lm.model.config.num_hidden_layers
    frac = 1.0 if cfg.experts.layers is None else min(1.0, cfg.experts.layers / layers)
    train_flops = 2 * n_params * (1 + frac)
    first = cfg.tasks.names[0]
    task = load_task(first if isinstance(first, str) else first.spec,
                     probe=max(args.n, 40), eval=50, max_train=1000)
    examples = list(task.probe[: args.n])
    scored_tokens = 0
    for ex in examples:
        prompt, answers = encode(lm.tokenizer, ex.prompt, list(ex.choices or ex.targets[:1]),
                                 cfg.signals.max_length)
        scored_tokens += len(prompt) + sum(len(a) for a in answers)
    print(f"model: {cfg.base.model}, {n_params / 1e6:.1f} M non-embedding parameters, LoRA in "
          f"{frac:.0%} of {layers} layers; task {task.name}; training FLOPs/token "
          f"{train_flops / 1e6:.0f} M, scoring {2 * n_params / 1e6:.0f} M")
    rows = []
    for precision in precisions:
        where = device.Placement("cpu", precision, "benchmark")  # type: ignore[arg-type]
        peak = matmul_peak(torch.float32 if precision == "fp32" else torch.bfloat16)
        exp = cfg.experts.model_copy(update={"steps": args.steps + 1, "warmup_steps": 1,
                                             "checkpoint_every": 10_000})
        with tempfile.TemporaryDirectory() as tmp:
            log = train_adapter(lm, task.name, task.train, exp, Path(tmp) / "w", Path(tmp),
                               placement=where)
        timed = log["steps_log"][1:]  # the first step warms up
        train_tps = sum(e["tokens"] for e in timed) / sum(e["seconds"] for e in timed)
        score(lm.model, lm.tokenizer, examples[:2], cfg.signals, placement=where)  # warm-up
        t0 = time.perf_counter()
        score(lm.model, lm.tokenizer, examples, cfg.signals, placement=where)
        score_tps = scored_tokens / (time.perf_counter() - t0)
        rows.append((precision, peak, train_tps, score_tps))
        print(f"{precision}: matmul peak {peak:.1f} GFLOP/s | training {train_tps:.0f} tokens/s "
              f"= {train_tps * train_flops / 1e9:.1f} GFLOP/s, "
              f"{train_tps * train_flops / 1e9 / peak:.0%} of peak | scoring {score_tps:.0f} "
              f"tokens/s = {score_tps * 2 * n_params / 1e9:.1f} GFLOP/s, "
              f"{score_tps * 2 * n_params / 1e9 / peak:.0%} of peak", flush=True)
    if len(rows) == 2:
        (_, p32, t32, s32), (_, p16, t16, s16) = rows
        print(f"bf16 / fp32: matmul {p16 / p32:.2f}x, training {t16 / t32:.2f}x, "
              f"scoring {s16 / s32:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
