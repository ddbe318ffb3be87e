"""The Python API: what ``taskpgm run`` does, as a function, and a finished run as data.

    import taskpgm

    result = taskpgm.run("configs/demo.yaml", out="runs/demo")
    result.weights            # {task: token share} of the chosen method
    result.intervals          # {task: (lo, hi)}: 5-95% over the bootstrap draws, or {}
    result.exports["train"]   # the mixed set; the other keys name each trainer's file
    taskpgm.load_run("runs/demo").counts

Both return a :class:`Run`; ``Run.as_dict()`` is what ``taskpgm run --json`` prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from taskpgm.errors import ConfigError, NotFoundError
from taskpgm.rundir import RunDir

#: Files a finished run's exports may hold, by the name :attr:`Run.exports` gives them,
#: under the run's mixture/ and exports/ folders.
EXPORTS = {"train": (RunDir.MIXTURE, "train.jsonl"), "hf": (RunDir.MIXTURE, "hf"),
           "readme": (RunDir.EXPORTS, "README.md"), "summary": (RunDir.EXPORTS, "mixture.json"),
           "interleave": (RunDir.EXPORTS, "interleave.json"),
           "llamafactory": (RunDir.EXPORTS, "llamafactory/dataset_info.json"),
           "llamafactory_data": (RunDir.EXPORTS, "llamafactory/data.yaml"),
           "axolotl": (RunDir.EXPORTS, "axolotl.yaml"),
           "megatron": (RunDir.EXPORTS, "megatron/mixture.txt"),
           "megatron_blend": (RunDir.EXPORTS, "megatron/blend.txt")}


@dataclass(frozen=True)
class Run:
    """A run directory's results (see docs/design.md for the files)."""

    run_dir: Path
    method: str
    weights: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    counts: dict[str, int]
    exports: dict[str, Path]
    stages: dict[str, dict[str, Any]] = field(repr=False)
    evaluation: list[dict[str, str]] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (paths as strings)."""
        return {"run_dir": str(self.run_dir), "method": self.method, "weights": self.weights,
                "intervals": {t: list(v) for t, v in self.intervals.items()},
                "counts": self.counts,
                "exports": {k: str(v) for k, v in self.exports.items()},
                "stages": {k: bool(v.get("done")) for k, v in self.stages.items()},
                "evaluation": self.evaluation}


def load_run(path: str | Path) -> Run:
    """Read a run directory that ``taskpgm run`` (or :func:`run`) wrote.

    Raises:
        NotFoundError: ``path`` is not a run directory, or its weights are not written yet.
    """
    run_dir = Path(path)
    files = RunDir(run_dir)
    if not files.is_run():
        raise NotFoundError(f"{run_dir} is not a run directory (no {RunDir.CONFIG}); start "
                            "one with `taskpgm run CONFIG` or taskpgm.run(config, out=...)")
    data = files.read_weights()
    if data is None:
        raise NotFoundError(f"{run_dir} has no {RunDir.WEIGHTS} yet: the run stopped before "
                            "its weights stage; run it again to finish")
    intervals = data.get("intervals") or {}
    spans = intervals.get("tasks", {})
    exports = {k: files.file(folder) / rel for k, (folder, rel) in EXPORTS.items()}
    return Run(run_dir=run_dir, method=str(data.get("method")),
               weights={t: float(w) for t, w in data.get("weights", {}).items()},
               intervals={t: (float(s["lo"]), float(s["hi"])) for t, s in spans.items()},
               counts=files.read_counts(),
               exports={k: p for k, p in exports.items() if p.exists()},
               stages=dict(files.read_stages()),  # type: ignore[arg-type]
               evaluation=files.read_evaluation_rows())


def run(config: str | Path | Any, out: str | Path | None = None, *,
        overrides: Sequence[str] = (), until: str = "report",
        stream: TextIO | None = None) -> Run:
    """Run the pipeline (what ``taskpgm run`` does) and return the finished run.

    Args:
        config: a run config file, or a :class:`taskpgm.config.RunConfig`.
        out: the run directory (default ``runs/<config file's stem>``; required with a
            ``RunConfig``).
        overrides: ``KEY=VALUE`` strings, as ``--set`` takes them (with a config file).
        until: the last stage to run (``experts``, ``signals``, …, ``report``); from
            ``weights`` on the result has weights.
        stream: where progress goes (default stderr).
    """
    from taskpgm import config as config_mod
    from taskpgm import pipeline

    if isinstance(config, (str, Path)):
        cfg = config_mod.load(config, overrides)
        out_dir = Path(out) if out is not None else pipeline.default_run_dir(Path(config))
    else:
        if out is None:
            raise ConfigError("taskpgm.run(config, out=...) needs out= when config is a "
                              "RunConfig (there is no file name to name the run after)")
        cfg, out_dir = config, Path(out)
    pipeline.run(cfg, out_dir, stream=stream, until=until)
    return load_run(out_dir)
