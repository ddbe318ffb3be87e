"""Where a stage runs and in what precision: a plain record the model-free code can hold
(the cluster backend, the fingerprints, the plan) without importing torch; the choice
itself is :func:`taskpgm.device.resolve`'s."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class Placement:
    """A stage's device and precision, and why they were chosen.

    Attributes:
        device: a torch device string (``"cpu"``, ``"cuda:0"``).
        precision: ``"fp32"`` or ``"bf16"`` (autocast; weights stay float32).
        why: one line a user can read (``"no native bf16 (avx2)"``).
    """

    device: str = "cpu"
    precision: Precision = "fp32"
    why: str = "default"

    @property
    def torch_device(self) -> torch.device:
        import torch

        return torch.device(self.device)

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast`` on this device type, enabled only for bf16."""
        import torch

        return torch.autocast(self.torch_device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.device} {self.precision} ({self.why})"
