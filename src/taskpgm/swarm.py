"""The swarm: random mixtures trained and scored; RegMix's regression; the energy's fidelity.

* :func:`draw_mixtures`: n mixtures from Dirichlet(a·1) around uniform. a = 1 (the
  default) is the uniform distribution over the simplex: every mixture equally
  likely, so the swarm reaches the far-from-uniform corners where any headroom
  above uniform would be; larger a keeps the swarm nearer uniform. The fidelity
  table needs this swarm.
* :func:`draw_around`: n mixtures around a prior q, as RegMix draws its swarm: each from
  Dirichlet(s · T · q) with its own s, log-uniform on [0.1, 5] (:data:`AROUND_RANGE`).
  The scale is T · q so that s = 1 at the uniform prior is the Dirichlet(1) draw above;
  s = 5 keeps a mixture near q (each weight within about ±45% of q_i at T = 12), s = 0.1
  reaches near-corners, so the swarm spans both while centred on q.
* :func:`fit_regmix` / :func:`regmix_weights`: RegMix (Liu et al. 2024): a
  regression from mixture weights to the measured score, ``linear`` (least squares
  on the weights) or ``lightgbm`` (gradient-boosted trees), then 100,000 candidate
  mixtures drawn the same way as the swarm, and the **mean of the 128 with the best
  predicted score**, as RegMix's code does (``top=1`` is the argmax, kept as
  ``regmix-argmax``).
* :func:`olmix`: Olmix's log-linear law per task, fitted on the swarm's per-task losses
  (−logprob), and its exact proposer: the law's macro loss + 0.05 · KL(x ‖ prior) under
  the caps, minimized to a certified gap (:mod:`taskpgm.core.loglinear`).
* :func:`fidelity`: does −E(p) rank the swarm's mixtures the way training does?
  The Spearman correlation between −E(p) and the score over the swarm, with a
  bootstrap interval over its mixtures.

The swarm's trainings are evaluation artifacts (:mod:`taskpgm.evaluation`), so a
killed swarm resumes at the next untrained mixture.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from taskpgm import atomic
from taskpgm.core.loglinear import OLMIX_STRENGTH, fit_law, propose
from taskpgm.errors import InvalidInputError
from taskpgm.progress import say
from taskpgm.rundir import RunDir

FloatArray = NDArray[np.float64]
Predictor = Callable[[FloatArray], FloatArray]


def draw_mixtures(n_tasks: int, n: int, *, concentration: float = 1.0, seed: int = 0
                  ) -> FloatArray:
    """(n, T) mixtures drawn from Dirichlet(concentration · 1)."""
    if n_tasks < 1 or n < 1 or concentration <= 0:
        raise InvalidInputError(f"need tasks >= 1, mixtures >= 1 and concentration > 0, got "
                                f"{n_tasks}, {n}, {concentration}")
    rng = np.random.default_rng(seed)
    out: FloatArray = rng.dirichlet(np.full(n_tasks, float(concentration)), size=n)
    return out


#: The range of RegMix's concentration multiplier s, drawn log-uniformly per mixture.
AROUND_RANGE = (0.1, 5.0)


def draw_around(prior: ArrayLike, n: int, *, seed: int = 0,
                strengths: tuple[float, float] = AROUND_RANGE) -> FloatArray:
    """(n, T) mixtures from Dirichlet(s · T · q), s log-uniform on ``strengths`` per mixture
    (tasks with q_i = 0 stay at 0)."""
    q = np.asarray(prior, dtype=np.float64)
    if q.ndim != 1 or n < 1 or (q < 0).any() or abs(float(q.sum()) - 1.0) > 1e-9:
        raise InvalidInputError(f"need a prior on the simplex and n >= 1, got {q.shape}, {n}")
    rng = np.random.default_rng(seed)
    lo, hi = strengths
    s = np.exp(rng.uniform(np.log(lo), np.log(hi), size=n))
    on = q > 0
    out = np.zeros((n, q.size))
    for i in range(n):
        out[i, on] = rng.dirichlet(s[i] * q.size * q[on])
    return out


def fit_regmix(weights: ArrayLike, scores: ArrayLike,
               kind: Literal["linear", "lightgbm"] = "linear") -> Predictor:
    """A predictor of the score from the mixture weights, fitted on the swarm.

    ``linear``: score ≈ wᵀ p (the weights sum to 1, so no separate intercept);
    ``lightgbm``: boosted trees (RegMix's choice), 200 rounds, leaves of at least
    2 mixtures, one thread.
    """
    x = np.asarray(weights, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] < 2:
        raise InvalidInputError(f"need (n, T) weights and (n,) scores with n >= 2, got "
                                f"{x.shape} and {y.shape}")
    if kind == "linear":
        coef = np.linalg.lstsq(x, y, rcond=None)[0]
        return lambda p: np.asarray(p, dtype=np.float64) @ coef
    if kind == "lightgbm":
        import lightgbm

        params = {"objective": "regression", "verbose": -1, "num_threads": 1,
                  "min_data_in_leaf": 2, "min_data_in_bin": 1, "learning_rate": 0.05,
                  "num_leaves": 7, "seed": 0, "deterministic": True}
        booster = lightgbm.train(params, lightgbm.Dataset(x, y, params={"verbose": -1}),
                                 num_boost_round=200)
        return lambda p: np.asarray(booster.predict(np.atleast_2d(p)), dtype=np.float64)
    raise InvalidInputError(f"unknown regmix model {kind!r}; choose linear or lightgbm")


#: RegMix's final mixture: the mean of this many best-predicted candidates.
REGMIX_TOP = 128


def regmix_weights(predictor: Predictor, n_tasks: int, *, candidates: int = 100_000,
                   concentration: float = 1.0, seed: int = 1, top: int = REGMIX_TOP,
                   prior: ArrayLike | None = None) -> tuple[FloatArray, float]:
    """The mean of the ``top`` candidates with the best predicted score (``top=1``: the
    argmax), and the predicted score of that mean. Candidates come from
    Dirichlet(concentration · 1), or around ``prior`` (:func:`draw_around`) when given;
    uniform (or the prior) is always one of them."""
    if prior is None:
        pool = draw_mixtures(n_tasks, candidates, concentration=concentration, seed=seed)
        centre = np.full((1, n_tasks), 1.0 / n_tasks)
    else:
        pool = draw_around(prior, candidates, seed=seed)
        centre = np.asarray(prior, dtype=np.float64)[None, :]
    pool = np.vstack([pool, centre])
    predicted = predictor(pool)
    best = np.argsort(-predicted, kind="stable")[:max(1, top)]
    mean = pool[best].mean(axis=0)
    return mean, float(predictor(mean[None, :])[0])


def task_loss(row: dict[str, Any]) -> float:
    """A task's loss in an evaluation row, for Olmix's law: bits per byte of the gold
    continuation for a generative task (Olmix's own metric), else the gold choice's
    length-normalized −log-probability (nats a token)."""
    return float(row["bpb"]) if "bpb" in row else -float(row["logprob"])


def olmix(draws: ArrayLike, losses: ArrayLike, *, caps: ArrayLike, prior: ArrayLike | None,
          names: list[str], seed: int = 0, strength: float = OLMIX_STRENGTH) -> dict[str, Any]:
    """Olmix (:mod:`taskpgm.core.loglinear`): a log-linear law per task fitted on the swarm's
    per-task losses (n, T), then the law's macro loss + λ KL(x ‖ prior) minimized exactly
    under the caps (λ = 0.05, Olmix's shipped value; the prior is the swarm's centre)."""
    started = time.process_time()
    x = np.asarray(draws, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    if y.shape != x.shape or not np.isfinite(y).all():
        return {"skipped": f"Olmix needs a finite loss for every task of every swarm mixture "
                           f"(got {y.shape} for {x.shape} mixtures)"}
    # every start refined up to 50 tasks (T = 50: 182 CPU-s on 100 mixtures); beyond, the 3
    # most promising (T = 50: 30 CPU-s, the same fit there; within 5% on noisier data)
    law = fit_law(x, y, seed=seed, polish=None if x.shape[1] <= 50 else 3)
    q = np.full(x.shape[1], 1.0 / x.shape[1]) if prior is None else np.asarray(prior)
    got = propose(law, strength=strength, prior=q, caps=caps)
    return {"weights": dict(zip(names, map(float, got.p), strict=True)),
            "strength": strength, "metric": "per-task loss (task_loss), macro over tasks",
            "predicted_loss": float(law.predict(got.p[None, :]).mean()),
            "fit_huber": [float(v) for v in law.huber], "certificate": got.certificate,
            "newton_steps": got.n_iter, "compute_cpu_s": time.process_time() - started}


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rank correlation (ties get their mean rank); nan when either is constant."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise InvalidInputError(f"need two vectors of the same length >= 2, got {a.shape}, "
                                f"{b.shape}")
    ra, rb = stats.rankdata(a), stats.rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def fidelity(neg_energy: ArrayLike, scores: ArrayLike, *, draws: int = 1000, seed: int = 0
             ) -> tuple[float, float, float]:
    """Spearman(−E, score) over the swarm and its 5–95% bootstrap interval over mixtures."""
    e, s = np.asarray(neg_energy, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    rho = spearman(e, s)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(draws):
        idx = rng.integers(0, e.size, size=e.size)
        value = spearman(e[idx], s[idx]) if np.unique(idx).size > 1 else float("nan")
        if np.isfinite(value):
            boot.append(value)
    if not boot:
        return rho, float("nan"), float("nan")
    lo, hi = np.quantile(boot, [0.05, 0.95])
    return rho, float(lo), float(hi)


#: The energies whose fidelity is measured: (mrf.energy, mrf.utility, rho as a number or
#: "1/T").
FIDELITY_VARIANTS: tuple[tuple[str, str, float | str], ...] = (
    ("affinity", "representativeness", 0.0), ("affinity", "representativeness", "1/T"),
    ("split", "representativeness", 0.0), ("split", "representativeness", 0.5),
    ("split", "representativeness", 1.0), ("reference", "representativeness", 0.2),
)


def run_swarm(config: Any, run_dir: Path, *, mixtures: int, concentration: float = 1.0,
              around: Literal["uniform", "prior"] = "uniform",
              stream: TextIO | None = None) -> dict[str, Any]:
    """Train and score a swarm beside uniform; fit RegMix; measure every energy's fidelity.

    ``around="prior"`` draws the swarm (and RegMix's candidates) around ``mrf.anchor.prior``
    as RegMix does (:func:`draw_around`) instead of from Dirichlet(concentration · 1).

    Runs the pipeline up to the weights first (reusing what is done), then one training
    per swarm mixture with the evaluation's recipe and its first seed (each mixture
    brought under the run's caps first, so what is trained is what is recorded), scored
    on the mixture tasks' eval split (its dev part when ``evaluation.test_share`` cuts
    one): a mixture's score is its mean accuracy over the tasks. Writes
    ``run_dir/swarm.json`` and returns it.
    """
    from taskpgm import device as device_mod
    from taskpgm import pipeline
    from taskpgm.core.mixture import apply_caps
    from taskpgm.evaluation import Recipe, ensure_evaluation
    from taskpgm.inputs import eval_set, load_tasks, mean_train_tokens
    from taskpgm.models import Base
    from taskpgm.readers import open_relations
    from taskpgm.weights import energy_terms, mixmin_inputs, resolve_prior

    out = stream or sys.stderr
    state = pipeline.run(config, run_dir, stream=out, until="weights")
    tasks = load_tasks(config)
    names = list(tasks)
    base = Base.from_config(config.base)
    mean_tokens = mean_train_tokens(base.load().tokenizer, tasks, config.experts.max_length)
    compute = device_mod.run_placements(config, stream=out)
    caps = np.asarray(state.files.read_methods()["caps"])
    prior = None
    if around == "prior":
        prior = resolve_prior(config.mrf.anchor, names, [len(tasks[t].train) for t in names],
                              config.evaluation.temperature)
        raw = draw_around(prior, mixtures, seed=config.mixture.seed)
    else:
        raw = draw_mixtures(len(names), mixtures, concentration=concentration,
                            seed=config.mixture.seed)
    draws = np.array([apply_caps(w, caps) for w in raw])
    methods = {"uniform": apply_caps(np.full(len(names), 1.0 / len(names)), caps),
               **{f"swarm-{i:03d}": w for i, w in enumerate(draws)}}
    seed = config.evaluation.seeds[0]
    rows = ensure_evaluation(
        base, {m: dict(zip(names, map(float, w), strict=True)) for m, w in methods.items()},
        {t: tasks[t].train for t in names}, mean_tokens,
        eval_set(config, tasks, {}, {}), Recipe.from_config(config, compute), seeds=[seed],
        root=state.root, stream=out)
    split = "dev" if config.evaluation.test_share > 0 else "eval"  # never the test part
    def mean_of(metric: str) -> dict[str, float]:
        return {m: float(np.mean([r[metric] for r in rows
                                  if r["method"] == m and r["split"] == split]))
                for m in methods}

    score, logprob = mean_of("accuracy"), mean_of("logprob")
    swarm_scores = np.array([score[f"swarm-{i:03d}"] for i in range(mixtures)])
    swarm_logprob = np.array([logprob[f"swarm-{i:03d}"] for i in range(mixtures)])
    best = int(np.argmax(swarm_scores))
    result: dict[str, Any] = {
        "tasks": names, "concentration": concentration, "seed": seed,
        "around": around if prior is None else {"prior": config.mrf.anchor.prior,
                                                "weights": [float(v) for v in prior],
                                                "strengths": list(AROUND_RANGE)},
        "metric": f"mean accuracy over the mixture tasks' {split} split",
        "uniform": score["uniform"], "uniform_logprob": logprob["uniform"],
        "mixtures": [{"weights": dict(zip(names, map(float, w), strict=True)),
                      "score": float(s), "logprob": float(lp)}
                     for w, s, lp in zip(draws, swarm_scores, swarm_logprob, strict=True)],
        "best": {"mixture": best, "score": float(swarm_scores[best]),
                 "minus_uniform": float(swarm_scores[best] - score["uniform"])},
    }
    regmix: dict[str, Any] = {}
    argmax: dict[str, Any] = {}
    for kind in ("linear", "lightgbm"):
        started = time.process_time()
        fitted = fit_regmix(draws, swarm_scores, kind)
        for top, into in ((REGMIX_TOP, regmix), (1, argmax)):
            weights, predicted = regmix_weights(fitted, len(names), seed=config.mixture.seed + 1,
                                                top=top, prior=prior)
            weights = apply_caps(weights, caps)
            into[kind] = {"weights": dict(zip(names, map(float, weights), strict=True)),
                          "predicted": predicted, "top": top,
                          # the fit and the candidates (the swarm's trainings are extra)
                          "compute_cpu_s": time.process_time() - started}
    result["regmix"] = regmix  # the mean of the top 128, as RegMix's code
    result["regmix_argmax"] = argmax
    loss_of = {(r["method"], r["task"]): task_loss(r) for r in rows
               if r["split"] == split and r["method"].startswith("swarm-")}
    losses = np.array([[loss_of.get((f"swarm-{i:03d}", t), np.nan) for t in names]
                       for i in range(mixtures)])  # a missing row: nan, and Olmix sits out
    result["olmix"] = olmix(draws, losses, caps=caps, prior=prior, seed=config.mixture.seed,
                            names=names)
    relations = open_relations(Path(state.stages["relations"]["path"]))
    table = []
    for form, utility, rho_spec in FIDELITY_VARIANTS:
        rho = 1.0 / len(names) if rho_spec == "1/T" else float(rho_spec)
        quad, lin = energy_terms(relations, form, utility)(np.arange(len(names)))
        neg = np.array([-(0.5 * w @ quad @ w - rho * lin @ w) for w in draws])
        rho_s, lo, hi = fidelity(neg, swarm_scores)
        lp_s, lp_lo, lp_hi = fidelity(neg, swarm_logprob)
        table.append({"energy": form, "utility": utility, "rho": rho, "spearman": rho_s,
                      "lo": lo, "hi": hi, "spearman_logprob": lp_s, "logprob_lo": lp_lo,
                      "logprob_hi": lp_hi})
    gold, _, item_w = mixmin_inputs(relations)  # MixMin's loss ranks the swarm too
    neg = np.array([float(item_w @ np.log(w @ gold)) for w in draws])
    rho_s, lo, hi = fidelity(neg, swarm_scores)
    lp_s, lp_lo, lp_hi = fidelity(neg, swarm_logprob)
    table.append({"energy": "mixmin", "utility": "none", "rho": 0.0, "spearman": rho_s,
                  "lo": lo, "hi": hi, "spearman_logprob": lp_s, "logprob_lo": lp_lo,
                  "logprob_hi": lp_hi})
    result["fidelity"] = table
    atomic.write_json(state.files.file(RunDir.SWARM), result)
    say(f"swarm: {mixtures} mixtures; best {swarm_scores[best]:.3f} against uniform "
        f"{score['uniform']:.3f}; written to {state.files.file(RunDir.SWARM)}", out)
    return result
