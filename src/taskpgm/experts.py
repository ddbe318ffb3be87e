"""Experts: one LoRA adapter per task, trained from the base model (or imported), resumable.

Training is a plain loop (read it top to bottom in :func:`train_expert`):

* each example is ``prompt + continuation(answer)``; the loss is the mean negative
  log-likelihood of the *answer* tokens only (prompt positions get label -100):

      L = − (1 / Σ_b |A_b|) Σ_b Σ_{t ∈ A_b} log p_θ(x_t | x_<t),

* batches are built by length (a shuffled window of examples sorted by length is
  cut into batches, the batches shuffled again), so little compute goes to padding;
  the schedule is a pure function of ``(seed, step)``;
* AdamW with linear warm-up then linear decay, the learning rate a pure function of
  the step; bf16 autocast where :mod:`taskpgm.device` chooses it (weights and
  optimizer stay float32); the model and every batch on the chosen device;
* every ``checkpoint_every`` steps the adapter, the optimizer moments, the RNG state
  and the log so far are written to one safetensors file (atomically). A killed run
  resumes from it and produces the same adapter as an uninterrupted run.

A finished expert is an artifact directory (see :mod:`taskpgm.artifacts`) holding
``adapter_model.safetensors`` + ``adapter_config.json`` (PEFT's format) and
``training_log.json``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from taskpgm import artifacts
from taskpgm import device as device_mod
from taskpgm.config import ExpertsConfig, RunConfig
from taskpgm.device import Placement
from taskpgm.errors import ConfigError, DataError, ModelError, NotFoundError
from taskpgm.models import Base, LoadedModel, checkpoint_fingerprint, encode
from taskpgm.progress import Progress, format_seconds
from taskpgm.tasks.schema import Example, TaskSplits

STAGE = "experts"
VERSION = 2  # 2: trailing prompt spaces move onto the answer (models.encode)
ADAPTER_FILE = "adapter_model.safetensors"
CHECKPOINT_FILE = "checkpoint.safetensors"


@dataclass(frozen=True)
class Expert:
    """A finished expert: where its adapter lives and what it was trained on.

    Attributes:
        task: the task it was trained on.
        path: its artifact directory (adapter files + ``training_log.json`` + manifest).
        fingerprint: the artifact fingerprint (the directory name's hash).
        source: ``"trained"``, ``"imported"`` (a LoRA adapter) or ``"checkpoint"`` (a
            fine-tuned full model, scored on its own instead of as an adapter).
    """

    task: str
    path: Path
    fingerprint: str
    source: str


def examples_fingerprint(examples: Sequence[Example]) -> str:
    """Content hash of a training set (ids, prompts and targets, in order)."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([ex.task, ex.id, ex.prompt, ex.answer_text]).encode())
    return digest.hexdigest()[:32]


def tokenize_training(
    tokenizer: Any, examples: Sequence[Example], max_length: int
) -> list[tuple[list[int], int]]:
    """Each example as ``(token ids, number of prompt tokens)``: prompt + training target."""
    out = []
    for ex in examples:
        prompt_ids, (answer_ids,) = encode(tokenizer, ex.prompt, [ex.answer_text], max_length)
        out.append((prompt_ids + answer_ids, len(prompt_ids)))
    return out


def length_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """One epoch of length-bucketed batches, deterministic in ``(seed, epoch)``.

    The examples are shuffled, cut into windows of ``50 · batch_size``, each window
    sorted by length and cut into batches; the batches are then shuffled, so every
    batch holds examples of similar length while the order stays random.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = 50 * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def schedule(n_examples: int, cfg: ExpertsConfig) -> tuple[int, int]:
    """``(total steps, batches per epoch)`` from ``steps`` or ``epochs``."""
    per_epoch = math.ceil(n_examples / cfg.batch_size)
    total = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * per_epoch))
    return total, per_epoch


def learning_rate(step: int, total: int, cfg: ExpertsConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then linear decay to ``min_lr_ratio · lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (1.0 - (1.0 - cfg.min_lr_ratio) * frac)


def collate(items: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 off the answer)."""
    width = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(items):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def answer_loss(model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean NLL of the answer tokens of a batch and how many answer tokens there were.

    The backbone runs over every position, but the language-model head (vocabulary
    × hidden, the largest matrix of a small model) only over the positions whose next
    token is an answer token.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = inner.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    logits = inner.get_output_embeddings()(hidden[:, :-1][keep]).float()
    loss = torch.nn.functional.cross_entropy(logits, labels[keep])
    return loss, int(keep.sum())


def lora_config(cfg: ExpertsConfig, n_layers: int | None = None) -> Any:
    """PEFT's LoRA config; with ``cfg.layers`` set, adapters only in the last N layers."""
    from peft import LoraConfig

    layers = None
    if cfg.layers is not None:
        if n_layers is None:
            raise ConfigError("experts.layers needs the model's number of layers")
        layers = list(range(max(0, n_layers - cfg.layers), n_layers))
    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # PEFT accepts floats
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        layers_to_transform=layers,
        bias="none",
        task_type="CAUSAL_LM",
    )


def fingerprint_settings(cfg: ExpertsConfig, placement: Placement
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings that define a trained adapter, and their defaults, for fingerprints.

    ``precision`` is a setting (``auto`` differs by machine); what defines the adapter
    is the precision it was trained in, so that enters instead, under the key it had
    before ``precision`` existed (``bf16``, default true): adapters trained then keep
    their fingerprints. ``layers`` left at None is dropped for the same reason.
    """
    def settings(c: ExpertsConfig, bf16: bool) -> dict[str, Any]:
        out = c.model_dump(exclude={"import_", "precision"})
        if out.get("layers") is None:
            out.pop("layers", None)
        return {**out, "bf16": bf16}

    return settings(cfg, placement.bf16), settings(ExpertsConfig(), True)


def _n_layers(model: Any) -> int | None:
    value = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    return int(value) if isinstance(value, int) else None


def _save_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer,
                     step: int, log: list[dict[str, Any]]) -> None:
    """Adapter weights, AdamW moments, RNG state and the log so far, in one safetensors file."""
    from peft import get_peft_model_state_dict

    tensors: dict[str, torch.Tensor] = {
        f"adapter.{k}": v.detach().cpu().contiguous()
        for k, v in get_peft_model_state_dict(model).items()
    }
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, param in enumerate(params):
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"optim.{i}.{key}"] = value.detach().cpu().clone().reshape(
                value.shape).contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {"step": str(step), "log": json.dumps(log)}
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer
                     ) -> tuple[int, list[dict[str, Any]]]:
    from peft import set_peft_model_state_dict
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ModelError(f"checkpoint {path} is unreadable ({err}); delete it to restart") from err
    adapter = {k[len("adapter.") :]: v for k, v in tensors.items() if k.startswith("adapter.")}
    set_peft_model_state_dict(model, adapter)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for i, param in enumerate(params):
        # AdamW's step counter stays on the CPU; its moments live beside the parameter.
        state = {k.split(".", 2)[2]: (v if k.endswith(".step") else v.to(param.device))
                 for k, v in tensors.items() if k.startswith(f"optim.{i}.")}
        if state:
            optimizer.state[param] = state
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return int(meta["step"]), json.loads(meta["log"])


def train_expert(
    base: LoadedModel,
    task: str,
    examples: Sequence[Example],
    cfg: ExpertsConfig,
    workdir: Path,
    out_dir: Path,
    *,
    progress: Progress | None = None,
    label: str = "",
    stream: TextIO | None = None,
    placement: Placement | None = None,
) -> dict[str, Any]:
    """Train one LoRA expert; resume from ``workdir``'s checkpoint if there is one.

    Args:
        base: the loaded base model (its weights are not changed; LoRA is injected
            for the duration of the call and removed again).
        task: task name, for messages.
        examples: the training examples.
        cfg: the ``experts`` configuration.
        workdir: persistent scratch directory holding the resumable checkpoint.
        out_dir: where the adapter files and ``training_log.json`` are written.
        progress: overall progress, advanced one unit per step.
        label: prefix of progress notes (``"expert 2/8 hyperbaton"``).
        placement: device and precision (:func:`taskpgm.device.resolve`); by default
            the model's current device and ``cfg.precision`` resolved there. The base
            model is moved to the device.

    Returns:
        The training log (also written to ``out_dir/training_log.json``).
    """
    from peft import get_peft_model

    if not examples:
        raise DataError(f"task {task!r} has no training examples; it cannot get an expert")
    workdir.mkdir(parents=True, exist_ok=True)
    tok = base.tokenizer
    data = tokenize_training(tok, examples, cfg.max_length)
    lengths = [len(ids) for ids, _ in data]
    total, per_epoch = schedule(len(data), cfg)
    if placement is None:
        placement = device_mod.resolve(str(device_mod.model_device(base.model)), cfg.precision,
                                       stream=stream)
    base.model.to(placement.torch_device)
    torch.manual_seed(cfg.seed)
    model = get_peft_model(base.model, lora_config(cfg, _n_layers(base.model)))
    try:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False
        )
        ckpt = workdir / CHECKPOINT_FILE
        step, log = 0, list[dict[str, Any]]()
        if ckpt.is_file():
            step, log = _load_checkpoint(ckpt, model, optimizer)
            if progress is not None:
                progress.update(step, note=f"{label} resumed at step {step}/{total}")
        model.train()
        epoch_batches: dict[int, list[list[int]]] = {}
        t_start = time.monotonic()
        while step < total:
            epoch, index = divmod(step, per_epoch)
            if epoch not in epoch_batches:
                epoch_batches = {epoch: length_batches(lengths, cfg.batch_size, cfg.seed, epoch)}
            batch = device_mod.to_device(
                collate([data[i] for i in epoch_batches[epoch][index]], tok.pad_token_id),
                placement)
            lr = learning_rate(step, total, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.monotonic()
            with placement.autocast():
                loss, n_answer = answer_loss(model, batch)
            loss.backward()  # type: ignore[no-untyped-call]
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            log.append({
                "step": step, "loss": round(float(loss.detach()), 6), "lr": lr,
                "seconds": round(time.monotonic() - t0, 4), "answer_tokens": n_answer,
                "tokens": int(batch["attention_mask"].sum()),
            })
            if step % cfg.checkpoint_every == 0 and step < total:
                _save_checkpoint(ckpt, model, optimizer, step, log)
            if progress is not None:
                rate = step / max(time.monotonic() - t_start, 1e-9) if step else 0.0
                left = (total - step) / rate if rate > 0 else 0.0
                note = (f"{label} step {step}/{total} loss {log[-1]['loss']:.3f} "
                        f"expert ETA {format_seconds(left)}")
                progress.update(1, note=note)
        model.save_pretrained(str(out_dir), safe_serialization=True)
        (out_dir / "README.md").unlink(missing_ok=True)  # PEFT's model-card stub
        summary: dict[str, Any] = {
            "task": task, "steps": total, "examples": len(data), "epochs": total / per_epoch,
            "seconds": round(sum(e["seconds"] for e in log), 2),
            "tokens": sum(int(e["tokens"]) for e in log),
            "answer_tokens": sum(int(e["answer_tokens"]) for e in log),
            "first_loss": log[0]["loss"], "final_loss": log[-1]["loss"],
            "compute": placement.as_dict(), "steps_log": log,
        }
        summary["tokens_per_second"] = round(summary["tokens"] / max(summary["seconds"], 1e-9), 1)
        (out_dir / "training_log.json").write_text(json.dumps(summary, indent=1))
        return summary
    finally:
        model.unload()  # removes the LoRA layers: the base model is untouched
        base.model.eval()
        device_mod.free_memory(placement.device)


def _check_tokenizer(base: LoadedModel, path: Path) -> None:
    """Refuse a directory whose saved tokenizer differs from the base's (absent: the base's)."""
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        return
    from transformers import AutoTokenizer

    from taskpgm.models import tokenizer_fingerprint

    try:
        theirs = AutoTokenizer.from_pretrained(str(path))
    except Exception as err:
        raise ModelError(f"cannot read the tokenizer saved at {path} ({err})") from err
    if tokenizer_fingerprint(theirs) != tokenizer_fingerprint(base.tokenizer):
        raise ModelError(
            f"the expert at {path} comes with a tokenizer that differs from base model "
            f"{base.name}'s (vocabulary or special tokens); its signals would not be "
            "comparable — train it on this base or set base.model to its base"
        )


def check_checkpoint(base: LoadedModel, path: Path) -> None:
    """Check a fine-tuned full checkpoint against the base: same tensors, shapes, tokenizer.

    Only the safetensors headers are read (no weights are loaded).

    Raises:
        ModelError: pickled-only or unreadable weights, a tensor the base lacks or
            with another shape, or a different tokenizer.
    """
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{path} has no .safetensors weights; taskpgm never unpickles .bin "
                         "checkpoints — re-save it with save_pretrained(safe_serialization=True)")
    expected = {k: tuple(v.shape) for k, v in base.model.state_dict().items()}
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as err:
            raise ModelError(f"cannot read {file} ({err}); the file is corrupt") from err
        for key, shape in shapes.items():
            if expected.get(key) != shape:
                raise ModelError(
                    f"checkpoint {path}: tensor {key} has shape {shape} but base model "
                    f"{base.name} has {expected.get(key, 'no such tensor')}; it was fine-tuned "
                    "from another base — set base.model to its base"
                )
    _check_tokenizer(base, path)


def check_adapter(base: LoadedModel, path: Path) -> dict[str, Any]:
    """Check an existing PEFT adapter directory against the base; return its adapter config.

    Raises:
        NotFoundError: the directory or its files are missing.
        ModelError: unreadable files, or a tensor whose shape does not fit the base
            (the adapter was trained for another model).
    """
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    cfg_file, weights = path / "adapter_config.json", path / ADAPTER_FILE
    if not cfg_file.is_file() or not weights.is_file():
        raise NotFoundError(
            f"{path} is not a PEFT LoRA adapter (needs adapter_config.json and {ADAPTER_FILE}; "
            "pickled adapter_model.bin files are not read — re-save it with safetensors)"
        )
    try:
        config = json.loads(cfg_file.read_text())
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, json.JSONDecodeError) as err:
        raise ModelError(
            f"cannot read the adapter at {path} ({err}); the files are corrupt"
        ) from err
    _check_tokenizer(base, path)
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelError(
            f"{path} holds a {config.get('peft_type')} adapter; only LoRA is supported"
        )
    known = set(LoraConfig.__dataclass_fields__)
    lcfg = LoraConfig(**{k: v for k, v in config.items() if k in known and k != "peft_type"})
    try:
        probe = get_peft_model(base.model, lcfg)
    except Exception as err:
        raise ModelError(
            f"the adapter at {path} targets modules the base model {base.name} lacks ({err})"
        ) from err
    try:
        expected = {k: tuple(v.shape) for k, v in get_peft_model_state_dict(probe).items()}
    finally:
        probe.unload()
    for key, tensor in tensors.items():
        name = key.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")
        if name not in expected:
            raise ModelError(
                f"adapter {path}: tensor {key} has no counterpart in base model {base.name}; "
                "it was trained for another base — retrain it or set base.model to its base"
            )
        if tuple(tensor.shape) != expected[name]:
            raise ModelError(
                f"adapter {path}: tensor {key} has shape {tuple(tensor.shape)} but base model "
                f"{base.name} needs {expected[name]}; it was trained for another base"
            )
    return dict(config)


def _is_checkpoint(path: Path) -> bool:
    """A full fine-tuned checkpoint (``config.json``), not a PEFT adapter."""
    return (path / "config.json").is_file() and not (path / "adapter_config.json").is_file()


def _write_progress_header(stream: TextIO | None, text: str) -> None:
    print(text, file=stream or sys.stderr, flush=True)


def ensure_experts(
    base: Base,
    train_sets: Mapping[str, Sequence[Example]],
    cfg: ExpertsConfig,
    *,
    root: Path | None = None,
    stream: TextIO | None = None,
    progress_every: float = 10.0,
    placement: Placement | None = None,
) -> dict[str, Expert]:
    """Train (or import) every missing expert; reuse finished ones. Returns them by task.

    Each expert is its own artifact whose fingerprint covers the base model, the
    task's training data, the stage version, the non-default ``experts`` settings and
    the precision it is trained in (:func:`fingerprint_settings`), so adding a task or
    changing one task's data retrains only that expert. ``placement`` defaults to
    ``cfg.precision`` resolved on the base's device setting.
    """
    if placement is None:
        placement = device_mod.resolve(base.device, cfg.precision, stream=stream)
    params, defaults = fingerprint_settings(cfg, placement)
    plans: list[tuple[str, str, Path | None]] = []
    for task, examples in train_sets.items():
        imported = cfg.import_.get(task)
        if imported is not None:
            src = Path(imported).expanduser()
            if not src.is_dir():
                raise NotFoundError(f"experts.import[{task!r}]: {src} is not a directory")
            if _is_checkpoint(src):
                digest = checkpoint_fingerprint(src)
            elif (src / ADAPTER_FILE).is_file():
                digest = hashlib.sha256((src / ADAPTER_FILE).read_bytes()).hexdigest()[:32]
            else:
                digest = "missing"
            fp = artifacts.fingerprint(STAGE, VERSION, [base.fingerprint, digest],
                                       {"task": task, "imported": True}, {})
        else:
            fp = artifacts.fingerprint(STAGE, VERSION,
                                       [base.fingerprint, examples_fingerprint(examples)],
                                       {"task": task, **params}, defaults)
        plans.append((task, fp, Path(imported).expanduser() if imported else None))
    for task in cfg.import_:
        if task not in train_sets:
            raise NotFoundError(
                f"experts.import names task {task!r}, which is not in tasks: "
                f"({', '.join(train_sets)}); fix the name or add the task"
            )
    done: dict[str, Expert] = {}
    todo = []
    for task, fp, ipath in plans:
        found = artifacts.find(STAGE, task, fp, root=root)
        if found is not None:
            source = str(artifacts.read_manifest(found).get("source", "trained"))
            done[task] = Expert(task, found, fp, source)
        else:
            todo.append((task, fp, ipath))
    total_steps = sum(schedule(len(train_sets[t]), cfg)[0] for t, _, ip in todo if ip is None)
    progress = Progress("experts", total_steps or None, unit="step", every=progress_every,
                        stream=stream)
    _write_progress_header(stream, f"experts: {len(done)} of {len(plans)} finished already, "
                                   f"{len(todo)} to do ({total_steps} steps)")
    for n, (task, fp, ipath) in enumerate(todo, start=len(done) + 1):
        label = f"expert {n}/{len(plans)} {task}"
        manifest: dict[str, Any] = {"task": task, "base": base.fingerprint,
                                    "base_name": base.name}
        with artifacts.write(STAGE, task, fp, manifest, root=root) as tmp:
            if ipath is not None and _is_checkpoint(ipath):
                check_checkpoint(base.load(), ipath)
                manifest.update(source="checkpoint", checkpoint=str(ipath.resolve()))
                _write_progress_header(stream, f"{label}: fine-tuned checkpoint {ipath}")
            elif ipath is not None:
                config = check_adapter(base.load(), ipath)
                shutil.copyfile(ipath / ADAPTER_FILE, tmp / ADAPTER_FILE)
                (tmp / "adapter_config.json").write_text(json.dumps(config, indent=1))
                manifest.update(source="imported", imported_from=str(ipath))
                _write_progress_header(stream, f"{label}: imported from {ipath}")
            else:
                work = artifacts.work_dir(STAGE, task, fp, root=root)
                log = train_expert(base.load(), task, train_sets[task], cfg, work, tmp,
                                   progress=progress, label=label, stream=stream,
                                   placement=placement)
                manifest.update(source="trained", examples=examples_fingerprint(train_sets[task]),
                                config=cfg.model_dump(exclude={"import_"}),
                                compute=placement.as_dict(),
                                final_loss=log["final_loss"], seconds=log["seconds"])
        artifacts.remove_work_dir(STAGE, task, fp, root=root)
        done[task] = Expert(task, artifacts.path_of(STAGE, task, fp, root=root), fp,
                            manifest["source"])
    return {task: done[task] for task, _, _ in plans}


def load_tasks(config: RunConfig) -> dict[str, TaskSplits]:
    """Load every task of the config with its splits (through :mod:`taskpgm.tasks`)."""
    from taskpgm.tasks import load_collection

    if not config.tasks.names:
        raise ConfigError("tasks.names is empty: list the tasks to build experts for, "
                          "e.g. [bigbench:hyperbaton, bigbench:navigate]")
    loaded = load_collection(list(config.tasks.names), options=config.tasks.splits)
    return {splits.name: splits for splits in loaded}


def run(config: RunConfig, *, stream: TextIO | None = None
        ) -> tuple[Base, dict[str, TaskSplits], dict[str, Expert]]:
    """The experts stage of a run: resolve the base, load the tasks, ensure every expert."""
    base = Base(config.base.model, trust_remote_code=config.base.trust_remote_code,
                threads=config.base.threads, device=config.base.device)
    tasks = load_tasks(config)
    root = Path(config.output_dir) if config.output_dir else None
    placement = device_mod.resolve(config.base.device, config.experts.precision, stream=stream)
    _write_progress_header(stream, device_mod.summary_line({"experts": placement}))
    found = ensure_experts(base, {t: s.train for t, s in tasks.items()}, config.experts,
                           root=root, stream=stream, placement=placement)
    return base, tasks, found
