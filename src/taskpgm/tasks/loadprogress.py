"""Progress for task loading that stays silent unless a load takes more than two seconds."""

from __future__ import annotations

import time

from taskpgm.progress import Progress


class LoadProgress:
    """Counts loaded examples; prints ``load NAME: n | rate | elapsed`` lines after 2 s."""

    def __init__(self, task: str, *, after: float = 2.0) -> None:
        self._t0 = time.monotonic()
        self._after = after
        self._pending = 0
        self._quiet = True
        self._progress = Progress(f"load {task}", None, unit="examples", every=5.0)

    def update(self, n: int = 1) -> None:
        self._pending += n
        if self._quiet:
            if (n == 1 and self._pending % 4096) or time.monotonic() - self._t0 < self._after:
                return
            self._quiet = False
        self._progress.update(self._pending)
        self._pending = 0
