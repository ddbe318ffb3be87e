"""Experiment tracking: training curves and the final weights, for TensorBoard.

``tracking.report_to: tensorboard`` writes TensorBoard event files (through tensorboardX,
``pip install taskpgm[tracking]``; no server, no network) under ``tracking.log_dir``
(default ``RUN/tracking``):

    experts/<task>/         loss, lr and tokens_per_second per step of each expert
    evaluation/<training>/  the same for each evaluation training of the run
    weights/                the chosen method's weight of each task, as scalars and a table

Curves are written when a stage finishes, from the per-step logs each training keeps
(``training_log.json`` in its artifact), so experts reused from the cache are logged too.
``tensorboard --logdir RUN/tracking`` shows them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskpgm.errors import ConfigError

REPORTERS = ("none", "tensorboard")


def _writer(folder: Path) -> Any:
    try:
        from tensorboardX import SummaryWriter
    except ImportError as err:
        raise ConfigError("tracking.report_to: tensorboard needs tensorboardX: pip install "
                          "'taskpgm[tracking]' (or set tracking.report_to: none)") from err
    folder.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(logdir=str(folder))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "run"


class Tracker:
    """Writes what a run trained and chose; a no-op for ``report_to: none``."""

    def __init__(self, report_to: str, log_dir: Path) -> None:
        if report_to not in REPORTERS:
            raise ConfigError(f"tracking.report_to: {report_to!r} is not one of "
                              f"{', '.join(REPORTERS)}")
        self.enabled = report_to != "none"
        self.log_dir = Path(log_dir)
        if self.enabled:
            _writer(self.log_dir).close()  # a missing tensorboardX fails before any work

    def training(self, group: str, name: str, steps_log: Sequence[Mapping[str, Any]]) -> None:
        """One training's curve: loss, lr and tokens/s at each step."""
        if not self.enabled or not steps_log:
            return
        writer = _writer(self.log_dir / group / _safe(name))
        previous = 0.0
        for entry in steps_log:
            step = int(entry["step"])
            writer.add_scalar("loss", float(entry["loss"]), step)
            writer.add_scalar("lr", float(entry["lr"]), step)
            seconds = float(entry.get("seconds", 0.0))
            if seconds > previous and "tokens" in entry:
                rate = float(entry["tokens"]) / (seconds - previous)
                writer.add_scalar("tokens_per_second", rate, step)
            previous = seconds
        writer.close()

    def training_file(self, group: str, name: str, path: Path) -> None:
        """A training from its ``training_log.json`` (absent: nothing to log)."""
        if self.enabled and path.is_file():
            self.training(group, name, json.loads(path.read_text()).get("steps_log", []))

    def weights(self, method: str, weights: Mapping[str, float]) -> None:
        """The run's final weights: one scalar per task and a Markdown table."""
        if not self.enabled:
            return
        writer = _writer(self.log_dir / "weights")
        for task, w in weights.items():
            writer.add_scalar(f"weight/{_safe(task)}", float(w), 0)
        table = "| task | weight |\n|---|---|\n" + "\n".join(
            f"| {t} | {w:.4f} |" for t, w in sorted(weights.items(), key=lambda kv: -kv[1]))
        writer.add_text("weights", f"method `{method}`\n\n{table}", 0)
        writer.close()
