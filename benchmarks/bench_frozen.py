"""Scoring from the base's frozen lower layers (taskpgm.frozen) against the full forward.

The signals stage scores the base and T experts on one probe set; an evaluation scores
the base and every training on one eval set. With ``experts.layers: 15`` of SmolLM2's 30
layers the lower 15 are the base's for all of them: the cached path computes them once
per example and runs each model's upper 15 only. Both paths score the same examples with
the same models (the base and T random LoRA adapters on the top layers, as trained
experts have) in one process, alternating for ``--rounds``; the log-likelihoods must agree
to 1e-5 (fp32). The cached path's time includes building the states.

Expected from the layer counts alone: (T + 1) L / (k + (T + 1)(L − k)) = 1.67x at T = 4
and 1.86x at T = 12 for L = 30, k = 15 (the head and embeddings aside).

    .venv/bin/python benchmarks/bench_frozen.py [--models 5 13] [--n 32]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from common import compare, matmul_peak
from taskpgm import device, frozen, models
from taskpgm.config import ExpertsConfig, SignalsConfig
from taskpgm.signals import encoded_of, score
from taskpgm.tasks import load_task
from taskpgm.trainer import lora_config


def adapters(lm: models.LoadedModel, count: int, layers: int) -> object:
    """``count`` random LoRA adapters on the top ``layers`` layers (non-zero B)."""
    from peft import get_peft_model

    n = len(frozen.backbone_of(lm.model).layers)
    wrapped = get_peft_model(lm.model, lora_config(ExpertsConfig(layers=layers), n),
                             adapter_name="a0")
    for i in range(1, count):
        wrapped.add_adapter(f"a{i}", lora_config(ExpertsConfig(layers=layers), n))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
    return wrapped


def score_all(lm: models.LoadedModel, wrapped: object, names: list[str], examples: list,
              cfg: SignalsConfig, boundary: frozen.Boundary | None) -> list[np.ndarray]:
    """The base, then every adapter, scored on ``examples``: their choice log-likelihoods."""
    out = []
    with wrapped.disable_adapter():  # type: ignore[attr-defined]
        out.append(score(lm.model, lm.tokenizer, examples, cfg, boundary=boundary)["choice_ll"])
    for name in names:
        wrapped.set_adapter(name)  # type: ignore[attr-defined]
        out.append(score(wrapped, lm.tokenizer, examples, cfg, boundary=boundary)["choice_ll"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--task", default="bigbench:arithmetic/2_digit_addition")
    parser.add_argument("--n", type=int, default=32, help="examples scored by every model")
    parser.add_argument("--layers", type=int, default=15, help="adapted top layers")
    parser.add_argument("--models", type=int, nargs="+", default=[5],
                        help="models scored (the base and T experts: T + 1)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="training steps timed")
    args = parser.parse_args(argv)

    info = device.cpu_info()
    gflops = matmul_peak()
    print(f"frozen layers: CPU {info.model!r}, {info.vector_isa()}, torch threads "
          f"{torch.get_num_threads()}, fp32 matmul {gflops:.0f} GFLOP/s (1024^2, best of 10)")
    lm = models.load(args.model)
    n_layers = len(frozen.backbone_of(lm.model).layers)
    task = load_task(args.task, probe=100, eval=200, max_train=2000)
    examples = list(task.probe[: args.n])
    cfg = SignalsConfig(batch_size=16)
    boundary = frozen.Boundary(lm.fingerprint, n_layers - args.layers, 1 << 31)
    wrapped = adapters(lm, max(args.models) - 1, args.layers)
    names = [f"a{i}" for i in range(max(args.models) - 1)]
    with wrapped.disable_adapter():  # type: ignore[attr-defined]
        score(lm.model, lm.tokenizer, examples[:2], cfg)  # warm-up
    n_params = sum(p.numel() for name, p in frozen.backbone_of(lm.model).layers.named_parameters()
                   if "lora_" not in name)
    tokens = sum(len(p) + sum(len(a) for a in ans)
                 for p, ans in encoded_of(lm.tokenizer, examples, cfg.max_length))
    ok = True
    for count in args.models:
        walls: dict[str, list[float]] = {"full": [], "cached": []}
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            full = score_all(lm, wrapped, names[: count - 1], examples, cfg, None)
            walls["full"].append(time.perf_counter() - t0)
            frozen.STORE.clear()  # the cached round builds its states inside its time
            t0 = time.perf_counter()
            cached = score_all(lm, wrapped, names[: count - 1], examples, cfg, boundary)
            walls["cached"].append(time.perf_counter() - t0)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(full, cached, strict=True))
        full_s, cached_s = min(walls["full"]), min(walls["cached"])
        # Work: 2 N FLOPs a token and layer-share (N the decoder layers' parameters; the
        # head at scored positions and attention's own products left out)
        k, upper = boundary.layer / n_layers, 1 - boundary.layer / n_layers
        full_flops = count * 2 * n_params * tokens
        cached_flops = 2 * n_params * tokens * (k + count * upper)
        print(f"frozen layers, {count} models: {full_flops / full_s / 1e9:.0f} GFLOP/s full "
              f"({full_flops / full_s / 1e9 / gflops:.0%} of the probe), "
              f"{cached_flops / cached_s / 1e9:.0f} GFLOP/s cached "
              f"({cached_flops / cached_s / 1e9 / gflops:.0%})")
        print(f"frozen layers, {count} models x {len(examples)} examples: rounds (wall s) "
              f"full {[round(w, 2) for w in walls['full']]}, cached "
              f"{[round(w, 2) for w in walls['cached']]}; "
              f"{count * len(examples) / full_s:.2f} vs {count * len(examples) / cached_s:.2f} "
              f"example-scorings/s; max |log-likelihood difference| {diff:.1e}")
        ok &= compare(f"frozen layers ({count} models)", "full forward per model", full_s,
                      cached_s, 1.8) and diff <= 1e-5
    frozen.STORE.clear()
    encoded = encoded_of(lm.tokenizer, examples, cfg.max_length)
    t0 = time.perf_counter()
    states = frozen.boundary_states(lm.model, encoded, boundary.layer, lm.tokenizer.pad_token_id,
                                    frozen.Placement("cpu"), cfg.batch_size)
    build_s = time.perf_counter() - t0
    size = frozen.states_bytes(states)
    tokens = sum(p.shape[0] + sum(a.shape[0] for a in ans) for p, ans in states)
    print(f"frozen layers: states of {len(examples)} examples, {tokens} tokens: "
          f"{size / 2**20:.1f} MiB ({size / tokens:.0f} bytes a token), built in {build_s:.2f} s; "
          f"per 1,000 examples {size / len(examples) * 1000 / 2**20:.0f} MiB and "
          f"{build_s / len(examples) * 1000:.0f} s")
    wrapped.unload()  # type: ignore[attr-defined]  # the base again, for the training
    ok &= bench_training(lm, task, n_layers, args)
    return 0 if ok else 1


def bench_training(lm: models.LoadedModel, task: object, n_layers: int,
                   args: argparse.Namespace) -> bool:
    """Step time at batch 8 of the same training on the same examples, the full way and
    from the states: the first training builds the states (each sequence alone), a second
    one (another method or seed that shares the examples, as the evaluation's do) reuses
    them."""
    import tempfile
    from pathlib import Path

    from taskpgm.trainer import train_adapter

    examples = list(task.train[: 8 * args.steps])  # type: ignore[attr-defined]
    cfg = ExpertsConfig(steps=args.steps, batch_size=8, layers=args.layers, precision="fp32",
                        checkpoint_every=1000)
    boundary = frozen.Boundary(lm.fingerprint, n_layers - args.layers, 1 << 31)
    frozen.STORE.clear()
    seconds: dict[str, float] = {}
    logs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, b in (("full", None), ("first cached", boundary), ("cached", boundary)):
            t0 = time.perf_counter()
            logs[name] = train_adapter(lm, "bench", examples, cfg, Path(tmp) / f"w-{name}",
                                       Path(tmp) / f"a-{name}", boundary=b)
            seconds[name] = (time.perf_counter() - t0) / args.steps
    diff = max(abs(a["loss"] - b["loss"]) for a, b in
               zip(logs["full"]["steps_log"], logs["cached"]["steps_log"], strict=True))
    print(f"frozen layers, training at batch 8 ({args.steps} steps, fp32): s/step full "
          f"{seconds['full']:.2f}, first cached (builds the states) {seconds['first cached']:.2f}, "
          f"cached {seconds['cached']:.2f}; max |loss difference| {diff:.1e}")
    return compare("frozen layers (training step)", "full forward and backward",
                   seconds["full"], seconds["cached"], 1.25) and diff <= 1e-4


if __name__ == "__main__":
    sys.exit(main())
