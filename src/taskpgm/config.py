"""The run configuration: one YAML file read into typed models that reject unknown keys.

Each stage owns one section (``base``, ``tasks``, ``experts``, ``signals``; later
stages add theirs as new fields of :class:`RunConfig`). Every field carries a
comment on its trade-off. All validation errors of a file are collected and
reported together, each with its YAML line and what to change.

A minimal file::

    tasks:
      names: [bigbench:hyperbaton, bigbench:navigate]
      splits: {probe: 100, eval: 200, max_train: 2000}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

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

    # A known name (smollm2-135m: 135M params, runs on 2 CPU cores), a local checkpoint
    # directory, a .gguf file or a Hugging Face id. Bigger models learn more tasks but
    # every expert and every scoring pass costs proportionally more.
    model: str = "smollm2-135m"
    # Run Python code shipped with the checkpoint. Needed by some architectures; it
    # executes the checkpoint author's code, so it is off unless you trust them.
    trust_remote_code: StrictBool = False
    # torch CPU threads; None = torch's default (all cores). Lower it to share a machine.
    threads: int | None = Field(default=None, ge=1)
    # Where every model runs: auto (the first CUDA GPU if torch sees one, else the CPU),
    # cpu, cuda or cuda:N. Results do not depend on it beyond float rounding, so it is not
    # part of any fingerprint (see taskpgm.device).
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")


class TasksConfig(Section):
    """Which tasks enter the mixture and how each is split (see :mod:`taskpgm.tasks`)."""

    # Task specs ("bigbench:hyperbaton", "bigbench:arithmetic/2_digit_addition", a file
    # path) or entries {spec, name, mapping, template, max_examples}. Each gets an expert:
    # cost grows linearly with their number, the relations quadratically.
    names: list[TaskEntry | TaskSpec] = Field(default_factory=list)
    # Probe / eval / train sizes and the split seed. Every model is scored on every probe
    # example: more probe examples tighten the relations but cost (tasks + 1) × tasks × probe
    # scoring passes. max_train caps what an expert can see (it sees steps × batch_size).
    splits: SplitOptions = Field(default_factory=lambda: SplitOptions(max_train=2000))


class ExpertsConfig(Section):
    """How each task's LoRA expert is trained (defaults measured on the embedded model)."""

    # LoRA rank: higher fits more of the task but trains slower and overfits small tasks.
    rank: int = Field(default=8, ge=1)
    # LoRA alpha: the update is scaled by alpha / rank; 2×rank is the usual choice.
    alpha: float = Field(default=16.0, gt=0)
    # Dropout on the LoRA input; > 0 regularizes but makes runs depend on the RNG stream.
    dropout: float = Field(default=0.0, ge=0, lt=1)
    # Modules that get adapters. Attention projections only is cheap; adding the MLP
    # (gate_proj, up_proj, down_proj) learns more per step at ~2× adapter cost.
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    # Adapters only in the last N decoder layers (None: every layer). The backward pass
    # then stops at the lowest adapted layer: on the embedded model, LoRA in the top 15 of
    # 30 layers made an fp32 step 1.6x faster (docs/experts.md); fewer layers learn less.
    layers: int | None = Field(default=None, ge=1)
    # Peak learning rate: 3e-3 learns the default tasks in ~100 steps; at 1e-4 the
    # experts barely move in that budget, much higher diverges.
    lr: float = Field(default=3e-3, gt=0)
    # Optimizer steps per expert (None: use epochs). Time per expert grows linearly.
    steps: int | None = Field(default=100, ge=1)
    # Passes over the training set when steps is None.
    epochs: float = Field(default=1.0, gt=0)
    # Examples per step: larger is smoother and faster per example, slower per step.
    batch_size: int = Field(default=16, ge=1)
    # Token cap per example (prompt is cut from the left, the answer never).
    max_length: int = Field(default=256, ge=8)
    # Linear warm-up steps, then linear decay to min_lr_ratio × lr.
    warmup_steps: int = Field(default=10, ge=1)
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1)
    # AdamW weight decay on the adapter weights.
    weight_decay: float = Field(default=0.0, ge=0)
    # Gradient-norm clip (0 = off): guards the high learning rate against spikes.
    max_grad_norm: float = Field(default=1.0, ge=0)
    # Training precision: auto (bf16 autocast where the hardware runs bf16 natively: a GPU
    # that supports it or a CPU with avx512_bf16/amx; fp32 elsewhere), fp32 or bf16. Weights
    # and optimizer stay float32. bf16 trained 1.55x faster on an avx512_bf16 CPU; emulated on
    # an AVX2-only CPU it is ~100x slower. A bf16 expert is a different artifact from an
    # fp32 one (the resolved precision is in its fingerprint).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Seed of LoRA initialization and batch order: same seed, same adapter.
    seed: int = 0
    # Save adapter + optimizer state every N steps: smaller loses less work on a kill,
    # each save costs ~0.1 s.
    checkpoint_every: int = Field(default=20, ge=1)
    # Use existing adapters instead of training: {task: directory with adapter_config.json
    # and adapter_model.safetensors}. Checked against the base model's shapes.
    import_: dict[str, str] = Field(default_factory=dict, alias="import")


class SignalsConfig(Section):
    """How every model is scored on the probe set."""

    # Top-k kept of the next-token distribution at each generative answer position, plus
    # one tail bucket. Larger k: tighter JSD lower bound, bigger shards.
    top_k: int = Field(default=32, ge=1)
    # Examples per forward pass (all their choices share the prompt's KV cache). Larger
    # is faster until memory runs out; ~16 keeps peak memory under 4 GB at 135M.
    batch_size: int = Field(default=16, ge=1)
    # Token cap per prompt + answer (prompt cut from the left).
    max_length: int = Field(default=512, ge=8)
    # Scoring precision (auto | fp32 | bf16, see experts.precision). fp32 by default so the
    # signals are exact float32 numbers: bf16 autocast scored 1.66x faster on an avx512_bf16
    # CPU with the same best choice, but moved log-likelihoods by up to 0.22 nats.
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    # Score a stratified sample of this many probe examples in all, so scoring costs
    # (T + 1) · probe_total instead of (T + 1) · Σ_t P_t; None: every task's whole probe
    # split. Each task keeps at least probe_floor (or all it has); the rest is shared in
    # proportion to the probe splits. See docs/design.md for the rule for large T.
    probe_total: int | None = Field(default=None, ge=1)
    probe_floor: int = Field(default=8, ge=1)


BaselineName = Literal["uniform", "size", "temperature", "reference"]
BASELINES: tuple[BaselineName, ...] = ("uniform", "size", "temperature", "reference")


class RelationsConfig(Section):
    """How signals become the affinity S (docs/design.md)."""

    # Weight of the behaviour kernel against the squashed transfer PMI: 1 = only how the
    # experts moved the base's predictions, 0 = only how much they raise each other's answers.
    alpha: float = Field(default=0.5, ge=0, le=1)
    # Behaviour kernel: "displacement" (cosine of the experts' moves away from the base;
    # robust to how far each moved) or "jsd" (exp(-JSD/sigma) on the raw JSD between experts).
    kernel: Literal["displacement", "jsd"] = "displacement"
    # Transfer term: "symmetric" (1/2 (PMI + PMI^T)) or "pairwise" (the reference code's form).
    pmi_form: Literal["symmetric", "pairwise"] = "symmetric"
    # Choice distribution of multiple-choice examples: "length" divides each choice's
    # log-likelihood by its tokens (removes the base model's bias towards short choices),
    # "plain" uses the summed log-likelihood.
    normalization: Literal["plain", "length"] = "length"
    # Bootstrap draws of the probe set (resampled within each task) for intervals on the
    # weights; 0 turns them off. Costs about one JSD matrix and B small solves, no model.
    bootstrap: int = Field(default=200, ge=0)


#: Per energy, the rho and untrusted policy a config that names the energy but not them
#: gets. The default energy (MrfConfig.energy: the paper's reference setting, rho 0.2, every
#: expert trusted) is the variant the mixture-quality benchmark chose on its dev split
#: (docs/results.md, "Shipped default"); the other energies keep the settings they had.
ENERGY_DEFAULTS: dict[str, dict[str, Any]] = {
    "reference": {"rho": 0.2, "untrusted": "keep"},
    "affinity": {"rho": 0.0, "untrusted": "exclude"},
    "split": {"rho": 0.0, "untrusted": "exclude"},
    "gain-model": {"rho": 0.0, "untrusted": "exclude"},
}


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

    # rho = beta / lambda. 0: the most diverse mixture (least redundant tasks); larger values
    # pull towards the utility. With the representativeness utility, rho = 1/T is uniform
    # whenever the optimum is interior. Not given: the energy's default (ENERGY_DEFAULTS).
    rho: float = Field(default=0.2, ge=0)
    # Utility u: "representativeness" (S 1, tasks that stand for many), "transfer" (how much
    # an expert helps the other tasks) or "gain" (how much a task's own expert learned).
    utility: Literal["representativeness", "transfer", "gain"] = "representativeness"
    # The energy: "affinity" (1/2 p^T S p - rho u^T p with the utility above), "split"
    # (1/2 p^T R p - rho t^T p: R the redundancy exp(-JSD/sigma), never rewarding the mixing
    # of tasks that interfere; t the signed benefit of a task's data, in units of the mean
    # self-gain), "gain-model" (R and t from a second-order expansion of the mixture's total
    # gain; rho = 1 is its own trade-off) or "reference" (the paper's setting: its pairwise
    # PMI, its PSD shift, u = S 1; the default, chosen on dev by the mixture-quality
    # benchmark). docs/design.md, "The split energy"; docs/results.md, "Shipped default".
    energy: Literal["affinity", "split", "gain-model", "reference"] = "reference"
    # Target mode: tasks you care about that are not in the pool (task specs, like
    # tasks.names). Every model also scores their probe examples; the linear term becomes
    # each expert's transfer onto them (in units of the mean self-gain) while the quadratic
    # term stays. A target must not be a pool task and must have probe examples.
    target: list[TaskEntry | TaskSpec] = Field(default_factory=list)
    # At most this many tasks get weight (greedy selection, exact weights); None = no limit.
    budget: int | None = Field(default=None, ge=1)
    # Tasks whose expert did not beat the base model on its own probe (Wilson 95% lower
    # bound of the expert's accuracy at or below the base's) have untrusted relations:
    # "exclude" gives them nothing; "uniform" holds them at the uniform share 1/T and solves
    # for the rest; "keep" trusts them anyway. With a budget they are never selected. Not
    # given: the energy's default (ENERGY_DEFAULTS): keep for reference (the paper trusts
    # every expert), exclude for the others.
    untrusted: Literal["exclude", "uniform", "keep"] = "keep"
    # No task's training split may be repeated more than this many times in the mixture;
    # with the token budget this caps each weight (the caps enter the solve).
    max_repeat: float = Field(default=4.0, gt=0)


class MixtureConfig(Section):
    """The mixed training set that realizes the weights."""

    # Total tokens (prompt + answer) of the mixed set. Every method gets the same budget;
    # the evaluation trains one epoch over it, so time grows linearly with it.
    token_budget: int = Field(default=60_000, ge=1)
    # Seed of the mixture draw (which examples, in which order).
    seed: int = 0
    # How a seed draws the mixed set. crn (common random numbers): each task's examples
    # get one fixed order and each example one position key from (seed, task, example id)
    # alone, so two mixtures at one seed share every example their counts share, in the
    # same order, and train in that order: a paired comparison measures the weights, not
    # the draw. independent: the draw before sampler version 2 (fresh draws and a fresh
    # shuffle per mixture), kept only to reproduce older results; far noisier pairs.
    # crn-keyed: the crn draw, each training batch a fixed range of keys, so two mixtures
    # also share every batch their examples share (batches are not grouped by length:
    # more padding, slower training).
    sampler: Literal["crn", "crn-keyed", "independent"] = "crn"


class EvaluationConfig(Section):
    """Train on each mixture with the same budget and score held-out data."""

    # Run the evaluation stage at all (it trains one adapter per method and seed).
    enabled: StrictBool = True
    # Baselines beside TaskPGM: uniform, size (proportional to train size), temperature
    # (p ~ n^(1/tau)) and reference (the paper's setting at its rho 0.2, solved exactly).
    # All are brought under the same caps.
    baselines: list[BaselineName] = Field(default_factory=lambda: list(BASELINES))
    # tau of the temperature baseline: 1 = size-proportional, large = uniform.
    temperature: float = Field(default=2.0, gt=0)
    # Seeds (mixture draw, LoRA initialization, data order); seeds are paired across
    # methods and are the unit of replication for intervals. 5+ for a comparison.
    seeds: list[int] = Field(default_factory=lambda: [0])
    # Tasks scored but never in the mixture (task specs, like tasks.names).
    heldout: list[TaskEntry | TaskSpec] = Field(default_factory=list)
    # MMLU subjects scored too ("mmlu:anatomy", ...); knowledge a small model mostly lacks.
    mmlu: list[str] = Field(default_factory=list)
    # At most this many eval examples per task (eval splits and held-out tasks).
    max_eval: int = Field(default=200, ge=1)
    # Share of each mixture task's eval examples held out as "test" (the final table only);
    # the rest is "dev" (every choice: budget, rho, energy, policy). 0 keeps one "eval"
    # split. The cut is by a hash of the example ids, so it is the same on every run.
    test_share: float = Field(default=0.0, ge=0.0, lt=1.0)
    # Precision of scoring the trained models (auto | fp32 | bf16; training uses
    # experts.precision). Accuracy needs only the best choice, which bf16 kept on every
    # example checked, so auto uses bf16 where the hardware runs it natively.
    precision: Literal["auto", "fp32", "bf16"] = "auto"


class ReportConfig(Section):
    """The HTML report."""

    # Render report.html at the end of the run.
    enabled: StrictBool = True
    # Points on the rho path (weights along rho from 0 to 2/T) drawn in the report.
    rho_path_points: int = Field(default=25, ge=2)


class TrackingConfig(Section):
    """Experiment tracking (taskpgm.tracking): curves and weights for TensorBoard."""

    # none, or tensorboard (event files through tensorboardX: pip install taskpgm[tracking]).
    report_to: Literal["none", "tensorboard"] = "none"
    # Where the event files go; None = RUN/tracking. Relative paths are relative to the
    # config file.
    log_dir: str | None = None


class ExecutionConfig(Section):
    """Where the expensive, independent jobs run: one expert per task, one scoring pass per
    model (taskpgm.cluster)."""

    # local: in this process, one job after another. ray: each missing expert is a Ray
    # task and scoring runs in actors that keep the base model loaded (pip install
    # taskpgm[cluster]). The artifact cache (output_dir or $TASKPGM_HOME) must then be on
    # a filesystem every node sees (NFS, Lustre, ...): jobs return paths into it.
    backend: Literal["local", "ray"] = "local"
    # The Ray cluster: None starts a private one on this machine; auto joins the one
    # `ray start` made here (or $RAY_ADDRESS); HOST:PORT joins that head node.
    address: str | None = Field(default=None, pattern=r"^(auto|[A-Za-z0-9_.\-\[\]:]+:\d+)$")
    # CPUs and GPUs each job asks Ray for. The job's torch threads follow cpus_per_job
    # unless base.threads is set (thread counts change float rounding, so set base.threads
    # for results bit-identical to a local run). gpus_per_job > 0 runs the jobs on GPUs.
    cpus_per_job: float = Field(default=1.0, gt=0)
    gpus_per_job: float = Field(default=0.0, ge=0)
    # How often Ray retries a job whose worker died (a node lost, a process killed); the
    # retry resumes its expert from the last checkpoint in the shared cache.
    max_retries: int = Field(default=3, ge=0)


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
    # Where stage artifacts go; None = $TASKPGM_HOME/artifacts. Relative paths are
    # relative to the config file.
    output_dir: str | None = None

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
