"""Exports: files a trainer reads, and the interleave probabilities checked by datasets itself."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml

from taskpgm.core.mixture import sample_mixture
from taskpgm.exports import example_shares, file_stem, write_exports
from taskpgm.tasks.schema import Example


def pool(task: str, n: int, words: int) -> list[Example]:
    return [Example(task=task, id=f"{task}-{i}", prompt=" ".join(["w"] * words) + f" {i}",
                    choices=("yes", "no"), correct=(i % 2,)) for i in range(n)]


def tokens(instruction: str, output: str) -> int:
    return len(instruction.split()) + len(output.split())


def test_interleave_probabilities_yield_the_counted_token_shares(tmp_path):
    tasks = ["bigbench:arithmetic/2_digit_addition", "navigate", "short"]
    train = {"bigbench:arithmetic/2_digit_addition": pool(tasks[0], 4000, 9),
             "navigate": pool("navigate", 4000, 29), "short": pool("short", 4000, 1)}
    weights = np.array([0.5, 0.3, 0.2])
    mean_tokens = [float(np.mean([tokens(e.prompt, e.answer_text) for e in train[t]]))
                   for t in tasks]
    counts = dict(zip(tasks, (weights * 60_000 / mean_tokens).round().astype(int).tolist(),
                      strict=True))
    mixed = sample_mixture(train, counts, seed=0)
    paths = write_exports(tmp_path, tasks=tasks, weights=list(weights), mean_tokens=mean_tokens,
                          train=train, mixed=mixed)
    spec = json.loads(paths["interleave"].read_text())
    assert spec["probabilities"] == pytest.approx(
        example_shares(list(weights), mean_tokens), abs=1e-3)
    files = [str((paths["interleave"].parent / p).resolve()) for p in spec["datasets"]]
    parts = [datasets.load_dataset("json", data_files=f, split="train") for f in files]
    drawn = datasets.interleave_datasets(parts, probabilities=spec["probabilities"], seed=0)
    sample = drawn.select(range(6000))
    got = np.zeros(len(tasks))
    for row in sample:
        got[tasks.index(row["task"])] += tokens(row["instruction"], row["output"])
    share = got / got.sum()
    np.testing.assert_allclose(share, weights, atol=0.02)  # sampling error of 6,000 draws


class WordTokenizer:
    """One id per whitespace word (hash mod 1000), BOS 1 and EOS 2: enough for the files."""

    eos_token_id = 2

    def __len__(self) -> int:
        return 1000

    def __call__(self, text: str, add_special_tokens: bool = True):
        ids = [3 + hash(w) % 997 for w in text.split()]
        return type("Enc", (), {"input_ids": ([1] if add_special_tokens else []) + ids})()


def read_megatron(prefix):
    """Documents of a .bin/.idx pair, read by hand from Megatron's documented layout."""
    import struct

    raw = Path(f"{prefix}.idx").read_bytes()
    assert raw[:9] == b"MMIDIDX\x00\x00" and struct.unpack("<Q", raw[9:17])[0] == 1
    code = raw[17]
    n, docs = struct.unpack("<QQ", raw[18:34])
    lengths = np.frombuffer(raw, np.int32, n, 34)
    pointers = np.frombuffer(raw, np.int64, n, 34 + 4 * n)
    assert list(np.frombuffer(raw, np.int64, docs, 34 + 12 * n)) == list(range(n + 1))
    dtype = {8: np.uint16, 4: np.int32}[code]
    data = np.fromfile(f"{prefix}.bin", dtype)
    size = np.dtype(dtype).itemsize
    return [list(data[p // size : p // size + k]) for p, k in zip(pointers, lengths, strict=True)]


def test_every_export_holds_the_counted_mixture(tmp_path):
    tasks = ["a", "b.c/d", "unused"]  # a dotted stem, as arithmetic.2_digit_addition has
    train = {"a": pool("a", 30, 3), "b.c/d": pool("b.c/d", 20, 5),
             "unused": pool("unused", 5, 2)}
    counts = {"a": 40, "b.c/d": 10, "unused": 0}
    mixed = sample_mixture(train, counts, seed=1)
    tok = WordTokenizer()
    paths = write_exports(tmp_path, tasks=tasks, weights=[0.7, 0.3, 0.0],
                          mean_tokens=[4.0, 6.0, 3.0], train=train, mixed=mixed,
                          tokenizer=tok, tokenizer_name="word")
    lines = [json.loads(x) for x in paths["train"].read_text().splitlines()]
    assert len(lines) == 50 and {r["task"] for r in lines} == {"a", "b.c/d"}
    # the training form: no trailing space on the prompt, the space on the answer
    for r, ex in zip(lines, mixed, strict=True):
        assert r["instruction"] == ex.prompt.rstrip() and r["output"] == " " + ex.answer_text
        assert r["text"] == r["instruction"] + r["output"]
    hf = datasets.load_from_disk(str(paths["hf"]))
    assert hf.num_rows == 50 and set(hf.column_names) >= {"task", "instruction", "output", "text"}
    # LLaMA-Factory: concat of files that hold exactly the counted examples
    info = json.loads(paths["llamafactory"].read_text())
    assert set(info) == {"a", "b.c_d"}
    data = yaml.safe_load(paths["llamafactory_data"].read_text())
    assert data["mix_strategy"] == "concat" and Path(data["dataset_dir"]).is_absolute()
    for stem, task in (("a", "a"), ("b.c_d", "b.c/d")):
        rows = (Path(data["dataset_dir"]) / info[stem]["file_name"]).read_text().splitlines()
        assert len(rows) == counts[task]
    # interleave: exact probabilities, a stopping rule, a seed and a length
    spec = json.loads(paths["interleave"].read_text())
    assert abs(sum(spec["probabilities"]) - 1.0) < 1e-12
    assert spec["stopping_strategy"] == "all_exhausted" and spec["examples"] == 50
    # Megatron: one document per example, the expert's token ids then EOS
    docs = read_megatron(tmp_path / "exports/megatron/mixture_text_document")
    assert len(docs) == 50
    first = tok(lines[0]["instruction"]).input_ids + tok(
        lines[0]["output"], add_special_tokens=False).input_ids + [2]
    assert docs[0] == first
    assert len(read_megatron(tmp_path / "exports/megatron/a_text_document")) == 40
    assert len(read_megatron(tmp_path / "exports/megatron/b.c_d_text_document")) == 10
    blend = paths["megatron_blend"].read_text().split()
    assert len(blend) == 4 and abs(float(blend[0]) + float(blend[2]) - 1) < 1e-12
    axolotl = yaml.safe_load(paths["axolotl"].read_text())
    assert axolotl["datasets"][0]["type"]["format"] == "{instruction}"
    summary = json.loads(paths["summary"].read_text())
    assert summary["counts"] == counts and summary["tokenizer"] == "word"
    readme = paths["readme"].read_text()
    assert "llamafactory-cli train" in readme and "--data-args-path" in readme


def test_many_random_mixtures_give_probabilities_datasets_accepts():
    rng = np.random.default_rng(0)
    for t in (3, 6, 12):
        for _ in range(300):
            p = example_shares(rng.dirichlet(np.ones(t)), rng.uniform(5, 80, t))
            assert abs(sum(p) - 1.0) < 1e-12
    parts = [datasets.Dataset.from_dict({"x": [i]}) for i in range(12)]
    for _ in range(40):  # and datasets itself takes them (it rejects sums off by > ~1e-8)
        p = example_shares(rng.dirichlet(np.ones(12)), rng.uniform(5, 80, 12))
        datasets.interleave_datasets(parts, probabilities=p, seed=0)


def test_file_stems_are_safe_and_unique():
    taken: set[str] = set()
    assert file_stem("bigbench:a/b", taken) == "bigbench_a_b"
    assert file_stem("bigbench:a/b", taken) == "bigbench_a_b_2"
    assert file_stem("../..", taken) == "task"
