"""The experts stage: one LoRA adapter per task, trained from the base model or imported.

Each expert is trained by :func:`taskpgm.trainer.train_adapter` (resumable: a
killed run continues from its last checkpoint) and is its own artifact (see
:mod:`taskpgm.artifacts`) holding ``adapter_model.safetensors`` +
``adapter_config.json`` (PEFT's format) and ``training_log.json``. Its
fingerprint covers the base model, the task's training data, the stage version,
the settings that differ from the frozen :data:`DEFAULTS` and the precision it
is trained in. ``experts.import`` takes a finished adapter (or a fine-tuned full
checkpoint, scored on its own) instead of training one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from safetensors import SafetensorError
from safetensors.torch import load_file

from taskpgm import artifacts
from taskpgm import device as device_mod
from taskpgm.config import ExpertsConfig
from taskpgm.errors import ModelError, NotFoundError
from taskpgm.models import Base, LoadedModel, checkpoint_fingerprint
from taskpgm.placement import Placement
from taskpgm.progress import Progress, say
from taskpgm.tasks.schema import Example, examples_fingerprint
from taskpgm.trainer import schedule, train_adapter

STAGE = "experts"
VERSION = 2  # 2: trailing prompt spaces move onto the answer (tokens.encode)
#: The ``experts`` defaults of VERSION, frozen (with ``bf16`` for the training precision):
#: a setting equal to its entry here stays out of the fingerprint. When a default in
#: config.ExpertsConfig changes, bump VERSION and refresh this snapshot
#: (tests/test_fingerprints.py fails until both are done).
DEFAULTS: dict[str, Any] = {
    "rank": 8, "alpha": 16.0, "dropout": 0.0,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "lr": 0.003, "steps": 100, "epochs": 1.0, "batch_size": 16, "max_length": 256,
    "warmup_steps": 10, "min_lr_ratio": 0.1, "weight_decay": 0.0, "max_grad_norm": 1.0,
    "seed": 0, "checkpoint_every": 20, "bf16": True,
}
ADAPTER_FILE = "adapter_model.safetensors"


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


def fingerprint_settings(cfg: ExpertsConfig, placement: Placement) -> dict[str, Any]:
    """The settings that define a trained adapter, as they enter its fingerprint.

    ``precision`` is a setting (``auto`` differs by machine); what defines the adapter
    is the precision it was trained in, so that enters instead, under the key it had
    before ``precision`` existed (``bf16``): adapters trained then keep their
    fingerprints. ``layers`` left at None is dropped for the same reason.
    """
    out = cfg.model_dump(exclude={"import_", "precision"})
    if out.get("layers") is None:
        out.pop("layers", None)
    return {**out, "bf16": placement.bf16}


def fingerprint_of(base_fp: str, task: str, examples: Sequence[Example], cfg: ExpertsConfig,
                   placement: Placement) -> str:
    """A trained expert's fingerprint: base, training data, settings against :data:`DEFAULTS`."""
    return artifacts.fingerprint(STAGE, VERSION, [base_fp, examples_fingerprint(examples)],
                                 {"task": task, **fingerprint_settings(cfg, placement)},
                                 DEFAULTS)


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


def ensure_experts(
    base: Base,
    train_sets: Mapping[str, Sequence[Example]],
    cfg: ExpertsConfig,
    *,
    root: Path | None = None,
    stream: TextIO | None = None,
    progress_every: float = 10.0,
    placement: Placement | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, Expert]:
    """Train (or import) every missing expert; reuse finished ones. Returns them by task.

    ``only``: just these tasks' experts (``taskpgm experts --only``: one scheduler job
    per task sharing the cache); the result then holds only them.

    Each expert is its own artifact whose fingerprint covers the base model, the
    task's training data, the stage version, the non-default ``experts`` settings and
    the precision it is trained in (:func:`fingerprint_settings`), so adding a task or
    changing one task's data retrains only that expert. ``placement`` defaults to
    ``cfg.precision`` resolved on the base's device setting.
    """
    if placement is None:
        placement = device_mod.resolve(base.device, cfg.precision, stream=stream)
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
            fp = fingerprint_of(base.fingerprint, task, examples, cfg, placement)
        plans.append((task, fp, Path(imported).expanduser() if imported else None))
    for task in cfg.import_:
        if task not in train_sets:
            raise NotFoundError(
                f"experts.import names task {task!r}, which is not in tasks: "
                f"({', '.join(train_sets)}); fix the name or add the task"
            )
    if only is not None:
        unknown = sorted(set(only) - set(train_sets))
        if unknown:
            raise NotFoundError(f"--only names {unknown}, which are not tasks of the config "
                                f"({', '.join(train_sets)})")
        plans = [plan for plan in plans if plan[0] in set(only)]
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
    say(f"experts: {len(done)} of {len(plans)} finished already, "
        f"{len(todo)} to do ({total_steps} steps)", stream)
    for n, (task, fp, ipath) in enumerate(todo, start=len(done) + 1):
        label = f"expert {n}/{len(plans)} {task}"
        found, computed = artifacts.ensure(
            STAGE, task, fp, _expert_compute(base, task, fp, ipath, train_sets, cfg, root,
                                             stream, progress, placement, label),
            root=root, stream=stream)
        if not computed:
            say(f"{label}: finished by another process", stream)
        source = str(artifacts.read_manifest(found).get("source", "trained"))
        done[task] = Expert(task, found, fp, source)
    return {task: done[task] for task, _, _ in plans}


def missing(base: Base, train_sets: Mapping[str, Sequence[Example]], cfg: ExpertsConfig,
            placement: Placement, *, root: Path | None = None) -> list[str]:
    """The tasks whose expert must still be trained (imported ones are never listed):
    what a cluster backend hands out as jobs (taskpgm.cluster)."""
    out = []
    for task, examples in train_sets.items():
        if task in cfg.import_:
            continue
        fp = fingerprint_of(base.fingerprint, task, examples, cfg, placement)
        if artifacts.find(STAGE, task, fp, root=root) is None:
            out.append(task)
    return out


def _expert_compute(base: Base, task: str, fp: str, ipath: Path | None,
                    train_sets: Mapping[str, Sequence[Example]], cfg: ExpertsConfig,
                    root: Path | None, stream: TextIO | None, progress: Progress,
                    placement: Placement, label: str) -> artifacts.Compute:
    """How one expert's artifact is made: trained, or imported (for :func:`artifacts.ensure`)."""

    def compute(tmp: Path) -> dict[str, Any]:
        manifest: dict[str, Any] = {"task": task, "base": base.fingerprint,
                                    "base_name": base.name}
        if ipath is not None and _is_checkpoint(ipath):
            check_checkpoint(base.load(), ipath)
            manifest.update(source="checkpoint", checkpoint=str(ipath.resolve()))
            say(f"{label}: fine-tuned checkpoint {ipath}", stream)
        elif ipath is not None:
            config = check_adapter(base.load(), ipath)
            shutil.copyfile(ipath / ADAPTER_FILE, tmp / ADAPTER_FILE)
            (tmp / "adapter_config.json").write_text(json.dumps(config, indent=1))
            manifest.update(source="imported", imported_from=str(ipath))
            say(f"{label}: imported from {ipath}", stream)
        else:
            work = artifacts.work_dir(STAGE, task, fp, root=root)
            log = train_adapter(base.load(), task, train_sets[task], cfg, work, tmp,
                               progress=progress, label=label, stream=stream,
                               placement=placement)
            manifest.update(source="trained", examples=examples_fingerprint(train_sets[task]),
                            config=cfg.model_dump(exclude={"import_"}),
                            compute=placement.as_dict(),
                            final_loss=log["final_loss"], seconds=log["seconds"])
        return manifest

    return compute
