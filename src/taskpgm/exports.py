"""Write a mixture in the formats trainers read, each one yielding the counted mixture.

Layout, relative to the run directory (the run-directory contract of the pipeline):

    mixture/train.jsonl              the mixed training set, one record a line, shuffled
    mixture/hf/                      the same, as a `datasets` directory (save_to_disk)
    mixture/counted/<task>.jsonl     each task's examples exactly as counted in counts.json
    mixture/tasks/<task>.jsonl       each task's whole train split (the pools samplers draw from)
    exports/README.md                the command for each trainer
    exports/mixture.json             counts, tokens and the tokenizer that measured them
    exports/interleave.json          datasets.interleave_datasets arguments
    exports/llamafactory/            dataset_info.json and data.yaml (concat of the counted files)
    exports/megatron/                .bin/.idx of the mixture and of each task, and blend.txt
    exports/axolotl.yaml             a `datasets:` entry for the mixed set

Records are written in the form the experts were trained on: ``instruction`` is the
prompt without its trailing spaces (:func:`taskpgm.tokens.scored_prompt`) and ``output``
the answer with the separating space (:func:`taskpgm.tokens.continuation`), so
``text = instruction + output`` is the training text a concatenating trainer sees. Plus
``task``, ``id`` and an empty ``input`` (the alpaca fields LLaMA-Factory and axolotl read).

Exact and sampled exports. ``mixture/train.jsonl``, ``mixture/hf``, LLaMA-Factory
(``mix_strategy: concat`` over the counted files), axolotl and Megatron's mixture prefix
hold exactly ``counts[t]`` examples of each task t. ``interleave.json`` and Megatron's
per-task ``blend.txt`` are samplers that follow the counts in expectation only: the
interleave probabilities are the counted example shares n_t / N (≈ q_t ∝ p_t / m_t,
m_t the mean tokens of an example of t, so a whole-example sampler yields the token
shares p), Megatron's blend weights the counted token shares (its sampler draws
token sequences).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from taskpgm.rundir import RunDir
from taskpgm.tasks.schema import Example

#: Megatron's index header and its dtype codes (megatron.core.datasets.indexed_dataset).
MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_DTYPES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}


def record(example: Example) -> dict[str, Any]:
    """One training example as an alpaca-style record, in its training form."""
    from taskpgm.tokens import continuation, scored_prompt

    prompt = scored_prompt(example.prompt)
    output = continuation(prompt, example.answer_text)
    return {"task": example.task, "id": example.id, "instruction": prompt, "input": "",
            "output": output, "text": prompt + output}


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


def shares(values: Sequence[float] | np.ndarray) -> list[float]:
    """``values`` normalized in float64, the last one set to 1 minus the others, so they
    sum to 1 within float64 rounding (``datasets`` rejects sums off by more than ~1e-8)."""
    q = np.asarray(values, dtype=np.float64)
    out = [float(v) for v in q / q.sum()]
    if out:
        out[-1] = float(1.0 - sum(out[:-1]))
    return out


def example_shares(weights: Sequence[float], mean_tokens: Sequence[float]) -> list[float]:
    """q_t ∝ p_t / m_t: per-example sampling probabilities that yield token shares p."""
    return shares(np.asarray(weights, dtype=np.float64) / np.asarray(mean_tokens,
                                                                     dtype=np.float64))


def write_megatron(prefix: Path, documents: Sequence[Sequence[int]], vocab_size: int) -> None:
    """``prefix.bin`` and ``prefix.idx`` in Megatron's indexed-dataset format (version 1):
    one sequence per document, tokens as uint16 when the vocabulary fits, else int32."""
    dtype = np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)
    lengths = np.array([len(d) for d in documents], dtype=np.int32)
    pointers = np.concatenate([[0], np.cumsum(lengths.astype(np.int64))[:-1]]) * dtype.itemsize
    # prefix + suffix, not with_suffix: task stems hold dots (arithmetic.2_digit_addition)
    with open(f"{prefix}.bin", "wb") as f:
        for doc in documents:
            f.write(np.asarray(doc, dtype=dtype).tobytes(order="C"))
    with open(f"{prefix}.idx", "wb") as f:
        f.write(MEGATRON_HEADER)
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", MEGATRON_DTYPES[dtype]))
        f.write(struct.pack("<Q", len(documents)))
        f.write(struct.pack("<Q", len(documents) + 1))
        f.write(lengths.tobytes(order="C"))
        f.write(np.asarray(pointers, dtype=np.int64).tobytes(order="C"))
        f.write(np.arange(len(documents) + 1, dtype=np.int64).tobytes(order="C"))


def training_ids(tokenizer: Any, example: Example, max_length: int) -> list[int]:
    """The token ids an expert trains on for ``example`` (prompt, answer), then EOS."""
    from taskpgm.tokens import encode

    prompt_ids, (answer_ids,) = encode(tokenizer, example.prompt, [example.answer_text],
                                       max_length)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return [*prompt_ids, *answer_ids, *eos]


def write_exports(
    run_dir: Path,
    *,
    tasks: Sequence[str],
    weights: Sequence[float],
    mean_tokens: Sequence[float],
    train: Mapping[str, Sequence[Example]],
    mixed: Sequence[Example],
    tokenizer: Any | None = None,
    tokenizer_name: str = "",
    max_length: int = 256,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the mixed set, the per-task files and every trainer export under ``run_dir``.

    ``tokenizer`` (the base model's) builds Megatron's token files and names the
    tokenizer that measured the token shares; without it the Megatron files are
    skipped. Returns the paths written, by name.
    """
    run_dir = Path(run_dir)
    mixture_dir, exports_dir = RunDir(run_dir).mixture_dir, RunDir(run_dir).exports_dir
    taken: set[str] = set()
    stems = {task: file_stem(task, taken) for task in tasks}
    counted = {t: [ex for ex in mixed if ex.task == t] for t in tasks}
    counts = {t: len(counted[t]) for t in tasks}
    for stale in (mixture_dir / "counted", mixture_dir / "tasks", exports_dir / "megatron"):
        shutil.rmtree(stale, ignore_errors=True)  # a rewrite leaves no file of another mix
    for task in tasks:
        write_jsonl(mixture_dir / "tasks" / f"{stems[task]}.jsonl", train[task])
        write_jsonl(mixture_dir / "counted" / f"{stems[task]}.jsonl", counted[task])
    write_jsonl(mixture_dir / "train.jsonl", mixed)
    _save_hf(mixture_dir / "hf", mixed)
    in_mix = [t for t in tasks if counts[t] > 0]
    token_w = {t: float(w) for t, w in zip(tasks, weights, strict=True)}
    m_tok = dict(zip(tasks, map(float, mean_tokens), strict=True))
    exports_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"train": mixture_dir / "train.jsonl", "hf": mixture_dir / "hf"}

    # datasets.interleave_datasets: a sampler over the whole train splits
    interleave = exports_dir / "interleave.json"
    interleave.write_text(json.dumps({
        "datasets": [f"../mixture/tasks/{stems[t]}.jsonl" for t in in_mix],
        "probabilities": shares([counts[t] for t in in_mix]),
        "stopping_strategy": "all_exhausted", "seed": seed, "examples": len(mixed),
        "tasks": in_mix,
        "note": "datasets.interleave_datasets(datasets, probabilities, seed, "
                "stopping_strategy).select(range(examples)); paths are relative to this "
                "file. A sampler: per-task counts follow counts.json in expectation only",
    }, indent=2) + "\n")
    paths["interleave"] = interleave

    # LLaMA-Factory: concat of the counted files (exact)
    lf_dir = exports_dir / "llamafactory"
    lf_dir.mkdir(parents=True, exist_ok=True)
    info = {stems[t]: {"file_name": f"../../mixture/counted/{stems[t]}.jsonl",
                       "columns": {"prompt": "instruction", "query": "input",
                                   "response": "output"}} for t in in_mix}
    (lf_dir / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    data_args = {"dataset_dir": str(lf_dir.resolve()),
                 "dataset": ",".join(stems[t] for t in in_mix), "mix_strategy": "concat"}
    (lf_dir / "data.yaml").write_text(
        "# LLaMA-Factory data arguments: merge into your training YAML. dataset_dir is\n"
        "# absolute because LLaMA-Factory reads it from the working directory; the\n"
        "# file names in dataset_info.json are relative to it. Each dataset holds exactly\n"
        "# the task's examples in counts.json, so concat trains on the counted mixture.\n"
        + yaml.safe_dump(data_args, sort_keys=False))
    paths["llamafactory"] = lf_dir / "dataset_info.json"
    paths["llamafactory_data"] = lf_dir / "data.yaml"

    # axolotl: no per-dataset weights, so the mixed set itself
    axolotl = exports_dir / "axolotl.yaml"
    axolotl.write_text(
        "# axolotl concatenates its datasets and has no per-dataset weights, so it reads\n"
        "# the mixed set. The path is absolute: axolotl resolves paths from its working\n"
        "# directory. The prompt format is ours (no alpaca template): the text trained on\n"
        "# is instruction + output, as the experts saw it.\n"
        + yaml.safe_dump({"datasets": [{
            "path": str((mixture_dir / "train.jsonl").resolve()), "ds_type": "json",
            "type": {"field_instruction": "instruction", "field_input": "input",
                     "field_output": "output", "format": "{instruction}",
                     "no_input_format": "{instruction}"}}]}, sort_keys=False))
    paths["axolotl"] = axolotl

    # Megatron: token files built here with the base tokenizer
    tokens: dict[str, int] = {}
    if tokenizer is not None:
        mg = exports_dir / "megatron"
        mg.mkdir(parents=True, exist_ok=True)
        ids = [training_ids(tokenizer, ex, max_length) for ex in mixed]
        vocab = len(tokenizer)
        write_megatron(mg / "mixture_text_document", ids, vocab)
        for t in in_mix:
            docs = [d for d, ex in zip(ids, mixed, strict=True) if ex.task == t]
            write_megatron(mg / f"{stems[t]}_text_document", docs, vocab)
            tokens[t] = int(sum(len(d) for d in docs))
        total = sum(tokens.values())
        (mg / "blend.txt").write_text(" ".join(
            f"{tokens[t] / total!r} {(mg / f'{stems[t]}_text_document').resolve()}"
            for t in in_mix) + "\n")
        (mg / "mixture.txt").write_text(f"1.0 {(mg / 'mixture_text_document').resolve()}\n")
        paths["megatron"] = mg / "mixture.txt"
        paths["megatron_blend"] = mg / "blend.txt"
    summary = {"tasks": list(tasks), "counts": counts, "token_weights": token_w,
               "mean_tokens": m_tok, "tokens": tokens or None,
               "tokenizer": tokenizer_name or None, "examples": len(mixed)}
    (exports_dir / "mixture.json").write_text(json.dumps(summary, indent=2) + "\n")
    paths["summary"] = exports_dir / "mixture.json"
    readme = exports_dir / "README.md"
    readme.write_text(exports_readme(run_dir, len(mixed), tokenizer is not None,
                                     tokenizer_name))
    paths["readme"] = readme
    return paths


def exports_readme(run_dir: Path, examples: int, megatron: bool, tokenizer_name: str) -> str:
    """exports/README.md: what each file is and the command that trains on it."""
    run = run_dir.resolve()
    lines = [
        "# Training on this mixture", "",
        f"The mixture: {examples} examples (`../counts.json` per task), in the form the "
        "experts were trained on (`text = instruction + output`). Token shares were measured "
        f"with the tokenizer of `{tokenizer_name or 'the base model'}`.", "",
        "## LLaMA-Factory (exact counts)", "",
        "Merge `llamafactory/data.yaml` into your training YAML (it sets `dataset_dir`, "
        "`dataset` and `mix_strategy: concat`), then:", "", "```",
        "llamafactory-cli train my_sft.yaml", "```", "",
        "## axolotl (exact counts)", "",
        "Put the `datasets:` entry of `axolotl.yaml` in your axolotl config, then:", "", "```",
        "axolotl train my_axolotl.yaml", "```", "",
        "## Hugging Face `datasets` / TRL (exact counts)", "", "```python",
        "import datasets",
        f"mixed = datasets.load_from_disk({str(run / 'mixture' / 'hf')!r})  # or train.jsonl",
        "```", "",
        "`interleave.json` holds a sampler over the whole train splits instead "
        "(expected counts only):", "", "```python",
        "import json, datasets",
        f"spec = json.load(open({str(run / 'exports' / 'interleave.json')!r}))",
        f"parts = [datasets.load_dataset('json', data_files={str(run / 'exports')!r} + '/' + p,"
        " split='train') for p in spec['datasets']]",
        "mixed = datasets.interleave_datasets(parts, probabilities=spec['probabilities'], "
        "seed=spec['seed'], stopping_strategy=spec['stopping_strategy'])"
        ".select(range(spec['examples']))",
        "```", ""]
    if megatron:
        lines += [
            "## Megatron (exact counts with the mixture prefix)", "",
            "The `.bin/.idx` files are already built with the base tokenizer (one document "
            "per example, EOS appended). Paths in the data-args files are absolute: Megatron "
            "resolves prefixes from its working directory.", "", "```",
            f"pretrain_gpt.py ... --data-args-path {run / 'exports' / 'megatron' / 'mixture.txt'}",
            "```", "",
            "`megatron/blend.txt` blends the per-task prefixes by their token shares "
            "(Megatron's sampler; expected shares only):", "", "```",
            f"pretrain_gpt.py ... --data-args-path {run / 'exports' / 'megatron' / 'blend.txt'}",
            "```", ""]
    return "\n".join(lines)


def _save_hf(path: Path, mixed: Sequence[Example]) -> None:
    import datasets

    rows = [record(ex) for ex in mixed]
    columns = ["task", "id", "instruction", "input", "output", "text"]
    data = {c: [r[c] for r in rows] for c in columns}
    datasets.Dataset.from_dict(data).save_to_disk(str(path))
