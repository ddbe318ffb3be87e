"""Exports: files a trainer reads, and the interleave probabilities checked by datasets itself."""

from __future__ import annotations

import json

import datasets
import numpy as np
import yaml

from taskpgm.exports import example_shares, file_stem, write_exports
from taskpgm.mixture import sample_mixture
from taskpgm.tasks.schema import Example


def pool(task: str, n: int, words: int) -> list[Example]:
    return [Example(task=task, id=f"{task}-{i}", prompt=" ".join(["w"] * words) + f" {i}",
                    choices=("yes", "no"), correct=(i % 2,)) for i in range(n)]


def tokens(instruction: str, output: str) -> int:
    return len(instruction.split()) + len(output.split())


def test_interleave_probabilities_yield_the_token_weights(tmp_path):
    tasks = ["bigbench:arithmetic/2_digit_addition", "navigate", "short"]
    train = {"bigbench:arithmetic/2_digit_addition": pool(tasks[0], 4000, 9),
             "navigate": pool("navigate", 4000, 29), "short": pool("short", 4000, 1)}
    weights = [0.5, 0.3, 0.2]
    mean_tokens = [float(np.mean([tokens(e.prompt, e.answer_text) for e in train[t]]))
                   for t in tasks]
    mixed = sample_mixture(train, {"navigate": 3, "short": 2}, seed=0)
    paths = write_exports(tmp_path, tasks=tasks, weights=weights, mean_tokens=mean_tokens,
                          train=train, mixed=mixed)
    spec = json.loads(paths["interleave"].read_text())
    files = [str((paths["interleave"].parent / p).resolve()) for p in spec["datasets"]]
    parts = [datasets.load_dataset("json", data_files=f, split="train") for f in files]
    drawn = datasets.interleave_datasets(parts, probabilities=spec["probabilities"], seed=0)
    sample = drawn.select(range(6000))
    got = np.zeros(len(tasks))
    for row in sample:
        got[tasks.index(row["task"])] += tokens(row["instruction"], row["output"])
    share = got / got.sum()
    np.testing.assert_allclose(share, weights, atol=0.02)  # sampling error of 6,000 draws


def test_every_export_is_written_and_readable(tmp_path):
    tasks = ["a", "b/c"]
    train = {"a": pool("a", 30, 3), "b/c": pool("b/c", 20, 5)}
    mixed = sample_mixture(train, {"a": 40, "b/c": 10}, seed=1)
    paths = write_exports(tmp_path, tasks=tasks, weights=[0.7, 0.3], mean_tokens=[4.0, 6.0],
                          train=train, mixed=mixed)
    lines = paths["train"].read_text().splitlines()
    assert len(lines) == 50 and json.loads(lines[0])["task"] in tasks
    hf = datasets.load_from_disk(str(paths["hf"]))
    assert hf.num_rows == 50 and set(hf.column_names) >= {"task", "instruction", "output"}
    info = json.loads(paths["llamafactory"].read_text())
    assert set(info) == {"a", "b_c"}
    mix = yaml.safe_load(paths["llamafactory_mix"].read_text())
    assert mix["mix_strategy"] == "interleave_under"
    probs = [float(v) for v in mix["interleave_probs"].split(",")]
    np.testing.assert_allclose(probs, example_shares([0.7, 0.3], [4.0, 6.0]), atol=1e-6)
    megatron = paths["megatron"].read_text().splitlines()[-1]
    assert megatron.startswith("--data-path 0.700000 mixture/tasks/a_text_document 0.300000")
    axolotl = yaml.safe_load(paths["axolotl"].read_text())
    assert axolotl["datasets"][0]["type"] == "alpaca"


def test_file_stems_are_safe_and_unique():
    taken: set[str] = set()
    assert file_stem("bigbench:a/b", taken) == "bigbench_a_b"
    assert file_stem("bigbench:a/b", taken) == "bigbench_a_b_2"
    assert file_stem("../..", taken) == "task"
