"""Where models run and in what precision: the one place that decides it.

Every stage that runs a model (experts, signals, evaluation) asks
:func:`resolve` for a :class:`Placement`, built from ``base.device``
(``auto | cpu | cuda | cuda:N``) and the stage's ``precision``
(``auto | fp32 | bf16``). ``auto`` means:

* device: the first CUDA GPU when torch sees one, else the CPU;
* precision on CUDA: bf16 when ``torch.cuda.is_bf16_supported()``, else fp32;
* precision on the CPU: bf16 only where the CPU executes it natively. On a CPU
  without bf16 instructions torch emulates it: a 1024² matmul measured 100×
  slower in bf16 than in fp32 on an AVX2-only EPYC (0.9 against 91.5 GFLOP/s).
  The CPU's flags decide (``avx512_bf16`` or ``amx_bf16`` on x86; ``bf16`` in
  the Features of an Arm CPU); where the flags say yes, or where they cannot be
  read, a short timed probe of a bf16 against an fp32 matmul confirms it
  (bf16 must not be slower). The probe's result is cached per machine in
  ``$TASKPGM_HOME/machine.json`` (a result measured on busy CPUs only until a
  run finds them quiet).

bf16 here is autocast: weights and optimizer state stay float32, matmuls run in
bf16. An explicit ``precision: bf16`` on a CPU without native bf16 still runs,
with a warning that quotes the probe's measured slowdown.

Precision changes results (a bf16 expert is another adapter than an fp32 one,
bf16 scoring moves log-likelihoods by up to ~0.2 nats), so the *resolved*
precision enters the fingerprints of experts, signals and evaluations. The
device does not: fp32 on a GPU and on a CPU agree to float rounding, like two
thread counts do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import torch

from taskpgm import atomic, cache
from taskpgm.errors import ConfigError
from taskpgm.placement import Placement

if TYPE_CHECKING:
    from taskpgm.config import RunConfig

PrecisionSetting = Literal["auto", "fp32", "bf16"]
# Flags that mean the CPU executes bf16 arithmetic natively.
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
BUSY = 0.5  # load average per CPU above which a timing is taken to be measured under load
PROBE_SIZE = 512  # matmul side of the probe: ~0.3 s emulated in bf16 on 2 AVX2 cores
MACHINE_FILE = "machine.json"


@dataclass(frozen=True)
class CpuInfo:
    """What the CPU says about itself: model name and instruction-set flags."""

    model: str
    flags: frozenset[str]
    arch: str

    @property
    def readable(self) -> bool:
        """Whether the flags could be read at all (Linux ``/proc/cpuinfo``)."""
        return bool(self.flags)

    def native_bf16(self) -> bool | None:
        """True/False from the flags; None when the flags cannot tell."""
        if not self.readable:
            return None
        if self.arch in ("x86_64", "amd64", "i686", "i386"):
            return any(flag in self.flags for flag in X86_BF16_FLAGS)
        if self.arch in ("aarch64", "arm64"):
            return "bf16" in self.flags
        return None

    def vector_isa(self) -> str:
        """The widest vector extension, for messages (``"avx512"``, ``"avx2"``, ...)."""
        for flag in ("amx_bf16", "avx512_bf16", "avx512f", "avx2", "avx", "sve", "asimd"):
            if flag in self.flags:
                return flag
        return "unknown ISA"


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """Read the CPU's model name and flags (empty flags where they cannot be read)."""
    model, flags = platform.processor() or platform.machine(), frozenset[str]()
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model=model, flags=flags, arch=platform.machine().lower())


def _best_seconds(fn: Any, repeat: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def probe_bf16(size: int = PROBE_SIZE) -> dict[str, float]:
    """Time a ``size``² matmul in fp32 and in bf16 on the CPU, at torch's thread count.

    Returns ``{"fp32_s", "bf16_s", "slowdown"}`` with slowdown = bf16 / fp32 time
    (above 1: bf16 is slower).
    """
    a32, b32 = torch.randn(size, size), torch.randn(size, size)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    fp32_s = _best_seconds(lambda: a32 @ b32, repeat=5)
    bf16_s = _best_seconds(lambda: a16 @ b16, repeat=3)
    return {"fp32_s": fp32_s, "bf16_s": bf16_s, "slowdown": bf16_s / fp32_s}


def _machine_key(info: CpuInfo) -> str:
    payload = json.dumps([info.model, sorted(info.flags), info.arch, torch.__version__,
                          torch.get_num_threads()])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_per_cpu() -> float | None:
    """The 1-minute load average per CPU, or ``None`` where the system does not say."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (OSError, AttributeError):
        return None


def cached_probe(info: CpuInfo, *, home: Path | None = None) -> dict[str, float]:
    """:func:`probe_bf16`, measured once per machine (CPU, torch version, threads).

    A measurement taken while other work kept the CPUs busy (load above :data:`BUSY` per
    CPU) reads low, so it is kept only until a run finds the machine quiet and measures
    again; the result holds ``load_per_cpu``, the load it was measured under.
    """
    file = (home or cache.home()) / MACHINE_FILE
    key = _machine_key(info)
    try:
        known = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    entry = known.get(key)
    load = load_per_cpu()
    if isinstance(entry, dict) and isinstance(entry.get("slowdown"), (int, float)):
        was_busy = float(entry.get("load_per_cpu") or 0.0) > BUSY
        if not was_busy or load is None or load > BUSY:
            return {k: float(v) for k, v in entry.items() if isinstance(v, (int, float))}
    result = {**probe_bf16(), **({} if load is None else {"load_per_cpu": load})}
    known[key] = {**result, "cpu": info.model, "torch": torch.__version__,
                  "threads": torch.get_num_threads()}
    with contextlib.suppress(OSError):  # a read-only cache only costs the probe next run
        atomic.write_json(file, known)
    return result


def resolve_device(setting: str, *, cuda_available: bool | None = None) -> str:
    """``auto | cpu | cuda | cuda:N`` to a torch device string.

    Raises:
        ConfigError: a CUDA device is asked for where torch sees none, or N is out of range.
    """
    avail = torch.cuda.is_available() if cuda_available is None else cuda_available
    if setting == "auto":
        return "cuda:0" if avail else "cpu"
    if setting == "cpu":
        return "cpu"
    if setting == "cuda" or setting.startswith("cuda:"):
        if not avail:
            raise ConfigError(
                f"base.device: {setting} was asked for but torch sees no CUDA GPU (torch "
                f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); set "
                "base.device: auto or cpu, or install a CUDA build of torch")
        index = 0 if setting == "cuda" else setting.split(":", 1)[1]
        if not str(index).isdigit():
            raise ConfigError(f"base.device: {setting!r} is not cuda:N with N a GPU number")
        count = torch.cuda.device_count()
        if cuda_available is None and int(index) >= count:
            raise ConfigError(f"base.device: {setting} asked for, but torch sees {count} "
                              f"GPU(s) (cuda:0..cuda:{count - 1})")
        return f"cuda:{index}"
    raise ConfigError(f"base.device: {setting!r} is not auto, cpu, cuda or cuda:N")


def resolve(
    device: str = "auto",
    precision: PrecisionSetting = "auto",
    *,
    cpu: CpuInfo | None = None,
    cuda_available: bool | None = None,
    cuda_bf16: bool | None = None,
    probe: Any = None,
    stream: TextIO | None = None,
) -> Placement:
    """Decide one stage's device and precision (see the module docstring).

    Args:
        device: ``base.device``.
        precision: the stage's ``precision`` setting.
        cpu, cuda_available, cuda_bf16, probe: the machine's answers, for tests; by
            default read from this machine (``probe`` is a function of a
            :class:`CpuInfo` returning :func:`probe_bf16`'s dict).
        stream: where the warning for bf16 on a CPU without it goes (stderr).
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"precision: {precision!r} is not auto, fp32 or bf16")
    dev = resolve_device(device, cuda_available=cuda_available)
    if dev.startswith("cuda"):
        if precision == "fp32":
            return Placement(dev, "fp32", "as configured")
        supported = (torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16)
        if precision == "bf16":
            why = "as configured" + ("" if supported else "; this GPU has no native bf16")
            return Placement(dev, "bf16", why)
        if supported:
            return Placement(dev, "bf16", "GPU with native bf16")
        return Placement(dev, "fp32", "GPU without native bf16")
    info = cpu or cpu_info()
    measure = probe or cached_probe
    native = info.native_bf16()
    isa = info.vector_isa()
    if precision == "fp32":
        return Placement("cpu", "fp32", "as configured")
    if precision == "bf16":
        if native:
            return Placement("cpu", "bf16", f"as configured; native bf16 ({isa})")
        slowdown = float(measure(info)["slowdown"])
        print(f"warning: precision bf16 on a CPU without native bf16 ({isa}): torch emulates "
              f"it, a matmul measured {slowdown:.1f}x slower than fp32 here; set precision: "
              "auto or fp32 unless you mean it", file=stream or sys.stderr, flush=True)
        return Placement("cpu", "bf16", f"as configured; no native bf16 ({isa}), "
                                        f"{slowdown:.1f}x slower measured")
    if native is False:
        return Placement("cpu", "fp32", f"no native bf16 ({isa})")
    slowdown = float(measure(info)["slowdown"])
    source = f"native bf16 ({isa})" if native else "CPU flags unreadable"
    if slowdown <= 1.0:
        return Placement("cpu", "bf16", f"{source}; bf16 matmul {1 / slowdown:.1f}x faster")
    return Placement("cpu", "fp32", f"{source}, but bf16 matmul measured {slowdown:.1f}x slower")


MODEL_STAGES = ("experts", "signals", "evaluation")


def run_placements(config: RunConfig, *, stream: TextIO | None = None, **machine: Any
                   ) -> dict[str, Placement]:
    """Each model stage's placement for a run: ``experts`` (also the evaluation's training),
    ``signals`` and ``evaluation`` (the scoring after each training)."""
    settings = {"experts": config.experts.precision, "signals": config.signals.precision,
                "evaluation": config.evaluation.precision}
    return {stage: resolve(config.base.device, settings[stage], stream=stream, **machine)
            for stage in MODEL_STAGES}


def summary_line(placements: dict[str, Placement]) -> str:
    """``compute: experts cpu fp32 (no native bf16 (avx2)); signals ...``: printed once a run."""
    return "compute: " + "; ".join(f"{stage} {p.describe()}" for stage, p in placements.items())


def to_device(batch: dict[str, torch.Tensor], placement: Placement) -> dict[str, torch.Tensor]:
    """Every tensor of a batch on the placement's device (a no-op on the CPU)."""
    return {k: v.to(placement.torch_device, non_blocking=True) for k, v in batch.items()}


def model_device(model: Any) -> torch.device:
    """The device of a model's first parameter (the CPU for a model without any)."""
    for param in model.parameters():
        return param.device  # type: ignore[no-any-return]
    return torch.device("cpu")


def free_memory(device: str | torch.device) -> None:
    """Return cached GPU memory between models (nothing to do on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def reset_peak_memory(device: str | torch.device) -> None:
    """Start counting a stage's peak GPU memory afresh (nothing to do on the CPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def peak_memory_gib(device: str | torch.device) -> float | None:
    """Peak GPU memory allocated so far on a CUDA device, in GiB (None on the CPU)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    return float(torch.cuda.max_memory_allocated(dev)) / 2**30
