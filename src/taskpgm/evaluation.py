"""Judge mixtures the way the method is judged: train on each, score held-out data.

For every method (TaskPGM, its budgeted variant, the baselines) and every
seed s, the same recipe runs:

1. realize the method's weights under the shared token budget
   (:func:`taskpgm.core.mixture.example_counts`) and draw the mixed set with seed s;
2. fine-tune the base model on it: LoRA with the ``experts`` hyperparameters,
   one epoch over the mixed set, seed s (so every method gets the same tokens
   and the same recipe; seeds are paired across methods);
3. score accuracy on the eval splits of the mixture's tasks (``eval``), on
   tasks never in the mixture (``heldout``) and on MMLU subjects (``mmlu``).

Each (method, seed) is one fingerprinted artifact (adapter, training log,
scores), so a killed evaluation resumes at the next unfinished one. The base
model without training is scored once as the reference row ``base``.
Method comparisons use intervals over seeds (:mod:`taskpgm.core.stats`), never a
bootstrap over examples.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from taskpgm import artifacts
from taskpgm.config import ExpertsConfig, RunConfig, SignalsConfig
from taskpgm.core.mixture import (
    SAMPLER_VERSION,
    Sampler,
    example_counts,
    keyed_mixture,
    sample_mixture,
)
from taskpgm.inputs import EvalSet, eval_scoring
from taskpgm.predictions import Normalization, from_arrays
from taskpgm.progress import Progress, format_seconds, say
from taskpgm.tasks.schema import Example, examples_fingerprint

if TYPE_CHECKING:  # the models, trainer and scorer import torch: only when work is done
    from taskpgm import frozen
    from taskpgm.models import Base, LoadedModel
    from taskpgm.placement import Placement
    from taskpgm.trainer import Order

STAGE = "evaluation"
VERSION = 4  # 2: trailing prompt spaces move onto the answer; 3: rows carry the log-prob;
# 4: the sampler (common random numbers, trained in key order) enters the fingerprint, rows
# carry bits per byte of generative tasks, items.json holds every item's scores
#: Nothing is left out of an evaluation's fingerprint: the recipe (one epoch, no step
#: count) always differs from the experts' defaults, and the scoring settings and the
#: normalization enter whole. So no default can go stale here.
DEFAULTS: dict[str, Any] = {}


#: How each sampler's mixed set is batched in training (:func:`taskpgm.trainer.train_adapter`).
TRAINING_ORDER: dict[str, Order] = {"independent": "shuffled", "crn": "given",
                                    "crn-keyed": "keyed"}


def sampler_id(sampler: Sampler) -> str:
    """The sampler as artifacts record it: its name and version (``crn-v2``)."""
    return f"{sampler}-v{SAMPLER_VERSION[sampler]}"


def fingerprint_of(base_fp: str, mixed: Sequence[Example], eval_fp: str, recipe: ExpertsConfig,
                   training: Placement, normalization: Normalization,
                   score_params: Mapping[str, Any], sampler: Sampler,
                   n_batches: int | None = None) -> str:
    """One (method, seed) training's fingerprint: the base, the mixed set in its order, the
    eval set, the recipe at its precision, the scoring, the sampler that drew the set and
    (``crn-keyed``) its batches per epoch."""
    from taskpgm.experts import fingerprint_settings

    params: dict[str, Any] = {
        "recipe": fingerprint_settings(recipe, training), "norm": normalization,
        "scoring": dict(score_params), "sampler": sampler_id(sampler)}
    if n_batches is not None:
        params["batches"] = n_batches
    return artifacts.fingerprint(
        STAGE, VERSION, [base_fp, examples_fingerprint(mixed), eval_fp], params, DEFAULTS)


def keyed_batch_count(token_budget: int, mean_tokens: Sequence[float], batch_size: int) -> int:
    """The batches per epoch of every ``crn-keyed`` training at a budget: those of the
    uniform mixture, ⌈Σ_t (N / T) / m_t / batch_size⌉, the same for every method, so one
    example more or less in a mixture moves no key range (its batches grow instead)."""
    nominal = sum(token_budget / len(mean_tokens) / m for m in mean_tokens)
    return max(1, math.ceil(nominal / batch_size))


@dataclass(frozen=True)
class ItemScores:
    """One model's per-item scores on one (split, task) group, in the group's order.

    ``logprob``: the gold choice's log-probability under the choice distribution (the
    run's normalization: with ``length``, of per-token log-likelihoods) for a multiple-
    choice item; the gold continuation's summed log-likelihood for a generative one.
    ``bpb``: bits per byte of the gold continuation, −ℓ / (ln 2 · UTF-8 bytes), for a
    generative item (nan for multiple choice).
    """

    ids: tuple[str, ...]
    correct: np.ndarray
    logprob: np.ndarray
    bpb: np.ndarray

    def means(self) -> tuple[float, int, float, float]:
        """(accuracy, items, mean log-probability, mean bits per byte or nan)."""
        n = len(self.ids)
        if not n:
            return float("nan"), 0, float("nan"), float("nan")
        bpb = self.bpb[np.isfinite(self.bpb)]
        return (float(self.correct.mean()), n, float(self.logprob.mean()),
                float(bpb.mean()) if bpb.size else float("nan"))


def accuracy_by_group(
    loaded: LoadedModel, model: Any, evalset: EvalSet, normalization: Normalization,
    scoring: SignalsConfig, progress: Progress | None = None,
    placement: Placement | None = None,
) -> dict[tuple[str, str], tuple[float, int]]:
    """Accuracy and example count of one model on every (split, task) group."""
    return {key: (acc, n) for key, (acc, n, _) in scores_by_group(
        loaded, model, evalset, normalization, scoring, progress, placement).items()}


def scores_by_group(
    loaded: LoadedModel, model: Any, evalset: EvalSet, normalization: Normalization,
    scoring: SignalsConfig, progress: Progress | None = None,
    placement: Placement | None = None,
) -> dict[tuple[str, str], tuple[float, int, float]]:
    """Per (split, task) group: accuracy, example count and the mean gold log-probability
    (:class:`ItemScores`)."""
    items = item_scores(loaded, model, evalset, normalization, scoring, progress, placement)
    return {key: sc.means()[:3] for key, sc in items.items()}


def item_scores(
    loaded: LoadedModel, model: Any, evalset: EvalSet, normalization: Normalization,
    scoring: SignalsConfig, progress: Progress | None = None,
    placement: Placement | None = None, boundary: frozen.Boundary | None = None,
) -> dict[tuple[str, str], ItemScores]:
    """Every item of the eval set scored once, grouped by (split, task): one pass over all
    groups (batched by prompt length, each prompt computed once for all its choices).
    With ``boundary`` the base's frozen lower layers are computed once per eval set and
    reused by every model scored on it (:mod:`taskpgm.frozen`)."""
    from taskpgm.signals import score

    examples = evalset.examples()
    arrays = score(model, loaded.tokenizer, examples, scoring, progress=progress,
                   placement=placement, boundary=boundary)
    probe: dict[str, list[str] | list[int]] = {
        "tasks": [ex.task for ex in examples], "kinds": [str(ex.kind) for ex in examples],
        "gold": [ex.correct[0] if ex.choices is not None else 0 for ex in examples]}
    names = sorted({ex.task for ex in examples})
    pred = from_arrays(probe, {"m": arrays}, ["m"], names, normalization=normalization,
                       correct_sets=[ex.correct if ex.choices is not None else (0,)
                                     for ex in examples])
    bpb = np.array([float("nan") if ex.choices is not None else
                    -float(arrays["gold_ll"][i]) / (math.log(2) * max(1, len(
                        ex.targets[0].encode("utf-8"))))
                    for i, ex in enumerate(examples)])
    out: dict[tuple[str, str], ItemScores] = {}
    start = 0
    for key in sorted(evalset.groups):
        members = evalset.groups[key]
        stop = start + len(members)
        out[key] = ItemScores(tuple(ex.id for ex in members),
                              pred.correct[0, start:stop].astype(bool),
                              pred.loglik[0, start:stop].astype(np.float64), bpb[start:stop])
        start = stop
    return out


def _rows(method: str, seed: int,
          items: Mapping[tuple[str, str], ItemScores]) -> list[dict[str, Any]]:
    out = []
    for (split, task), sc in sorted(items.items()):
        acc, n, logp, bpb = sc.means()
        row: dict[str, Any] = {"method": method, "seed": seed, "task": task, "split": split,
                               "accuracy": round(acc, 6), "n": n, "logprob": round(logp, 6)}
        if np.isfinite(bpb):
            row["bpb"] = round(bpb, 6)
        out.append(row)
    return out


def _items(items: Mapping[tuple[str, str], ItemScores]) -> list[dict[str, Any]]:
    """Every item's scores (items.json of an evaluation artifact), for paired analyses."""
    return [{"split": split, "task": task, "id": ident, "correct": bool(c),
             "logprob": round(float(lp), 6),
             **({"bpb": round(float(b), 6)} if np.isfinite(b) else {})}
            for (split, task), sc in sorted(items.items())
            for ident, c, lp, b in zip(sc.ids, sc.correct, sc.logprob, sc.bpb, strict=True)]


@dataclass(frozen=True)
class Recipe:
    """How every mixture of an evaluation is drawn, trained and scored: the same for each
    method and seed, so a paired difference is the weights' alone.

    Attributes:
        token_budget, max_repeat: the mixture's budget and repeat cap (the counts).
        experts: the training recipe (one epoch over the mixed set, at its seed).
        scoring: the scoring settings; normalization: the choice normalization.
        sampler: how a seed draws each mixed set (``mixture.sampler``); with ``crn`` the
            training keeps the sampler's order, so methods at one seed share their order;
            with ``crn-keyed`` it also cuts batches by key ranges, so they share batches.
        training, scoring_placement: device and precision of the training and of the
            scoring (None: ``experts.precision`` and ``scoring.precision`` resolved on the
            base's device). Both precisions enter the fingerprints.
    """

    token_budget: int
    max_repeat: float
    experts: ExpertsConfig
    scoring: SignalsConfig
    normalization: Normalization
    sampler: Sampler = "crn-keyed"
    training: Placement | None = None
    scoring_placement: Placement | None = None

    @classmethod
    def from_config(cls, config: RunConfig, compute: Mapping[str, Placement] | None = None,
                    *, token_budget: int | None = None, sampler: Sampler | None = None
                    ) -> Recipe:
        """A run's recipe (``compute``: its placements, :func:`taskpgm.pipeline.placements_of`);
        ``token_budget`` and ``sampler`` override the config's."""
        return cls(token_budget=config.mixture.token_budget if token_budget is None
                   else token_budget, max_repeat=config.mrf.max_repeat,
                   experts=config.experts, scoring=eval_scoring(config),
                   normalization=config.relations.normalization,
                   sampler=config.mixture.sampler if sampler is None else sampler,
                   training=compute["experts"] if compute else None,
                   scoring_placement=compute["evaluation"] if compute else None)


def ensure_evaluation(
    base: Base,
    methods: Mapping[str, Mapping[str, float]],
    train: Mapping[str, Sequence[Example]],
    mean_tokens: Mapping[str, float],
    evalset: EvalSet,
    recipe: Recipe,
    *,
    seeds: Sequence[int],
    root: Path | None = None,
    stream: TextIO | None = None,
    tracker: Any = None,
    items: bool = False,
) -> list[dict[str, Any]]:
    """Train on every (method, seed) mixture and score; reuse finished pairs.

    Args:
        methods: per method its weights {task: token share}.
        train: the train split of every mixture task.
        mean_tokens: mean tokens of a training example of each task.
        evalset: what is scored after training.
        recipe: how each mixture is drawn, trained and scored (:class:`Recipe`).
        tracker: a :class:`taskpgm.tracking.Tracker` that gets each training's curve.
        items: also give each trained method's row its items (``ids``, ``correct``,
            ``logprob``, in the group's order), for paired per-item analyses.

    Returns:
        Rows ``{method, seed, task, split, accuracy, n}``, the base model first.
    """
    from taskpgm import device as device_mod
    from taskpgm.signals import fingerprint_settings as scoring_settings

    token_budget, max_repeat, experts_cfg = recipe.token_budget, recipe.max_repeat, recipe.experts
    scoring, normalization, sampler = recipe.scoring, recipe.normalization, recipe.sampler
    training, scoring_placement = recipe.training, recipe.scoring_placement
    out = stream or sys.stderr
    tasks = list(train)
    sizes = [len(train[t]) for t in tasks]
    tokens = [mean_tokens[t] for t in tasks]
    eval_fp = evalset.fingerprint()
    if training is None:
        training = device_mod.resolve(base.device, experts_cfg.precision, stream=out)
    if scoring_placement is None:
        scoring_placement = device_mod.resolve(base.device, scoring.precision, stream=out)
    score_params = scoring_settings(scoring, scoring_placement)
    one_epoch = experts_cfg.model_copy(update={"steps": None, "epochs": 1.0})
    n_batches = (keyed_batch_count(token_budget, tokens, one_epoch.batch_size)
                 if sampler == "crn-keyed" else None)
    plans = []
    for seed in seeds:
        for method, weights in methods.items():
            w = np.array([weights.get(t, 0.0) for t in tasks])
            counts = example_counts(w / w.sum(), sizes, tokens, token_budget, max_repeat)
            count_map = dict(zip(tasks, counts.tolist(), strict=True))
            keys: list[float] | None = None
            if sampler == "crn-keyed":
                mixed, keys = keyed_mixture(train, count_map, seed)
            else:
                mixed = sample_mixture(train, count_map, seed, sampler)
            cfg = one_epoch.model_copy(update={"seed": seed})
            fp = fingerprint_of(base.fingerprint, mixed, eval_fp, cfg, training, normalization,
                                score_params, sampler, n_batches)
            plans.append((method, seed, mixed, keys, cfg, fp))
    base_fp = artifacts.fingerprint(STAGE, VERSION, [base.fingerprint, eval_fp],
                                    {"norm": normalization, "scoring": score_params}, {})
    first: dict[str, str] = {}  # one training per distinct fingerprint (coinciding mixtures)
    for method, seed, *_, fp in plans:
        first.setdefault(fp, f"{method}-s{seed}")
    pending = {fp for fp, name in first.items() if _find(name, fp, root) is None}
    done = sum(p[-1] not in pending for p in plans)
    print(f"evaluation: {len(plans)} trainings ({len(methods)} methods x {len(seeds)} seeds), "
          f"{done} done already; {len(evalset.examples())} examples "
          "scored after each", file=out, flush=True)
    rows: list[dict[str, Any]] = []
    def score_base(tmp: Path) -> dict[str, Any]:
        loaded = base.load()
        loaded.model.to(scoring_placement.torch_device)
        acc = item_scores(loaded, loaded.model, evalset, normalization, scoring,
                          _scoring_progress("base", evalset, out), scoring_placement,
                          frozen_boundary(base, loaded, experts_cfg, root))
        (tmp / "scores.json").write_text(json.dumps(_rows("base", 0, acc), indent=1))
        (tmp / "items.json").write_text(json.dumps(_items(acc)))
        return {"method": "base"}

    base_dir, _ = artifacts.ensure(STAGE, "base", base_fp, score_base, root=root, stream=out)
    rows.extend(json.loads((base_dir / "scores.json").read_text()))
    progress = Progress("evaluation", len(first), unit="training", every=0.0, stream=out,
                        start=len(first) - len(pending))
    for method, seed, mixed, keys, cfg, fp in plans:
        name = f"{method}-s{seed}"
        found, _ = artifacts.ensure(
            STAGE, name, fp, _training_compute(
                base, name, method, seed, mixed, keys, cfg, fp, evalset, normalization,
                scoring, root, out, training, scoring_placement, sampler, n_batches),
            root=root, stream=out, finder=functools.partial(_find, name, fp, root))
        if fp in pending:
            pending.discard(fp)
            progress.update(1, note=f"{name} done")
        if tracker is not None:
            tracker.training_file("evaluation", name, found / "training_log.json")
        held = json.loads((found / "scores.json").read_text())
        per_item = _group_items(found) if items else {}
        rows.extend({**row, "method": method,
                     **({"items": per_item[(row["split"], row["task"])]} if per_item else {})}
                    for row in held)
    return rows


def _group_items(found: Path) -> dict[tuple[str, str], dict[str, list[Any]]]:
    """An artifact's items.json grouped by (split, task): ids, correct (0/1), logprob."""
    path = found / "items.json"
    if not path.is_file():  # trained before items.json existed
        return {}
    out: dict[tuple[str, str], dict[str, list[Any]]] = {}
    for it in json.loads(path.read_text()):
        group = out.setdefault((it["split"], it["task"]),
                               {"ids": [], "correct": [], "logprob": []})
        group["ids"].append(it["id"])
        group["correct"].append(int(it["correct"]))
        group["logprob"].append(it["logprob"])
    return out


def _find(name: str, fp: str, root: Path | None) -> Path | None:
    """The finished training with fingerprint ``fp``, whichever method trained it first.

    The fingerprint covers all a result depends on (base model, mixed examples, recipe,
    eval set, scoring); the method is only a label, so methods whose mixtures coincide
    (or a method renamed) share one training.
    """
    found = artifacts.find(STAGE, name, fp, root=root)
    if found is not None:
        return found
    stage_dir = (root or artifacts.default_root()) / STAGE
    for path in sorted(stage_dir.glob(f"*-{fp}")):
        if artifacts.intact(path) is not None:
            return path
    return None


def frozen_boundary(base: Base, loaded: LoadedModel, recipe: ExpertsConfig,
                    root: Path | None = None) -> frozen.Boundary | None:
    """Where the recipe's adapters start (``experts.layers``): every training's adapter and
    the base share the eval set's states below it (kept in the cache under ``root`` too,
    for the next process)."""
    from taskpgm import frozen

    if recipe.layers is None or not frozen.supported(loaded.model):
        return None
    return base.boundary(len(frozen.backbone_of(loaded.model).layers) - recipe.layers,
                         root=root, disk=True)


def _scoring_progress(name: str, evalset: EvalSet, out: TextIO) -> Progress:
    return Progress(f"evaluation {name} scoring", len(evalset.examples()), unit="example",
                    every=15.0, stream=out)


def _training_compute(
    base: Base, name: str, method: str, seed: int, mixed: Sequence[Example],
    keys: Sequence[float] | None, cfg: ExpertsConfig,
    fp: str, evalset: EvalSet, normalization: Normalization, scoring: SignalsConfig,
    root: Path | None, out: TextIO, training: Placement, scoring_placement: Placement,
    sampler: Sampler, n_batches: int | None,
) -> artifacts.Compute:
    """How one (method, seed) artifact is made: train the adapter, then score it."""
    from peft import PeftModel

    from taskpgm import device as device_mod
    from taskpgm.models import check_adapter_dir
    from taskpgm.trainer import train_adapter

    def compute(tmp: Path) -> dict[str, Any]:
        loaded = base.load()
        manifest: dict[str, Any] = {"method": method, "seed": seed, "examples": len(mixed),
                                    "sampler": sampler_id(sampler),
                                    "compute": {"training": training.as_dict(),
                                                "scoring": scoring_placement.as_dict()}}
        work = artifacts.work_dir(STAGE, name, fp, root=root)
        say(f"evaluation: training {name} on {len(mixed)} mixed examples", out)
        log = train_adapter(loaded, name, mixed, cfg, work, tmp / "adapter",
                           progress=Progress(f"evaluation {name}", None, unit="step",
                                             every=15.0, stream=out),
                           label=name, stream=out, placement=training,
                           order=TRAINING_ORDER[sampler], keys=keys, n_batches=n_batches,
                           boundary=frozen_boundary(base, loaded, cfg, root))
        manifest.update(seconds=log["seconds"], final_loss=log["final_loss"],
                        steps=log["steps"])
        (tmp / "training_log.json").write_text(json.dumps(log, indent=1))
        loaded.model.to(scoring_placement.torch_device)
        check_adapter_dir(tmp / "adapter")
        wrapped = PeftModel.from_pretrained(loaded.model, str(tmp / "adapter"))
        try:
            acc = item_scores(loaded, wrapped, evalset, normalization, scoring,
                              _scoring_progress(name, evalset, out), scoring_placement,
                              frozen_boundary(base, loaded, cfg, root))
        finally:
            wrapped.unload()
            device_mod.free_memory(scoring_placement.device)
        (tmp / "scores.json").write_text(json.dumps(_rows(method, seed, acc), indent=1))
        (tmp / "items.json").write_text(json.dumps(_items(acc)))
        say(f"evaluation: {name} trained in {format_seconds(log['seconds'])}", out)
        return manifest

    return compute
