"""The LoRA trainer: fine-tune an adapter on a list of examples, resumable.

Used by the experts stage (one adapter per task) and by the evaluation (one per
mixture and seed). A plain loop, read top to bottom in :func:`train_adapter`:

* each example is ``prompt + continuation(answer)``; the loss is the mean negative
  log-likelihood of the *answer* tokens only (prompt positions get label -100):

      L = − (1 / Σ_b |A_b|) Σ_b Σ_{t ∈ A_b} log p_θ(x_t | x_<t),

* batches are built by length, so little compute goes to padding. An expert
  (``order="shuffled"``) shuffles its examples, sorts windows of them by length, cuts
  them into batches and shuffles the batches: a pure function of ``(seed, epoch)``.
  A mixture (``order="given"``) arrives in its sampler's key order
  (:func:`taskpgm.core.mixture.sample_mixture`) and keeps it: only windows of
  ``WINDOW_BATCHES · batch_size`` consecutive examples are regrouped by length, with no
  fresh draw, so two mixtures that share examples also share their order. A keyed
  mixture (``order="keyed"``, sampler ``crn-keyed``) cuts its batches by fixed key
  ranges instead (:func:`keyed_batches`), so two mixtures share every batch whose
  entries they share;
* AdamW with linear warm-up then linear decay, the learning rate a pure function of
  the step; bf16 autocast where :mod:`taskpgm.device` chooses it (weights and
  optimizer stay float32); the model and every batch on the chosen device;
* every ``checkpoint_every`` steps the adapter, the optimizer moments, the RNG state
  and the log so far are written to one safetensors file (atomically). A killed run
  resumes from it and produces the same adapter as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TextIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from taskpgm import atomic, frozen
from taskpgm import device as device_mod
from taskpgm.config import ExpertsConfig
from taskpgm.errors import ConfigError, DataError, ModelError
from taskpgm.models import LoadedModel
from taskpgm.placement import Placement
from taskpgm.progress import Progress, format_seconds
from taskpgm.tasks.schema import Example
from taskpgm.tokens import tokenize_training

CHECKPOINT_FILE = "checkpoint.safetensors"


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


#: A mixture's batches are regrouped by length within this many batches of consecutive
#: examples: enough to cut padding, few enough that the order stays the sampler's.
WINDOW_BATCHES = 8

Order = Literal["shuffled", "given", "keyed"]

#: Each epoch of a keyed training turns every key by this much (mod 1) before cutting,
#: so the epochs' batches differ while staying functions of the keys alone.
EPOCH_TURN = (math.sqrt(5.0) - 1.0) / 2.0


def keyed_batches(keys: Sequence[float], n_batches: int, epoch: int = 0) -> list[list[int]]:
    """The batches of a mixture cut by its position keys: ``n_batches`` equal ranges of
    [0, 1), batch b holding the entries whose turned key ``(k + epoch · EPOCH_TURN) mod 1``
    lies in [b/B, (b+1)/B), in index order.

    A batch is then a function of its own entries' keys: an example added to or removed
    from a mixture changes the one batch its key falls in, and every other batch of the
    epoch stays as it was. The caller fixes ``n_batches`` from what the mixtures compared
    share (the evaluation: the token budget), not from their sizes, so that one example
    more does not move every range; the sizes vary around ``len(keys) / n_batches``, a
    range may be empty, and batches are not grouped by length (more padding than
    :func:`given_order_batches`).
    """
    if n_batches < 1:
        raise ValueError(f"n_batches must be at least 1, got {n_batches}")
    turn = (epoch * EPOCH_TURN) % 1.0
    batches: list[list[int]] = [[] for _ in range(n_batches)]
    for i, key in enumerate(keys):
        if not 0.0 <= key < 1.0:
            raise ValueError(f"position key {key!r} of entry {i} is outside [0, 1)")
        batches[min(n_batches - 1, int(((key + turn) % 1.0) * n_batches))].append(i)
    return batches


def given_order_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """The batches of a set kept in its given order (a mixture, in its key order).

    Consecutive windows of ``WINDOW_BATCHES · batch_size`` examples are each sorted by
    (length, position) and cut into batches, and a window's batches run in the order of
    their earliest example. Nothing is drawn: the batches depend only on the order and
    the lengths, so an example inserted or removed moves its neighbours by one place and
    leaves the rest of the order as it was.
    """
    window = WINDOW_BATCHES * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(lengths), window):
        chunk = sorted(range(start, min(start + window, len(lengths))),
                       key=lambda i: (lengths[i], i))
        cut = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        batches.extend(sorted(cut, key=min))
    return batches


def epoch_plan(order: Order, lengths: Sequence[int], keys: Sequence[float] | None,
               cfg: ExpertsConfig, epoch: int, per_epoch: int) -> list[list[int]]:
    """One epoch's batches for an ``order`` of :func:`train_adapter`."""
    if order == "keyed":
        assert keys is not None
        return keyed_batches(keys, per_epoch, epoch)
    if order == "given":
        return given_order_batches(lengths, cfg.batch_size)
    return length_batches(lengths, cfg.batch_size, cfg.seed, epoch)


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


def answer_loss(model: Any, batch: Mapping[str, torch.Tensor], layer: int = 0
                ) -> tuple[torch.Tensor, int]:
    """Mean NLL of the answer tokens of a batch and how many answer tokens there were.

    The backbone runs over every position, but the language-model head (vocabulary
    × hidden, the largest matrix of a small model) only over the positions whose next
    token is an answer token. With ``inputs_embeds`` in the batch (the boundary states of
    the frozen layers below ``layer``, :func:`taskpgm.frozen.sequence_states`) only the
    layers from ``layer`` up run.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = inner.get_decoder()
    if "inputs_embeds" in batch:
        with frozen.stack(backbone, layer, len(backbone.layers), final_norm=True):
            hidden = backbone(inputs_embeds=batch["inputs_embeds"],
                              attention_mask=batch["attention_mask"]).last_hidden_state
    else:
        hidden = backbone(input_ids=batch["input_ids"],
                          attention_mask=batch["attention_mask"]).last_hidden_state
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


def n_layers(model: Any) -> int | None:
    value = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    return int(value) if isinstance(value, int) else None


def save_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer,
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
    with atomic.replacing(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_checkpoint(path: Path, model: Any, optimizer: torch.optim.Optimizer
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


def train_adapter(
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
    order: Order = "shuffled",
    keys: Sequence[float] | None = None,
    n_batches: int | None = None,
    boundary: frozen.Boundary | None = None,
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
        order: ``shuffled`` (an expert: a seeded shuffle per epoch) or ``given`` (a
            mixture in its sampler's order, every epoch: :func:`given_order_batches`;
            the random state is also reseeded from ``(seed, step)`` before each step, so
            dropout at a step does not depend on what earlier batches drew) or ``keyed``
            (the same reseeding, batches cut by ``keys``: :func:`keyed_batches`; a step
            whose key range holds no example is counted and skipped).
        keys: with ``order="keyed"``, each example's position key in [0, 1)
            (:func:`taskpgm.core.mixture.keyed_mixture`).
        n_batches: with ``order="keyed"``, the batches (steps) of one epoch; by default
            ``⌈len(examples) / batch_size⌉``. An epoch is one pass over every example.
        boundary: the frozen layers' boundary (:meth:`taskpgm.models.Base.boundary`):
            each batch's states below it come from the store (computed once per
            sequence and reused by every training that sees it) and only the adapted
            layers run forward and backward. Used only when the adapter starts at or
            above it; the numbers equal the full forward's to float rounding.

    Returns:
        The training log (also written to ``out_dir/training_log.json``).
    """
    from peft import get_peft_model

    if not examples:
        raise DataError(f"task {task!r} has no training examples; it cannot get an expert")
    if (order == "keyed") != (keys is not None) or (keys is not None
                                                    and len(keys) != len(examples)):
        raise ValueError("order='keyed' takes one key per example, and only it takes keys")
    workdir.mkdir(parents=True, exist_ok=True)
    tok = base.tokenizer
    data = tokenize_training(tok, examples, cfg.max_length)
    lengths = [len(ids) for ids, _ in data]
    total, per_epoch = schedule(len(data), cfg)
    if order == "keyed" and n_batches is not None:
        per_epoch = n_batches
        total = cfg.steps if cfg.steps is not None else max(1, round(cfg.epochs * n_batches))
    if placement is None:
        placement = device_mod.resolve(str(device_mod.model_device(base.model)), cfg.precision,
                                       stream=stream)
    base.model.to(placement.torch_device)
    torch.manual_seed(cfg.seed)
    model = get_peft_model(base.model, lora_config(cfg, n_layers(base.model)))
    if boundary is not None and not frozen.usable(model, boundary):
        boundary = None
    try:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False
        )
        ckpt = workdir / CHECKPOINT_FILE
        step, log = 0, list[dict[str, Any]]()
        if ckpt.is_file():
            step, log = load_checkpoint(ckpt, model, optimizer)
            if progress is not None:
                progress.update(step, note=f"{label} resumed at step {step}/{total}")
        resumed_at = step
        model.train()
        epoch_batches: dict[int, list[list[int]]] = {}
        t_start = time.monotonic()
        while step < total:
            epoch, index = divmod(step, per_epoch)
            if epoch not in epoch_batches:
                epoch_batches = {epoch: epoch_plan(order, lengths, keys, cfg, epoch,
                                                    per_epoch)}
            members = epoch_batches[epoch][index]
            if not members:  # a keyed range that drew no example
                step += 1
                if progress is not None:
                    progress.update(1, note=f"{label} step {step}/{total} (empty key range)")
                continue
            if order != "shuffled":
                torch.manual_seed(cfg.seed * 1_000_003 + step)
            batch = collate([data[i] for i in members], tok.pad_token_id)
            if boundary is not None:
                states = frozen.sequence_states(model, [data[i][0] for i in members],
                                                boundary, tok.pad_token_id, placement)
                embeds = torch.zeros((*batch["input_ids"].shape, states[0].shape[-1]),
                                     dtype=states[0].dtype)
                for row, st in enumerate(states):
                    embeds[row, : st.shape[0]] = st
                batch["inputs_embeds"] = embeds
            batch = device_mod.to_device(batch, placement)
            lr = learning_rate(step, total, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            t0 = time.monotonic()
            with placement.autocast():
                loss, n_answer = answer_loss(model, batch,
                                             0 if boundary is None else boundary.layer)
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
                save_checkpoint(ckpt, model, optimizer, step, log)
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
            "compute": placement.as_dict(), "resumed_at": resumed_at, "steps_log": log,
        }
        summary["tokens_per_second"] = round(summary["tokens"] / max(summary["seconds"], 1e-9), 1)
        (out_dir / "training_log.json").write_text(json.dumps(summary, indent=1))
        return summary
    finally:
        model.unload()  # removes the LoRA layers: the base model is untouched
        base.model.eval()
        device_mod.free_memory(placement.device)
