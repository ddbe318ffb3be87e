"""The run configuration: one YAML file read into typed models that reject unknown keys.

Each stage owns one section (``base``, ``tasks``, ``experts``, ``signals``; later
stages add theirs as new fields of :class:`RunConfig`). Every field's description
says its trade-off and each section's docstring what it is for:
:func:`config_reference` renders them as the Markdown reference of every key
(docs/config.md, ``taskpgm config show --doc``). All validation errors of a file
are collected and reported together, each with its YAML line and what to change.

A minimal file::

    tasks:
      names: [bigbench:hyperbaton, bigbench:navigate]
      splits: {probe: 100, eval: 200, max_train: 2000}
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from taskpgm.errors import ConfigError, NotFoundError
from taskpgm.tasks.collection import TaskEntry
from taskpgm.tasks.splits import SplitOptions
from taskpgm.textfile import read_utf8
from taskpgm.yamlio import read_yaml

#: A task given by its spec alone: not empty, no NUL byte.
TaskSpec = Annotated[str, StringConstraints(min_length=1, pattern=r"^[^\x00]*$")]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors (a typo fails loudly)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True,
                              allow_inf_nan=False)  # .inf or .nan: "should be a finite number"


class BaseModelConfig(Section):
    """Which base model every expert is fine-tuned from."""

    model: str = Field(
        default="smollm2-135m",
        description="A known name (smollm2-135m: 135M parameters, runs on 2 CPU cores), a local "
                    "checkpoint directory, a .gguf file or a Hugging Face id. Bigger models "
                    "learn more tasks, but every expert and every scoring pass costs "
                    "proportionally more.")
    trust_remote_code: StrictBool = Field(
        default=False,
        description="Run Python code shipped with the checkpoint, which some architectures "
                    "need. It executes the checkpoint author's code, so it is off unless you "
                    "trust them.")
    threads: int | None = Field(
        default=None, ge=1,
        description="torch CPU threads; null: torch's default (all cores). Lower it to share "
                    "a machine.")
    device: str = Field(
        default="auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$",
        description="Where every model runs: auto (the first CUDA GPU if torch sees one, else "
                    "the CPU), cpu, cuda or cuda:N. Results do not depend on it beyond float "
                    "rounding, so it is part of no fingerprint (see taskpgm.device).")
    frozen_cache_mb: int = Field(
        default=1024, ge=0,
        description="Memory (MiB) for the base's hidden states at the first adapted layer "
                    "(with experts.layers set): computed once per scored example and reused "
                    "by the base, every expert and every evaluation training, which then run "
                    "only the adapted layers (taskpgm.frozen). Same numbers within float "
                    "rounding, so it is part of no fingerprint; 0 turns it off.")


class TasksConfig(Section):
    """Which tasks enter the mixture and how each is split (see :mod:`taskpgm.tasks`)."""

    names: list[TaskEntry | TaskSpec] = Field(
        default_factory=list,
        description="Task specs (bigbench:hyperbaton, bigbench:arithmetic/2_digit_addition, a "
                    "file path) or entries {spec, name, mapping, template, max_examples, "
                    "corrupt_train} "
                    "(docs/tasks.md). Each gets an expert: cost grows linearly with their "
                    "number, the relations quadratically.")
    splits: SplitOptions = Field(
        default_factory=lambda: SplitOptions(max_train=2000),
        description="Every model is scored on every probe example: more probe examples tighten "
                    "the relations but cost (tasks + 1) × tasks × probe scoring passes. "
                    "max_train caps what an expert can see (it sees steps × batch_size).")


class ExpertsConfig(Section):
    """How each task's LoRA expert is trained (defaults measured on the embedded model)."""

    rank: int = Field(
        default=8, ge=1,
        description="LoRA rank: higher fits more of the task but trains slower and overfits "
                    "small tasks.")
    alpha: float = Field(
        default=16.0, gt=0,
        description="LoRA alpha: the update is scaled by alpha / rank; 2 × rank is the usual "
                    "choice.")
    dropout: float = Field(
        default=0.0, ge=0, lt=1,
        description="Dropout on the LoRA input; above 0 it regularizes but makes runs depend "
                    "on the RNG stream.")
    target_modules: tuple[str, ...] = Field(
        default=("q_proj", "k_proj", "v_proj", "o_proj"),
        description="Modules that get adapters. Attention projections only is cheap; adding "
                    "the MLP (gate_proj, up_proj, down_proj) learns more per step at about 2× "
                    "the adapter cost.")
    layers: int | None = Field(
        default=None, ge=1,
        description="Adapters only in the last N decoder layers (null: every layer); the "
                    "backward pass then stops at the lowest adapted layer. On the embedded "
                    "model, LoRA in the top 15 of 30 layers made an fp32 step 1.6x faster "
                    "(docs/experts.md), but fewer layers learn less.")
    lr: float = Field(
        default=3e-3, gt=0,
        description="Peak learning rate: 3e-3 learns the default tasks in about 100 steps; at "
                    "1e-4 the experts barely move in that budget, and much higher diverges.")
    steps: int | None = Field(
        default=100, ge=1,
        description="Optimizer steps per expert (null: use epochs). Time per expert grows "
                    "linearly with it.")
    epochs: float = Field(
        default=1.0, gt=0,
        description="Passes over the training set when steps is null.")
    batch_size: int = Field(
        default=16, ge=1,
        description="Examples per step: larger is smoother and faster per example, slower per "
                    "step.")
    max_length: int = Field(
        default=256, ge=8,
        description="Token cap per example (the prompt is cut from the left, the answer "
                    "never).")
    warmup_steps: int = Field(
        default=10, ge=1,
        description="Linear warm-up steps, then linear decay to min_lr_ratio × lr.")
    min_lr_ratio: float = Field(
        default=0.1, ge=0, le=1,
        description="Where the linear decay after warm-up ends, as a share of lr (0: decay to "
                    "zero, 1: a constant rate after warm-up).")
    weight_decay: float = Field(
        default=0.0, ge=0,
        description="AdamW weight decay on the adapter weights.")
    max_grad_norm: float = Field(
        default=1.0, ge=0,
        description="Gradient-norm clip (0: off): guards the high learning rate against "
                    "spikes.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Training precision: auto (bf16 autocast where the hardware runs bf16 "
                    "natively: a GPU that supports it or a CPU with avx512_bf16/amx; fp32 "
                    "elsewhere), fp32 or bf16; weights and optimizer stay float32. bf16 "
                    "trained 1.55x faster on an avx512_bf16 CPU but is about 100x slower "
                    "emulated on an AVX2-only CPU, and a bf16 expert is a different artifact "
                    "from an fp32 one (the resolved precision is in its fingerprint).")
    seed: int = Field(
        default=0,
        description="Seed of LoRA initialization and batch order: same seed, same adapter.")
    checkpoint_every: int = Field(
        default=20, ge=1,
        description="Save adapter and optimizer state every N steps: smaller loses less work "
                    "on a kill; each save costs about 0.1 s.")
    import_: dict[str, str] = Field(
        default_factory=dict, alias="import",
        description="Use existing adapters instead of training: {task: directory with "
                    "adapter_config.json and adapter_model.safetensors}. Checked against the "
                    "base model's shapes.")


class SignalsConfig(Section):
    """How every model is scored on the probe set."""

    top_k: int = Field(
        default=32, ge=1,
        description="Top-k kept of the next-token distribution at each generative answer "
                    "position, plus one tail bucket. Larger k: a tighter JSD lower bound, "
                    "bigger shards.")
    batch_size: int = Field(
        default=16, ge=1,
        description="Examples per forward pass (all their choices share the prompt's KV "
                    "cache). Larger is faster until memory runs out; 16 keeps peak memory "
                    "under 4 GB at 135M.")
    max_length: int = Field(
        default=512, ge=8,
        description="Token cap per prompt + answer (the prompt is cut from the left).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="fp32",
        description="Scoring precision (see experts.precision). fp32 by default so the signals "
                    "are exact float32 numbers: bf16 autocast scored 1.66x faster on an "
                    "avx512_bf16 CPU with the same best choice, but moved log-likelihoods by "
                    "up to 0.22 nats.")
    probe_total: int | None = Field(
        default=None, ge=1,
        description="Score a stratified sample of this many probe examples in all, so scoring "
                    "costs (T + 1) · probe_total instead of (T + 1) · Σ_t P_t; null: every "
                    "task's whole probe split. docs/design.md has the rule for large T.")
    probe_floor: int = Field(
        default=8, ge=1,
        description="With probe_total, each task keeps at least this many probe examples (or "
                    "all it has); the rest is shared in proportion to the probe splits.")


BaselineName = Literal["uniform", "size", "temperature", "reference", "mixmin"]
BASELINES: tuple[BaselineName, ...] = ("uniform", "size", "temperature", "reference", "mixmin")
#: The baselines a config that names none gets (MixMin is opt-in: no default changes
#: until the benchmark chooses on dev).
DEFAULT_BASELINES: tuple[BaselineName, ...] = ("uniform", "size", "temperature", "reference")


class RelationsConfig(Section):
    """How signals become the affinity S (docs/design.md)."""

    alpha: float = Field(
        default=0.5, ge=0, le=1,
        description="Weight of the behaviour kernel against the squashed transfer PMI: 1 = only "
                    "how the experts moved the base's predictions, 0 = only how much they "
                    "raise each other's answers.")
    kernel: Literal["displacement", "jsd"] = Field(
        default="displacement",
        description="Behaviour kernel: displacement (cosine of the experts' moves away from "
                    "the base; robust to how far each moved) or jsd (exp(-JSD/sigma) on the "
                    "raw JSD between experts).")
    pmi_form: Literal["symmetric", "pairwise"] = Field(
        default="symmetric",
        description="Transfer term: symmetric (1/2 (PMI + PMI^T)) or pairwise (the reference "
                    "code's form).")
    normalization: Literal["plain", "length"] = Field(
        default="length",
        description="Choice distribution of multiple-choice examples: length divides each "
                    "choice's log-likelihood by its tokens (removes the base model's bias "
                    "towards short choices), plain uses the summed log-likelihood.")
    bootstrap: int = Field(
        default=200, ge=0,
        description="Bootstrap draws of the probe set for intervals on the weights; 0 turns "
                    "them off. Each draw resamples bootstrap_blocks stratified blocks of the "
                    "probe set, whose JSD sums the main pass keeps: B small solves and B "
                    "affinities, no second pass and no model.")
    bootstrap_blocks: int = Field(
        default=64, ge=2,
        description="Stratified blocks of the probe set the bootstrap resamples: more blocks "
                    "come closer to resampling single examples (the draws' variance is "
                    "(K-1)/K of it) and cost 4 bytes per model pair and block.")
    precision: Literal["float64", "float32"] = Field(
        default="float64",
        description="Arithmetic of the JSD pass: float64 is exact to rounding; float32 is "
                    "about 1.9x faster (for T in the thousands), with a relative error near "
                    "1e-7 on the JSD matrix, but an expert within about 1e-8 of the base "
                    "no longer reads as equal to it.")


#: Per energy, the rho and untrusted policy a config that names the energy but not them
#: gets. The default energy (MrfConfig.energy: the paper's reference setting, rho 0.2, every
#: expert trusted) is the variant the mixture-quality benchmark chose on its dev split
#: (docs/results-2026-12-01.md, "Shipped default"); the other energies keep the settings they had.
ENERGY_DEFAULTS: dict[str, dict[str, Any]] = {
    "reference": {"rho": 0.2, "untrusted": "keep"},
    "mixmin": {"rho": 0.0, "untrusted": "exclude"},
    "affinity": {"rho": 0.0, "untrusted": "exclude"},
    "split": {"rho": 0.0, "untrusted": "exclude"},
    "gain-model": {"rho": 0.0, "untrusted": "exclude"},
}


def _per_energy(key: str) -> str:
    """``key``'s column of ENERGY_DEFAULTS in words (``0.2 for reference, 0.0 for split and
    affinity``), for the field's description."""
    by_value: dict[Any, list[str]] = {}
    for energy, row in ENERGY_DEFAULTS.items():
        by_value.setdefault(row[key], []).append(energy)
    words = [", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
             for names in by_value.values()]
    return ", ".join(f"{value} for {w}" for value, w in zip(by_value, words, strict=True))


class AnchorConfig(Section):
    """A KL anchor on the weights: minimize E(p) + strength * KL(p || prior)."""

    prior: str = Field(
        default="uniform", min_length=1,
        description="The mixture to stay near: uniform, size (proportional to the train "
                    "splits), temperature (size^(1/tau), evaluation.temperature), or the path "
                    "of a JSON file {task: weight} naming every task (normalized to sum 1).")
    strength: float = Field(
        default=0.0, ge=0,
        description="lambda: 0 is the plain energy (no anchor), larger keeps the weights "
                    "nearer the prior (infinity: the prior itself); on the scale of the energy, "
                    "so compare values along `taskpgm solve RUN --anchor-path`. Strictly "
                    "convex for any lambda > 0; not with mrf.budget.")


class MrfConfig(Section):
    """The energy E(p) = 1/2 p^T S p - rho u^T p and its constraints."""

    @model_validator(mode="before")
    @classmethod
    def _energy_defaults(cls, data: Any) -> Any:
        """rho and untrusted, where not given, from the energy's row of ENERGY_DEFAULTS."""
        if not isinstance(data, dict):
            return data
        row = ENERGY_DEFAULTS.get(data.get("energy", cls.model_fields["energy"].default))
        return {**(row or {}), **data}

    rho: float = Field(
        default=0.2, ge=0,
        description="rho = beta / lambda: 0 gives the most diverse mixture (the least "
                    "redundant tasks), larger values pull towards the utility; with the "
                    "representativeness utility, rho = 1/T is uniform whenever the optimum is "
                    f"interior. Not given: the energy's default ({_per_energy('rho')}).")
    utility: Literal["representativeness", "transfer", "gain"] = Field(
        default="representativeness",
        description="Utility u: representativeness (S 1, tasks that stand for many), transfer "
                    "(how much an expert helps the other tasks) or gain (how much a task's own "
                    "expert learned).")
    energy: Literal["affinity", "split", "gain-model", "reference", "mixmin"] = Field(
        default="reference",
        description="affinity (1/2 p^T S p - rho u^T p with the utility above), split (1/2 "
                    "p^T R p - rho t^T p: R the redundancy exp(-JSD/sigma), never rewarding "
                    "the mixing of tasks that interfere; t the signed benefit of a task's "
                    "data, in units of the mean self-gain), gain-model (R and t from a "
                    "second-order expansion of the mixture's total gain; rho = 1 is its own "
                    "trade-off) or reference (the paper's setting: its pairwise PMI, its PSD "
                    "shift, u = S 1; the default, chosen on dev by the mixture-quality "
                    "benchmark), or mixmin (not an energy: MixMin's loss, the mean over tasks "
                    "of -log sum_i p_i P_i(gold | x) on the probe items, P_i expert i's "
                    "choice distribution; rho does not apply). See docs/design.md, \"The split "
                    "energy\" and \"MixMin\", and docs/results-2026-12-01.md, \"Shipped default\".")
    target: list[TaskEntry | TaskSpec] = Field(
        default_factory=list,
        description="Target mode: tasks you care about that are not in the pool (task specs, "
                    "like tasks.names), whose probe examples every model also scores; the "
                    "linear term becomes each expert's transfer onto them (in units of the "
                    "mean self-gain) while the quadratic term stays. A target must not be a "
                    "pool task and must have probe examples, and the energy must not be "
                    "reference.")
    budget: int | None = Field(
        default=None, ge=1,
        description="At most this many tasks get weight (greedy selection, exact weights); "
                    "null: no limit.")
    untrusted: Literal["exclude", "uniform", "keep"] = Field(
        default="keep",
        description="Tasks whose expert did not beat the base model on its own probe (Wilson "
                    "95% lower bound of the expert's accuracy at or below the base's): exclude "
                    "gives them nothing, uniform holds them at the uniform share 1/T and "
                    "solves for the rest, keep trusts them anyway; with a budget they are "
                    "never selected. Not given: the energy's default "
                    f"({_per_energy('untrusted')}; the paper trusts every expert).")
    max_repeat: float = Field(
        default=4.0, gt=0,
        description="No task's training split may be repeated more than this many times in "
                    "the mixture; with the token budget this caps each weight (the caps enter "
                    "the solve).")
    anchor: AnchorConfig = Field(
        default_factory=AnchorConfig,
        description="The KL anchor (strength 0: none); see docs/design.md, \"The KL anchor\".")

    @model_validator(mode="after")
    def _anchor_without_budget(self) -> MrfConfig:
        if self.budget is not None and self.anchor.strength > 0:
            raise ValueError("mrf.anchor.strength > 0 and mrf.budget do not combine: the anchor "
                             "keeps every task the prior weighs above zero, the budget at most "
                             "k; drop one of them")
        if self.budget is not None and self.energy == "mixmin":
            raise ValueError("mrf.budget does not apply to mrf.energy: mixmin; drop the budget "
                             "or choose another energy")
        return self


class MixtureConfig(Section):
    """The mixed training set that realizes the weights."""

    token_budget: int = Field(
        default=60_000, ge=1,
        description="Total tokens (prompt + answer) of the mixed set. Every method gets the "
                    "same budget and the evaluation trains one epoch over it, so time grows "
                    "linearly with it.")
    seed: int = Field(
        default=0,
        description="Seed of the mixture draw (which examples, in which order).")
    sampler: Literal["crn", "crn-keyed", "independent"] = Field(
        default="crn-keyed",
        description="crn-keyed (the default, chosen by the variance pilot of "
                    "docs/benchmarks.md: its A/A pairs are 1.6x less noisy than crn's): the crn "
                    "draw with each training batch a fixed range of keys, so two mixtures share "
                    "every batch their examples share (batches are not grouped by length: more "
                    "padding, slower training). "
                    "crn (common random numbers): each task's examples get one fixed order and "
                    "each example one position key from (seed, task, example id) alone, so "
                    "two mixtures at one seed share every example their counts share, in the "
                    "same order, and a paired comparison measures the weights, not the draw; "
                    "its batches are regrouped by length within windows. independent: the "
                    "draw before sampler version 2, kept only to reproduce older results "
                    "(far noisier pairs).")


class EvaluationConfig(Section):
    """Train on each mixture with the same budget and score held-out data."""

    enabled: StrictBool = Field(
        default=True,
        description="Run the evaluation stage at all (it trains one adapter per method and "
                    "seed).")
    baselines: list[BaselineName] = Field(
        default_factory=lambda: list(DEFAULT_BASELINES),
        description="Baselines beside TaskPGM: uniform, size (proportional to train size), "
                    "temperature (p proportional to n^(1/tau)), reference (the paper's "
                    "setting at its rho 0.2, solved exactly) and, named only, mixmin (MixMin "
                    "from the experts' probe predictions, untrusted experts as "
                    "mrf.untrusted). All are brought under the same caps.")
    temperature: float = Field(
        default=2.0, gt=0,
        description="tau of the temperature baseline: 1 = size-proportional, large = "
                    "uniform.")
    seeds: list[int] = Field(
        default_factory=lambda: [0],
        description="Seeds (mixture draw, LoRA initialization, data order), paired across "
                    "methods: the unit of replication for intervals. 5+ for a comparison.")
    heldout: list[TaskEntry | TaskSpec] = Field(
        default_factory=list,
        description="Tasks scored but never in the mixture (task specs, like tasks.names).")
    mmlu: list[str] = Field(
        default_factory=list,
        description="MMLU subjects scored too (mmlu:anatomy, ...): knowledge a small model "
                    "mostly lacks.")
    max_eval: int = Field(
        default=200, ge=1,
        description="At most this many eval examples per task (eval splits and held-out "
                    "tasks).")
    test_share: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description="Share of each mixture task's eval examples held out as test (the final "
                    "table only); the rest is dev (every choice: budget, rho, energy, policy), "
                    "and 0 keeps one eval split. The cut is by a hash of the example ids, so "
                    "it is the same on every run.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Precision of scoring the trained models (training uses "
                    "experts.precision). Accuracy needs only the best choice, which bf16 kept "
                    "on every example checked, so auto uses bf16 where the hardware runs it "
                    "natively.")


class ReportConfig(Section):
    """The HTML report."""

    enabled: StrictBool = Field(
        default=True,
        description="Render report.html at the end of the run.")
    rho_path_points: int = Field(
        default=25, ge=2,
        description="Points on the rho path (weights along rho from 0 to 2/T) drawn in the "
                    "report.")


class TrackingConfig(Section):
    """Experiment tracking (taskpgm.tracking): curves and weights for TensorBoard."""

    report_to: Literal["none", "tensorboard"] = Field(
        default="none",
        description="none, or tensorboard (event files through tensorboardX: pip install "
                    "taskpgm[tracking]).")
    log_dir: str | None = Field(
        default=None,
        description="Where the event files go; null: RUN/tracking. A relative path is "
                    "relative to the config file.")


class ExecutionConfig(Section):
    """Where the expensive, independent jobs run: one expert per task, one scoring pass per
    model (taskpgm.cluster)."""

    backend: Literal["local", "ray"] = Field(
        default="local",
        description="local: in this process, one job after another. ray: each missing expert "
                    "is a Ray task and scoring runs in actors that keep the base model loaded "
                    "(pip install taskpgm[cluster]); the artifact cache (output_dir or "
                    "`$TASKPGM_HOME`) must then be on a filesystem every node sees (NFS, "
                    "Lustre, ...), because jobs return paths into it.")
    address: str | None = Field(
        default=None, pattern=r"^(auto|[A-Za-z0-9_.\-\[\]:]+:\d+)$",
        description="The Ray cluster: null starts a private one on this machine; auto joins "
                    "the one `ray start` made here (or `$RAY_ADDRESS`); HOST:PORT joins that "
                    "head node.")
    cpus_per_job: float = Field(
        default=1.0, gt=0,
        description="CPUs each job asks Ray for; the job's torch threads follow it unless "
                    "base.threads is set. Thread counts change float rounding, so set "
                    "base.threads for results bit-identical to a local run.")
    gpus_per_job: float = Field(
        default=0.0, ge=0,
        description="GPUs each job asks Ray for; above 0 runs the jobs on GPUs.")
    max_retries: int = Field(
        default=3, ge=0,
        description="How often Ray retries a job whose worker died (a node lost, a process "
                    "killed); the retry resumes its expert from the last checkpoint in the "
                    "shared cache.")


class RunConfig(Section):
    """A whole run: one section per stage."""

    base: BaseModelConfig = BaseModelConfig()
    tasks: TasksConfig = TasksConfig()
    experts: ExpertsConfig = ExpertsConfig()
    signals: SignalsConfig = SignalsConfig()
    relations: RelationsConfig = RelationsConfig()
    mrf: MrfConfig = MrfConfig()
    mixture: MixtureConfig = MixtureConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    report: ReportConfig = ReportConfig()
    tracking: TrackingConfig = TrackingConfig()
    execution: ExecutionConfig = ExecutionConfig()
    output_dir: str | None = Field(
        default=None,
        description="Where stage artifacts go; null: `$TASKPGM_HOME/artifacts`. A relative "
                    "path is relative to the config file.")

    @field_validator("output_dir")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a directory path or omitted")
        if value is not None and "\x00" in value:
            raise ValueError("contains a NUL byte, which no path can hold")
        return value

    @property
    def artifact_root(self) -> Path | None:
        """The artifact cache's root: output_dir, or None for $TASKPGM_HOME/artifacts."""
        return Path(self.output_dir) if self.output_dir else None

    @model_validator(mode="after")
    def _target_not_in_pool(self) -> RunConfig:
        def spec(entry: TaskEntry | str) -> str:
            return entry if isinstance(entry, str) else entry.spec

        both = sorted({spec(e) for e in self.mrf.target} & {spec(e) for e in self.tasks.names})
        if both:
            raise ValueError(f"mrf.target names pool tasks {both}: a target is a task you "
                             "care about that is not trained on; remove it from one list")
        if self.mrf.target and self.mrf.energy == "reference":
            raise ValueError("mrf.target does not apply to mrf.energy: reference (the "
                             "default; the paper's setting has no target); set mrf.energy: "
                             "split, affinity or gain-model")
        return self


# The help of SplitOptions' fields (tasks.splits): they are declared in taskpgm.tasks.splits
# with comments, not descriptions, so the reference takes their help from here until they
# carry descriptions of their own (a field's own description wins).
_HELP_ELSEWHERE: dict[type[BaseModel], dict[str, str]] = {
    SplitOptions: {
        "probe": "Probe examples per task; every expert is scored on all of them, so cost "
                 "grows with T × probe.",
        "eval": "Held-out examples per task for the final accuracy; more gives tighter "
                "intervals.",
        "max_train": "Cap on train examples per task (null: keep all); bounds memory on huge "
                     "tasks.",
        "seed": "Seed of the split; change it to draw other splits of the same data.",
        "shrink": "With counts, a task with fewer than 2 × (probe + eval) examples gets "
                  "proportionally smaller probe / eval splits so half of it stays for "
                  "training. false: the exact sizes or an error.",
    },
}

REFERENCE_COMMAND = "taskpgm config show --doc > docs/config.md"


@dataclass(frozen=True)
class ConfigKey:
    """One key of the reference: its dotted name (as ``--set`` takes it), its type in YAML
    words (``int | null``), its bounds (``≥ 1``), the regex a string must match, its default
    as YAML and its help."""

    key: str
    type: str
    bounds: tuple[str, ...]
    pattern: str | None
    default: str
    help: str


@dataclass(frozen=True)
class ConfigSection:
    """One section of the reference: its dotted name ('' for the top level) and its keys."""

    name: str
    help: str
    keys: list[ConfigKey]


def _type_text(annotation: Any) -> str:
    """A field's type in YAML words: ``int | null``, ``auto | fp32 | bf16``, ``list[str]``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Ellipsis:
        return "..."
    if origin is Annotated:
        return _type_text(args[0])
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin in (Union, UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_text(a) for a in args)}]"
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _bounds(field: FieldInfo) -> tuple[str, ...]:
    """A field's numeric bounds: ``("≥ 0", "< 1")``."""
    return tuple(f"{sign} {getattr(item, attr)}" for item in field.metadata
                 for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
                 if getattr(item, attr, None) is not None)


def _pattern(field: FieldInfo) -> str | None:
    """The regex a string field must match, if any."""
    return next((item.pattern for item in field.metadata if getattr(item, "pattern", None)),
                None)


def _yaml_value(value: Any) -> str:
    """``value`` as one line of YAML, the way a config file would write it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000)
    return text.removesuffix("...\n").strip()


def _doc(model: type[BaseModel]) -> str:
    """The model's own docstring on one line (not one inherited from a base class)."""
    text = " ".join(inspect.cleandoc(model.__dict__.get("__doc__") or "").split())
    return re.sub(r":\w+:`([^`]+)`", r"`\1`", text)  # :mod:`x` (reST) is `x` in Markdown


def _help(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    return field.description or _HELP_ELSEWHERE.get(model, {}).get(name, "")


def config_sections() -> list[ConfigSection]:
    """Every section of :class:`RunConfig`, nested ones included, in field order.

    The first is the top level (the keys that are not sections); defaults are those of
    ``RunConfig()``, so a section's default that differs from its model's (tasks.splits'
    max_train) shows as the run config has it.
    """
    out: list[ConfigSection] = []

    def walk(name: str, model: type[BaseModel], value: BaseModel, extra: str) -> None:
        section = ConfigSection(name, " ".join(filter(None, [_doc(model), extra])), [])
        out.append(section)
        nested: list[tuple[str, type[BaseModel], BaseModel, str]] = []
        dumped = value.model_dump(mode="json", by_alias=True)
        for attr, field in model.model_fields.items():
            key = field.alias or attr
            dotted = f"{name}.{key}" if name else key
            kind = field.annotation
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                nested.append((dotted, kind, getattr(value, attr), field.description or ""))
                continue
            section.keys.append(ConfigKey(dotted, _type_text(kind), _bounds(field),
                                          _pattern(field), _yaml_value(dumped[key]),
                                          _help(model, attr, field)))
        for args in nested:
            walk(*args)

    walk("", RunConfig, RunConfig(), "")
    return out


def _row(key: ConfigKey) -> str:
    """``key`` as a row of a Markdown table (a ``|`` inside a cell escaped, as GFM needs)."""
    kind = ", ".join([f"`{key.type}`", *key.bounds]
                     + ([f"matches `{key.pattern}`"] if key.pattern else []))
    cells = [f"`{key.key}`", kind, f"`{key.default}`", key.help]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def config_reference() -> str:
    """The reference of every config key as Markdown, rendered from the models alone.

    One heading per section (its docstring below it), then a table of its keys: dotted
    key, type, default and description. docs/config.md is this text (``taskpgm config
    show --doc``); the same models always give the same text.
    """
    sections = config_sections()
    names = ", ".join(f"`{s.name}`" for s in sections if s.name and "." not in s.name)
    lines = [
        "# Run configuration reference",
        "",
        f"<!-- Generated from src/taskpgm/config.py: edit the field descriptions there and "
        f"run `{REFERENCE_COMMAND}`. -->",
        "",
        "A run config is one YAML file with a section per stage: " + names + ". Every key "
        "may be left out (it takes the default below); an unknown key is an error. A key "
        "is written nested in its section (`experts: {rank: 16}`) or given on the command "
        "line by its dotted name (`--set experts.rank=16`). `null` is YAML's empty value.",
    ]
    for section in sections:
        title = f"`{section.name}`" if section.name else "Top level"
        lines += ["", f"{'#' * (2 + section.name.count('.'))} {title}", "", section.help]
        if section.keys:
            lines += ["", "| key | type | default | description |", "| --- | --- | --- | --- |"]
        lines += [_row(key) for key in section.keys]
    return "\n".join(lines) + "\n"


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (the deepest one that exists)."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if getattr(k, "value", None) == str(key)]
            if not match:
                return line
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides with dotted keys (``mrf.rho=0.02``); values are YAML."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write KEY=VALUE with a dotted key, "
                              "e.g. --set mrf.rho=0.02")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({err})") from err
        parts = key.strip().split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def parse(text: str, *, source: str = "<config>", base_dir: Path | None = None,
          overrides: Sequence[str] = ()) -> RunConfig:
    """Parse YAML text (plus ``--set`` overrides) into a :class:`RunConfig`.

    Every problem is reported at once.

    Raises:
        ConfigError: YAML syntax error, unknown key, wrong type or impossible value.
    """
    data, node = read_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections "
                          f"({', '.join(RunConfig.model_fields)})")
    data = apply_overrides(data, overrides)
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as err:
        lines = []
        for problem in err.errors():
            loc = tuple(problem["loc"])
            where = ".".join(str(p) for p in loc)
            line = _line_of(node, loc)
            msg = problem["msg"]
            if problem["type"] == "extra_forbidden" and loc[-1] == "bf16":
                msg = (f"replaced by {'.'.join(str(p) for p in loc[:-1])}.precision: auto | "
                       "fp32 | bf16 (auto runs bf16 only where the hardware has it natively; "
                       "bf16: true was precision: bf16, bf16: false is precision: fp32)")
            elif problem["type"] == "extra_forbidden":
                section = _section_model(loc[:-1])
                allowed = ", ".join(
                    f.alias or n for n, f in section.model_fields.items()
                ) if section else ""
                msg = f"unknown key; allowed here: {allowed}"
            at = f"{source}:{line}" if line else source
            lines.append(f"  {at}: {where}: {msg}")
        raise ConfigError(f"{len(lines)} problem(s) in {source}:\n" + "\n".join(lines)) from None
    if base_dir is not None:
        config = _relative_to(config, base_dir)
    return config


def _relative_to(config: RunConfig, base_dir: Path) -> RunConfig:
    """Paths in the file (output_dir, task files, experts.import) are relative to its directory."""
    from taskpgm.tasks.files import is_file_spec

    def fix(path: str) -> str:
        p = Path(path).expanduser()
        return path if p.is_absolute() else str(base_dir / p)

    names: list[TaskEntry | TaskSpec] = []
    for entry in config.tasks.names:
        if isinstance(entry, str):
            names.append(fix(entry) if is_file_spec(entry) else entry)
        elif is_file_spec(entry.spec):
            names.append(entry.model_copy(update={"spec": fix(entry.spec)}))
        else:
            names.append(entry)
    tasks = config.tasks.model_copy(update={"names": names})
    update: dict[str, Any] = {"tasks": tasks}
    if config.mrf.target:
        target = [fix(e) if isinstance(e, str) and is_file_spec(e) else
                  e.model_copy(update={"spec": fix(e.spec)})
                  if not isinstance(e, str) and is_file_spec(e.spec) else e
                  for e in config.mrf.target]
        update["mrf"] = config.mrf.model_copy(update={"target": target})
    if config.output_dir is not None:
        update["output_dir"] = fix(config.output_dir)
    if config.tracking.log_dir is not None:
        update["tracking"] = config.tracking.model_copy(
            update={"log_dir": fix(config.tracking.log_dir)})
    if config.experts.import_:
        update["experts"] = config.experts.model_copy(
            update={"import_": {task: fix(path) for task, path in config.experts.import_.items()}})
    return config.model_copy(update=update)


def _section_model(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = RunConfig
    for key in loc:
        field = model.model_fields.get(str(key))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def load(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Read a config file.

    Raises:
        NotFoundError: no such file.
        ConfigError: see :func:`parse`.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise NotFoundError(f"config file {file} does not exist; pass the path of a YAML file")
    return parse(read_utf8(file, ConfigError), source=str(file), base_dir=file.parent.resolve(),
                 overrides=overrides)


def dump(config: RunConfig) -> dict[str, Any]:
    """The resolved config as plain data (saved next to artifacts, like nanoGPT does)."""
    return config.model_dump(mode="json", by_alias=True)
