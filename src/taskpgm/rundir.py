"""The run directory: every file ``taskpgm run`` writes there, named and read here only.

    RUN/config.yaml               the resolved config
    RUN/stages.json               per stage: done or not, fingerprint, artifact path, seconds
    RUN/weights.json              the chosen method's weights and certificate
    RUN/methods.json              every method's weights, the reference rows, the rho path
    RUN/counts.json               examples of each task in the mixture
    RUN/mixture/, RUN/exports/    the mixed set and each trainer's files (:mod:`taskpgm.exports`)
    RUN/evaluation.csv            one row per (method, seed, task, split)
    RUN/evaluation_summary.json   per (method, split): mean, paired interval against uniform
    RUN/evaluation.md             the same as tables, with what the seeds can show
    RUN/report.html               the report (:mod:`taskpgm.report`)
    RUN/tracking/                 TensorBoard or W&B logs, where tracking is on
    RUN/swarm.json                ``taskpgm swarm``'s mixtures, scores and fidelity

Readers return typed records (:class:`StageRecord`, :class:`MethodsFile`, …) and give
``None`` or an empty record for a file a run has not written yet; writers are atomic.
No other module spells one of these names: the API, the CLI, the report, the stages and
the benchmarks all go through :class:`RunDir`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypedDict, cast

from taskpgm.atomic import write_json, write_text

STAGES = ("tasks", "experts", "signals", "relations", "weights", "mixture", "evaluation",
          "report")

#: The columns of ``evaluation.csv`` (older runs lack ``logprob`` and ``bpb``).
EVALUATION_COLUMNS = ("method", "seed", "task", "split", "accuracy", "logprob", "bpb")


class StageRecord(TypedDict, total=False):
    """One stage's entry of ``stages.json``."""

    done: bool
    seconds: float
    skipped: bool
    fingerprint: str
    fingerprints: dict[str, str]
    path: str
    paths: dict[str, str]
    compute: dict[str, Any]


class MethodRecord(TypedDict, total=False):
    """One method of ``methods.json`` (and the chosen one, as ``weights.json``)."""

    method: str
    weights: dict[str, float]
    rho: float
    energy: float  # MixMin: its loss
    energy_form: str
    certificate: dict[str, Any]
    anchor: float  # with an anchor: λ, and
    kl: float  # KL(weights ‖ prior), and
    objective: float  # energy + λ kl
    kkt_residual: float
    intervals: dict[str, Any]
    selected: list[str]
    untrusted_tasks: list[str]
    fingerprints: dict[str, str]
    compute: dict[str, int]  # solves, models_read, probe_scorings (weights.compute_record)


class RhoPoint(TypedDict):
    """One point of the rho path: the weights (in task order) at ``rho``."""

    rho: float
    weights: list[float]


class AnchorPoint(TypedDict):
    """One point of the anchor path: the weights (in task order) at strength λ, and their
    KL to the prior."""

    strength: float | None  # None (null): λ = ∞, the prior
    weights: list[float]
    kl: float


class MethodsFile(TypedDict, total=False):
    """``methods.json``: every method under the run's caps (the weights artifact)."""

    tasks: list[str]
    chosen: str
    methods: dict[str, MethodRecord]
    reference: dict[str, Any]
    rho_path: list[RhoPoint]  # empty for MixMin, which has no rho
    caps: list[float]
    relations: str
    fingerprint: str
    prior: dict[str, Any]  # the anchor's prior: its name and weights (task order)
    anchor: dict[str, Any]  # with an anchor: prior, strength, prior_weights
    anchor_path: list[AnchorPoint]  # with an anchor: 0, 1e-4 .. 1e2, then null (the prior)


class RunDir:
    """A run directory: its paths, and a typed reader and an atomic writer per file."""

    CONFIG = "config.yaml"
    STAGES_FILE = "stages.json"
    WEIGHTS = "weights.json"
    METHODS = "methods.json"
    COUNTS = "counts.json"
    EVALUATION_CSV = "evaluation.csv"
    EVALUATION_SUMMARY = "evaluation_summary.json"
    EVALUATION_MD = "evaluation.md"
    REPORT = "report.html"
    MIXTURE = "mixture"
    EXPORTS = "exports"
    TRACKING = "tracking"
    SWARM = "swarm.json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """The path of one of the names above (``RunDir.METHODS``, …)."""
        return self.path / name

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def report_path(self) -> Path:
        return self.path / self.REPORT

    @property
    def mixture_dir(self) -> Path:
        return self.path / self.MIXTURE

    @property
    def exports_dir(self) -> Path:
        return self.path / self.EXPORTS

    @property
    def tracking_dir(self) -> Path:
        return self.path / self.TRACKING

    def is_run(self) -> bool:
        """Whether a run wrote its config here (its first file)."""
        return self.config_path.is_file()

    # ------------------------------------------------------------------------ readers
    def _json(self, name: str) -> Any:
        try:
            return json.loads((self.path / name).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def read_config(self) -> dict[str, Any]:
        """The resolved config as plain data ({} before a run wrote it)."""
        import yaml

        try:
            data = yaml.safe_load(self.config_path.read_text())
        except FileNotFoundError:
            return {}
        return data if isinstance(data, dict) else {}

    def read_stages(self) -> dict[str, StageRecord]:
        """``stages.json`` ({} when the run never started)."""
        data = self._json(self.STAGES_FILE)
        return cast(dict[str, StageRecord], data) if isinstance(data, dict) else {}

    def read_weights(self) -> MethodRecord | None:
        """The chosen method's record, or None before the weights stage."""
        data = self._json(self.WEIGHTS)
        return cast(MethodRecord, data) if isinstance(data, dict) else None

    def read_methods(self) -> MethodsFile:
        """``methods.json`` ({} before the weights stage)."""
        data = self._json(self.METHODS)
        return cast(MethodsFile, data) if isinstance(data, dict) else {}

    def read_counts(self) -> dict[str, int]:
        """Examples per task of the written mixture ({} before the mixture stage)."""
        data = self._json(self.COUNTS)
        return {t: int(c) for t, c in data.items()} if isinstance(data, dict) else {}

    def has_evaluation(self) -> bool:
        return (self.path / self.EVALUATION_CSV).is_file()

    def read_evaluation_rows(self) -> list[dict[str, str]]:
        """``evaluation.csv`` as text rows ([] before the evaluation)."""
        try:
            with (self.path / self.EVALUATION_CSV).open(newline="") as f:
                return list(csv.DictReader(f))
        except FileNotFoundError:
            return []

    def read_evaluation_summary(self) -> list[dict[str, Any]]:
        data = self._json(self.EVALUATION_SUMMARY)
        return data if isinstance(data, list) else []

    def read_evaluation_markdown(self) -> str | None:
        try:
            return (self.path / self.EVALUATION_MD).read_text()
        except FileNotFoundError:
            return None

    # ------------------------------------------------------------------------ writers
    def write_config(self, data: Mapping[str, Any]) -> None:
        import yaml

        write_text(self.config_path, yaml.safe_dump(dict(data), sort_keys=False))

    def write_stages(self, stages: Mapping[str, Mapping[str, Any]]) -> None:
        """Every stage in order, ``{"done": false}`` for those not recorded."""
        write_json(self.path / self.STAGES_FILE,
                   {s: dict(stages.get(s, {"done": False})) for s in STAGES})

    def write_weights(self, record: Mapping[str, Any]) -> None:
        write_json(self.path / self.WEIGHTS, dict(record))

    def write_methods(self, methods: Mapping[str, Any]) -> None:
        write_json(self.path / self.METHODS, dict(methods))

    def write_counts(self, counts: Mapping[str, int]) -> None:
        write_json(self.path / self.COUNTS, dict(counts))

    def write_evaluation(self, rows: Sequence[Mapping[str, Any]],
                         summary: Sequence[Mapping[str, Any]], markdown: str) -> None:
        """``evaluation.csv`` (the columns above), its summary and its Markdown."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(EVALUATION_COLUMNS), extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.path / self.EVALUATION_CSV, buf.getvalue())
        write_json(self.path / self.EVALUATION_SUMMARY, list(summary))
        write_text(self.path / self.EVALUATION_MD, markdown)


__all__ = ["EVALUATION_COLUMNS", "STAGES", "MethodRecord", "MethodsFile", "RhoPoint", "RunDir",
           "StageRecord"]
