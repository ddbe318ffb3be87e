"""Write a mixture in the formats trainers read.

Layout, relative to the run directory (the run-directory contract of the
pipeline):

    mixture/train.jsonl            the mixed training set, one example a line
    mixture/hf/                    the same, as a `datasets` directory (save_to_disk)
    mixture/tasks/<task>.jsonl     each task's whole train split (the pools samplers draw from)
    exports/interleave.json        {"datasets": [...], "probabilities": [...]}
    exports/llamafactory/dataset_info.json and mix.yaml
    exports/megatron.txt           the --data-path weight string
    exports/axolotl.yaml           a `datasets:` list

Records use the alpaca fields (``instruction``, ``input``, ``output``) that
LLaMA-Factory and axolotl read without a column mapping, plus ``task`` and ``id``.

Weights are token shares. Samplers that draw whole examples
(``datasets.interleave_datasets``, LLaMA-Factory's ``interleave_probs``) get
example shares, q_t ∝ p_t / m_t (m_t the mean tokens of an example of t), so the
tokens they yield follow p. Megatron's blended datasets draw fixed-length
token sequences, so its weights are the token shares p themselves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from taskpgm.tasks.schema import Example


def record(example: Example) -> dict[str, Any]:
    """One training example as an alpaca-style record with its task and id."""
    return {
        "task": example.task,
        "id": example.id,
        "instruction": example.prompt,
        "input": "",
        "output": example.answer_text,
    }


def file_stem(task: str, taken: set[str]) -> str:
    """A file-system-safe, unique stem for a task name (``bigbench:a/b`` -> ``bigbench_a_b``)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", task).strip("._") or "task"
    unique, n = stem, 2
    while unique in taken:
        unique, n = f"{stem}_{n}", n + 1
    taken.add(unique)
    return unique


def write_jsonl(path: Path, examples: Sequence[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for ex in examples:
            f.write(json.dumps(record(ex), ensure_ascii=False) + "\n")


def example_shares(weights: Sequence[float], mean_tokens: Sequence[float]) -> list[float]:
    """q_t ∝ p_t / m_t: per-example sampling probabilities that yield token shares p."""
    q = np.asarray(weights, dtype=np.float64) / np.asarray(mean_tokens, dtype=np.float64)
    return [float(v) for v in q / q.sum()]


def write_exports(
    run_dir: Path,
    *,
    tasks: Sequence[str],
    weights: Sequence[float],
    mean_tokens: Sequence[float],
    train: Mapping[str, Sequence[Example]],
    mixed: Sequence[Example],
) -> dict[str, Path]:
    """Write the mixed set, the per-task pools and every trainer export under ``run_dir``.

    Returns the paths written, by name.
    """
    run_dir = Path(run_dir)
    mixture_dir = run_dir / "mixture"
    exports_dir = run_dir / "exports"
    taken: set[str] = set()
    stems = {task: file_stem(task, taken) for task in tasks}
    pools = {task: mixture_dir / "tasks" / f"{stems[task]}.jsonl" for task in tasks}
    for task in tasks:
        write_jsonl(pools[task], train[task])
    write_jsonl(mixture_dir / "train.jsonl", mixed)
    _save_hf(mixture_dir / "hf", mixed)

    kept = [i for i, w in enumerate(weights) if w > 0]
    names = [tasks[i] for i in kept]
    token_w = [float(weights[i]) for i in kept]
    probs = example_shares(token_w, [mean_tokens[i] for i in kept])
    rel = {task: f"mixture/tasks/{stems[task]}.jsonl" for task in tasks}

    exports_dir.mkdir(parents=True, exist_ok=True)
    interleave = exports_dir / "interleave.json"
    interleave.write_text(json.dumps({
        "datasets": [f"../{rel[t]}" for t in names],
        "probabilities": probs,
        "tasks": names,
        "note": "per-example probabilities for datasets.interleave_datasets; paths are "
                "relative to this file; they yield the token shares in weights.json",
    }, indent=2) + "\n")

    lf_dir = exports_dir / "llamafactory"
    lf_dir.mkdir(parents=True, exist_ok=True)
    info = {
        stems[t]: {
            "file_name": f"../../{rel[t]}",
            "columns": {"prompt": "instruction", "query": "input", "response": "output"},
        }
        for t in names
    }
    (lf_dir / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    mix = {
        "dataset_dir": ".",
        "dataset": ",".join(stems[t] for t in names),
        "mix_strategy": "interleave_under",
        "interleave_probs": ",".join(f"{p:.6f}" for p in probs),
    }
    (lf_dir / "mix.yaml").write_text(
        "# LLaMA-Factory data arguments: merge into your training YAML.\n"
        + yaml.safe_dump(mix, sort_keys=False))

    megatron = exports_dir / "megatron.txt"
    parts = " ".join(f"{w:.6f} mixture/tasks/{stems[t]}_text_document"
                     for t, w in zip(names, token_w, strict=True))
    megatron.write_text(
        "# Megatron --data-path: token-share weights and dataset prefixes. Build each prefix\n"
        "# from mixture/tasks/<task>.jsonl with Megatron's tools/preprocess_data.py first.\n"
        f"--data-path {parts}\n")

    axolotl = exports_dir / "axolotl.yaml"
    axolotl.write_text(
        "# axolotl concatenates its datasets, so it reads the already mixed set.\n"
        + yaml.safe_dump({"datasets": [
            {"path": str((mixture_dir / "train.jsonl").resolve()), "ds_type": "json",
             "type": "alpaca"}]}, sort_keys=False))
    return {
        "train": mixture_dir / "train.jsonl",
        "hf": mixture_dir / "hf",
        "interleave": interleave,
        "llamafactory": lf_dir / "dataset_info.json",
        "llamafactory_mix": lf_dir / "mix.yaml",
        "megatron": megatron,
        "axolotl": axolotl,
    }


def _save_hf(path: Path, mixed: Sequence[Example]) -> None:
    import datasets

    rows = [record(ex) for ex in mixed]
    columns = ["task", "id", "instruction", "input", "output"]
    data = {c: [r[c] for r in rows] for c in columns}
    datasets.Dataset.from_dict(data).save_to_disk(str(path))
