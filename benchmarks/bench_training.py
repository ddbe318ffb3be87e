"""Expert training: taskpgm's loop against a plain transformers ``Trainer`` + PEFT run.

Same base model, task data, LoRA settings (r=8 on q/k/v/o), learning rate,
warm-up, batch size, steps, precision (bf16 autocast where this CPU runs it
natively, fp32 elsewhere: taskpgm.device) and gradient clipping. The baseline
is what a transformers user writes: a ``Dataset`` of prompt+answer with labels
masked to the answer, ``DataCollatorForSeq2Seq`` padding, random batches.
Ours adds length-bucketed batches and the LM head applied only at answer
positions. Throughput is real (non-padding) tokens per second of wall time;
the loss curves are compared as means over windows of steps (the batch order
differs, so single steps differ by noise). Target: >= 1.5x the tokens per
second. Peak memory is printed after our run (before the baseline).

    .venv/bin/python benchmarks/bench_training.py [--task bigbench:navigate] [--steps 24]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from common import compare, peak_rss_mib
from taskpgm import device, models
from taskpgm.config import ExpertsConfig
from taskpgm.tasks import load_task
from taskpgm.tokens import tokenize_training
from taskpgm.trainer import lora_config, train_adapter


def trainer_run(lm: models.LoadedModel, data: list[tuple[list[int], int]], cfg: ExpertsConfig,
                out: Path, bf16: bool) -> tuple[list[float], int, float]:
    """The baseline: ``Trainer`` + PEFT. Returns per-step losses, real tokens, seconds."""
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    rows = [{"input_ids": ids, "attention_mask": [1] * len(ids),
             "labels": [-100] * n + ids[n:]} for ids, n in data]
    seen = [0]
    pad = DataCollatorForSeq2Seq(lm.tokenizer, padding=True, label_pad_token_id=-100)

    def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad(features)
        seen[0] += int(batch["attention_mask"].sum())
        return dict(batch)

    losses: list[float] = []

    class Losses(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    torch.manual_seed(cfg.seed)
    model = get_peft_model(lm.model, lora_config(cfg))
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg.batch_size, max_steps=cfg.steps or 1,
        learning_rate=cfg.lr, lr_scheduler_type="linear", warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, bf16=bf16,
        use_cpu=True, logging_steps=1, save_strategy="no", report_to=[], seed=cfg.seed,
        dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                      data_collator=collate, callbacks=[Losses()])
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    model.unload()
    return losses, seen[0], seconds


def windows(values: list[float], size: int) -> list[float]:
    return [sum(values[i : i + size]) / len(values[i : i + size])
            for i in range(0, len(values), size)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--task", default="bigbench:navigate")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--fp32-too", action="store_true",
                        help="also time our loop in float32 (when bf16 was chosen)")
    args = parser.parse_args(argv)

    lm = models.load(args.model)
    task = load_task(args.task, probe=100, eval=200, max_train=2000)
    cfg = ExpertsConfig(steps=args.steps, batch_size=args.batch_size, warmup_steps=4,
                        checkpoint_every=10_000)
    data = tokenize_training(lm.tokenizer, task.train, cfg.max_length)
    where = device.resolve("cpu", cfg.precision)
    print(f"training: {args.model}, {args.task}, {len(data)} examples, {args.steps} steps of "
          f"{args.batch_size}, {where.describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        log = train_adapter(lm, task.name, task.train, cfg, Path(tmp) / "work", Path(tmp),
                           placement=where)
        ours_s = time.perf_counter() - t0
        peak = peak_rss_mib()
        base_losses, base_tokens, base_s = trainer_run(lm, data, cfg, Path(tmp) / "trainer",
                                                       where.bf16)
    ours_losses = [e["loss"] for e in log["steps_log"]]
    ours_tps, base_tps = log["tokens"] / ours_s, base_tokens / base_s
    print(f"training: ours {log['tokens']} tokens in {ours_s:.1f} s = {ours_tps:.0f} tokens/s; "
          f"Trainer {base_tokens} tokens in {base_s:.1f} s = {base_tps:.0f} tokens/s")
    # compare() takes times: express both as seconds per 1,000 real tokens.
    met = compare("expert training", "transformers Trainer + PEFT", 1000 / base_tps,
                  1000 / ours_tps, 1.5)
    size = max(1, args.steps // 4)
    ours_w, base_w = windows(ours_losses, size), windows(base_losses, size)
    print(f"training: mean loss per {size} steps, ours    {[round(x, 3) for x in ours_w]}")
    print(f"training: mean loss per {size} steps, Trainer {[round(x, 3) for x in base_w]}")
    spread = math.sqrt(sum((a - b) ** 2 for a, b in zip(ours_w, base_w, strict=False))
                       / max(1, len(ours_w)))
    print(f"training: RMS difference of the windowed curves {spread:.3f}")
    if args.fp32_too and where.bf16:
        fp32 = cfg.model_copy(update={"precision": "fp32"})
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            log32 = train_adapter(lm, task.name, task.train, fp32, Path(tmp) / "w", Path(tmp),
                                 placement=device.resolve("cpu", "fp32"))
            fp32_s = time.perf_counter() - t0
        w32 = windows([e["loss"] for e in log32["steps_log"]], size)
        print(f"training: float32 (no autocast) {log32['tokens'] / fp32_s:.0f} tokens/s, bf16 is "
              f"{fp32_s / ours_s:.2f}x faster; loss windows {[round(x, 3) for x in w32]}")
    mem_ok = peak <= 4096
    print(f"training: peak memory {peak:.0f} MiB (target <= 4096 MiB: "
          f"{'met' if mem_ok else 'NOT MET'})")
    return 0 if met and mem_ok else 1


if __name__ == "__main__":
    sys.exit(main())
