"""Our exports, read by the trainers' own loaders (LLaMA-Factory, axolotl, megatron-core).

Runs in .venv-consumers (``make test-consumers``, part of ``make test``); skipped where
the trainers are not installed. Twelve tasks of different sizes and lengths, three
random mixtures: each consumer must yield exactly counts.json's examples per task, and
the text of its rows must be the mixed set's.
"""

from __future__ import annotations

import collections
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

# LLaMA-Factory 0.9.5 pins transformers <= 5.6; its documented switch lets its loaders run
# beside ours (5.24): the loaders under test do not touch the changed APIs.
os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
pytest.importorskip("llamafactory")
pytest.importorskip("axolotl")
pytest.importorskip("megatron.core")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taskpgm.core.mixture import example_counts, sample_mixture
from taskpgm.exports import write_exports
from taskpgm.tasks.schema import Example
from tiny_model import tiny_dir

WORDS = ["red", "blue", "green", "cat", "dog", "bird", "one", "two", "apple", "pear"]


def task_pool(name: str, n: int, words: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    return [Example(task=name, id=f"{name}-{i}",
                    prompt=f"Q{i}: " + " ".join(rng.choice(WORDS) for _ in range(words))
                    + "\nA: ", choices=("yes", "no", "cat"), correct=(rng.randrange(3),))
            for i in range(n)]


@pytest.fixture(scope="module", params=[0, 1, 2])
def run(request, tmp_path_factory):
    """A run's mixture stage on 12 tasks with random weights: counts, mixed set, exports."""
    from transformers import AutoTokenizer

    seed = request.param
    root = tmp_path_factory.mktemp(f"consumers-{seed}")
    rng = np.random.default_rng(seed)
    tasks = [f"suite:task.{i:02d}/x" for i in range(12)]  # dotted stems, as BIG-bench's
    train = {t: task_pool(t, int(rng.integers(20, 120)), int(rng.integers(3, 30)), i)
             for i, t in enumerate(tasks)}
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir(str(root)))
    mean_tokens = [float(np.mean([len(tokenizer(e.prompt + " " + e.answer_text).input_ids)
                                  for e in train[t]])) for t in tasks]
    weights = rng.dirichlet(np.ones(12))
    counts = example_counts(weights, [len(train[t]) for t in tasks], mean_tokens, 20_000, 4.0)
    count_map = {t: int(c) for t, c in zip(tasks, counts, strict=True)}
    mixed = sample_mixture(train, count_map, seed)
    run_dir = root / "run"
    paths = write_exports(run_dir, tasks=tasks, weights=list(weights), mean_tokens=mean_tokens,
                          train=train, mixed=mixed, tokenizer=tokenizer,
                          tokenizer_name="tiny", seed=seed)
    (run_dir / "counts.json").write_text(json.dumps(count_map))
    return {"dir": run_dir, "paths": paths, "counts": count_map, "mixed": mixed,
            "tokenizer": tokenizer, "root": root, "model": tiny_dir(str(root))}


def by_text(mixed: list[Example]) -> collections.Counter[tuple[str, str]]:
    from taskpgm.exports import record

    return collections.Counter((r["instruction"], r["output"]) for r in map(record, mixed))


def task_of(mixed: list[Example]) -> dict[str, str]:
    from taskpgm.exports import record

    return {record(ex)["instruction"]: ex.task for ex in mixed}


def test_llamafactory_merged_sft_dataset_is_the_counted_mixture(run, monkeypatch, tmp_path):
    from llamafactory.data.loader import _get_merged_dataset
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments

    monkeypatch.chdir(tmp_path)  # run from anywhere: nothing may depend on the cwd
    data = yaml.safe_load(run["paths"]["llamafactory_data"].read_text())
    data_args = DataArguments(**data)
    attrs = get_dataset_list(data_args.dataset, data_args.dataset_dir)
    assert len(attrs) == sum(1 for c in run["counts"].values() if c > 0)
    model_args = ModelArguments(model_name_or_path=str(run["model"]))
    training_args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "out"), seed=0)
    merged = _get_merged_dataset(data_args.dataset, model_args, data_args, training_args,
                                 stage="sft")
    got = collections.Counter((row["_prompt"][0]["content"], row["_response"][0]["content"])
                              for row in merged)
    assert got == by_text(run["mixed"])
    tasks = task_of(run["mixed"])
    per_task = collections.Counter(tasks[p] for p, _ in got.elements())
    assert per_task == collections.Counter({t: c for t, c in run["counts"].items() if c})


def test_axolotl_loads_the_mixed_set_with_our_prompt_format(run, monkeypatch, tmp_path):
    from axolotl.utils.data.shared import load_dataset_with_config
    from axolotl.utils.data.wrappers import get_dataset_wrapper
    from axolotl.utils.dict import DictDefault

    monkeypatch.chdir(tmp_path)
    entry = yaml.safe_load(run["paths"]["axolotl"].read_text())["datasets"][0]
    ds_cfg = DictDefault(entry)
    raw = load_dataset_with_config(ds_cfg, False)
    assert raw.num_rows == len(run["mixed"])
    per_task = collections.Counter(raw["task"])
    assert per_task == collections.Counter({t: c for t, c in run["counts"].items() if c})
    cfg = DictDefault({"sequence_len": 512, "train_on_inputs": False, "seed": 0,
                       "dataset_num_proc": 1, "is_preprocess": True})
    wrapped, _ = get_dataset_wrapper(dataset_config=ds_cfg, tokenizer=run["tokenizer"], cfg=cfg,
                                     dataset_base_type=None, dataset=raw,
                                     dataset_prompt_style=None)
    tok = run["tokenizer"]
    for i in range(5):  # the text axolotl trains on is instruction + output, no template
        text = tok.decode(wrapped[i]["input_ids"], skip_special_tokens=True)
        assert text == raw[i]["instruction"] + raw[i]["output"]


def test_megatron_reads_the_built_token_files(run, monkeypatch, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import get_blend_from_list

    monkeypatch.chdir(tmp_path)
    mg = run["dir"] / "exports" / "megatron"
    for name in ("mixture.txt", "blend.txt"):
        prefixes, weights = get_blend_from_list((mg / name).read_text().split())
        assert weights is not None and abs(sum(weights) - 1) < 1e-9
        assert all(Path(p + ".idx").is_file() for p in prefixes)
    prefixes, _ = get_blend_from_list((mg / "mixture.txt").read_text().split())
    ds = IndexedDataset(prefixes[0])
    mixed = run["mixed"]
    assert len(ds) == len(mixed) and len(ds.document_indices) == len(mixed) + 1
    tok = run["tokenizer"]
    from taskpgm.exports import record

    for i in random.Random(0).sample(range(len(mixed)), 20):
        text = tok.decode(ds[i].tolist(), skip_special_tokens=True)
        assert text == record(mixed[i])["text"]
    prefixes, weights = get_blend_from_list((mg / "blend.txt").read_text().split())
    parts = [IndexedDataset(p) for p in prefixes]  # kept alive: their arrays view the mmap
    total = sum(int(part.sequence_lengths.sum()) for part in parts)
    for p, w, part in zip(prefixes, weights, parts, strict=True):
        stem = Path(p).name.removesuffix("_text_document")
        task = next(t for t in run["counts"] if t.replace(":", "_").replace("/", "_") == stem)
        assert Path(p + ".bin").is_file()
        assert len(part) == run["counts"][task]
        assert abs(w - int(part.sequence_lengths.sum()) / total) < 1e-9


def test_interleave_spec_loads_in_datasets_and_follows_the_counts(run, monkeypatch, tmp_path):
    import datasets

    monkeypatch.chdir(tmp_path)
    spec_path = run["paths"]["interleave"]
    spec = json.loads(spec_path.read_text())
    parts = [datasets.load_dataset("json", data_files=str(spec_path.parent / p), split="train")
             for p in spec["datasets"]]
    mixed = datasets.interleave_datasets(parts, probabilities=spec["probabilities"],
                                         seed=spec["seed"],
                                         stopping_strategy=spec["stopping_strategy"])
    rows = mixed.select(range(spec["examples"]))
    got = collections.Counter(rows["task"])
    n = spec["examples"]
    for task, count in run["counts"].items():  # a sampler: within 4 binomial sd per task
        p = count / n
        assert abs(got.get(task, 0) - count) <= 4 * np.sqrt(n * p * (1 - p)) + 2, task
