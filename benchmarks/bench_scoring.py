"""Multiple-choice scoring: taskpgm's batched, prompt-shared scorer against the naive loop.

The naive loop is what a plain transformers user writes: one forward pass per
example per choice over prompt + choice, full-vocabulary log-softmax, summed
over the choice tokens. Both run on the same model and probe examples, in the
same process; the log-likelihoods must agree to 1e-4 and ours must be >= 3x
faster. Peak memory (process high-water mark) is printed after our scorer ran
(before the naive loop), so it is the memory of loading the model and scoring.

    .venv/bin/python benchmarks/bench_scoring.py [--task bigbench:navigate] [--n 16]
"""

from __future__ import annotations

import argparse
import sys
import time

from common import compare, peak_rss_mib, timed
from taskpgm import device, models
from taskpgm.config import SignalsConfig
from taskpgm.oracles import score_naive
from taskpgm.signals import score
from taskpgm.tasks import load_task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--task", default="bigbench:arithmetic/2_digit_addition")
    parser.add_argument("--n", type=int, default=16, help="probe examples to score")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)

    lm = models.load(args.model)
    task = load_task(args.task, probe=100, eval=200, max_train=2000)
    examples = list(task.probe[: args.n])
    n_choices = sum(len(ex.choices or ()) for ex in examples)
    print(f"scoring: {args.model}, {args.task}, {len(examples)} examples, {n_choices} choices")
    cfg = SignalsConfig(batch_size=args.batch_size)
    score(lm.model, lm.tokenizer, examples[:2], cfg)  # warm-up

    def naive() -> list[float]:
        return [score_naive(lm.model, lm.tokenizer, ex.prompt, choice)
                for ex in examples for choice in (ex.choices or ())]

    # The two alternate for a few rounds (the machine may be shared): best wall time
    # of each, and the CPU time of that round beside it.
    walls: dict[str, list[tuple[float, float]]] = {"ours": [], "naive": []}
    for _ in range(args.rounds):
        c0 = time.process_time()
        ours, wall = timed(lambda: score(lm.model, lm.tokenizer, examples, cfg))
        walls["ours"].append((wall, time.process_time() - c0))
        peak = peak_rss_mib()
        c0 = time.process_time()
        want, wall = timed(naive)
        walls["naive"].append((wall, time.process_time() - c0))
    (ours_s, ours_cpu), (naive_s, naive_cpu) = min(walls["ours"]), min(walls["naive"])
    print(f"mc scoring: rounds (wall s, CPU s): ours {walls['ours']}, naive {walls['naive']}")
    print(f"mc scoring: CPU time of the best rounds: naive {naive_cpu:.1f} s, ours "
          f"{ours_cpu:.1f} s, ratio {naive_cpu / ours_cpu:.1f}x")

    auto = device.resolve("cpu", "auto")
    if auto.bf16:  # emulated bf16 (an AVX2-only CPU) would take ~100x longer: skipped there
        bf16, bf16_s = timed(lambda: score(lm.model, lm.tokenizer, examples, cfg,
                                           placement=auto))
        off = ours["choice_offsets"]
        agree = sum(
            int(ours["choice_ll"][off[i] : off[i + 1]].argmax()
                == bf16["choice_ll"][off[i] : off[i + 1]].argmax())
            for i in range(len(examples)))
        print(f"mc scoring: bf16 autocast {bf16_s:.3f} s ({ours_s / bf16_s:.2f}x float32), "
              f"max |difference| {abs(bf16['choice_ll'] - ours['choice_ll']).max():.3f} nats, "
              f"same predicted choice on {agree}/{len(examples)} examples")
    else:
        print(f"mc scoring: bf16 skipped ({auto.why})")
    diff = max(abs(a - b) for a, b in zip(want, ours["choice_ll"].tolist(), strict=True))
    met = compare("mc scoring", "naive loop, one forward per choice", naive_s, ours_s, 3.0)
    ok = diff <= 1e-4
    print(f"mc scoring: max |log-likelihood difference| {diff:.2e} "
          f"(target <= 1e-4: {'met' if ok else 'NOT MET'})")
    mem_ok = peak <= 4096
    print(f"mc scoring: peak memory {peak:.0f} MiB (target <= 4096 MiB: "
          f"{'met' if mem_ok else 'NOT MET'})")
    return 0 if met and ok and mem_ok else 1


if __name__ == "__main__":
    sys.exit(main())
