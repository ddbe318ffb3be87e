"""Progress lines for long work: stage, counts, rate and ETA, on stderr.

Kept deliberately plain (one line per update, rate-limited) so logs written by
``nohup`` stay readable and tests can read them.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    """``75.0 -> '1m15s'``; ``3700 -> '1h01m'``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def say(text: str, stream: TextIO | None = None) -> None:
    """Print one line of what is happening to ``stream`` (default: stderr), flushed."""
    print(text, file=stream or sys.stderr, flush=True)


class Progress:
    """Counts finished units of a stage and prints ``stage: done/total (rate, ETA) note``.

    Args:
        stage: what is being done, e.g. ``"expert 3/8 hyperbaton"``.
        total: number of units (steps, examples, experts); ``None`` if unknown.
        unit: name of a unit, for the rate.
        every: minimum seconds between two printed lines (the last update always prints).
        stream: where to print; ``None`` means stderr.
    """

    def __init__(
        self,
        stage: str,
        total: int | None,
        *,
        unit: str = "it",
        every: float = 2.0,
        stream: TextIO | None = None,
        start: int = 0,
    ) -> None:
        self.stage = stage
        self.total = total
        self.unit = unit
        self.every = every
        self.stream = stream
        self.done = start
        self._start_count = start
        self._t0 = time.monotonic()
        self._last = -float("inf")

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if finished or now - self._last >= self.every:
            self._last = now
            say(self.line(note), self.stream)

    def line(self, note: str = "") -> str:
        elapsed = time.monotonic() - self._t0
        new = self.done - self._start_count
        rate = new / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.stage}: {self.done}" + (f"/{self.total}" if self.total else "")]
        if rate > 0:
            parts.append(f"{rate:.2f} {self.unit}/s")
            if self.total is not None:
                parts.append(f"ETA {format_seconds((self.total - self.done) / rate)}")
        parts.append(f"elapsed {format_seconds(elapsed)}")
        text = " | ".join(parts)
        return f"{text} | {note}" if note else text
