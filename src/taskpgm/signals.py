"""Signals: what the base model and every expert predict on the whole probe set.

For each model M and probe example x with prompt tokens c and answer tokens
a = (a_1..a_n), the stored quantities are

    ℓ_M(x) = Σ_t log p_M(a_t | c, a_<t)            (gold answer; n stored too)
    ℓ_M(x, k) for every choice k                   (multiple choice, raw sums)
    top-k of log p_M(· | c, a_<t), tail mass 1 − Σ_top-k p   (generative, each t)

Scoring is done in two passes per batch so the prompt is computed once:

1. the prompts, left-padded, go through the backbone once with a KV cache; the
   hidden state at the last prompt position gives the first answer token's
   distribution for every choice;
2. the cache rows are repeated once per choice and only the choice tokens go
   through the backbone, attending to the cached prompt. Single-token choices
   need no second pass at all.

The language-model head is applied only to the positions whose next token is
scored, never to every position. Experts are LoRA adapters switched on one
loaded base. Models and batches live on the device :mod:`taskpgm.device`
chooses; scoring is float32 unless ``signals.precision`` asks for bf16 (the
manifest records which precision produced the numbers). Each model's results
are one safetensors shard; the artifact's manifest lists the probe example ids
in order and every model's fingerprint.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from taskpgm import artifacts, atomic, frozen
from taskpgm import device as device_mod
from taskpgm.config import RunConfig, SignalsConfig
from taskpgm.errors import DataError, ModelError, NotFoundError
from taskpgm.experts import Expert
from taskpgm.models import Base, check_adapter_dir, load
from taskpgm.placement import Placement
from taskpgm.progress import Progress
from taskpgm.readers import BASE_KEY, Signals, model_keys, open_signals
from taskpgm.tasks.schema import Example, probe_fingerprint
from taskpgm.tokens import encode

STAGE = "signals"
PARTS = "scores"  # one model on one task's probe examples: the unit that is reused
# 2: trailing prompt spaces move onto the answer (tokens.encode); 3: each model is scored
# task by task (batches never mix tasks), so adding a task rescores only what is new
VERSION = 3
#: The ``signals`` defaults of VERSION, frozen (with ``bf16`` for the scoring precision):
#: a setting equal to its entry here stays out of the fingerprint. When a default in
#: config.SignalsConfig changes, bump VERSION and refresh this snapshot
#: (tests/test_fingerprints.py fails until both are done).
DEFAULTS: dict[str, Any] = {"top_k": 32, "batch_size": 16, "max_length": 512, "bf16": False}


def _answers(ex: Example) -> list[str]:
    """What is scored: every choice (multiple choice) or the first target (generative)."""
    return list(ex.choices) if ex.choices is not None else [ex.targets[0]]


def _gold(ex: Example) -> int:
    return ex.correct[0] if ex.choices is not None else 0


def _model_parts(model: Any) -> tuple[Any, Any]:
    """The backbone (hidden states) and the LM head of a causal LM or a PEFT wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return frozen.backbone_of(model), inner.get_output_embeddings()


def fingerprint_settings(cfg: SignalsConfig, placement: Placement) -> dict[str, Any]:
    """The scoring settings that define the numbers: ``precision`` resolved, written as
    ``bf16`` (its key before ``precision`` existed) so old artifacts keep their
    fingerprints."""
    # probe_total/probe_floor choose the probe set, which the fingerprint covers itself
    return {**cfg.model_dump(exclude={"precision", "probe_total", "probe_floor"}),
            "bf16": placement.bf16}


def fingerprint_of(parents: Sequence[str], cfg: SignalsConfig, placement: Placement) -> str:
    """The signals artifact's fingerprint: its parents, settings against :data:`DEFAULTS`."""
    return artifacts.fingerprint(STAGE, VERSION, parents, fingerprint_settings(cfg, placement),
                                 DEFAULTS)


def encoded_of(tokenizer: Any, examples: Sequence[Example], max_length: int
               ) -> list[tuple[list[int], list[list[int]]]]:
    """Every example's prompt and answer token ids, as the scoring reads them."""
    encoded = [encode(tokenizer, ex.prompt, _answers(ex), max_length) for ex in examples]
    for ex, (_, answers) in zip(examples, encoded, strict=True):
        if any(len(a) == 0 for a in answers):
            raise DataError(f"task {ex.task!r}, example {ex.id}: an answer tokenizes to nothing")
    return encoded


@torch.no_grad()
def score_batch(
    model: Any, tokenizer: Any, examples: Sequence[Example], cfg: SignalsConfig,
    placement: Placement | None = None, *,
    encoded: Sequence[tuple[list[int], list[list[int]]]] | None = None,
    states: Sequence[frozen.States] | None = None, layer: int = 0,
) -> list[dict[str, Any]]:
    """Score a batch of examples (see the module docstring); one dict per example.

    Each dict has ``choice_ll`` (float64, one per answer), ``choice_tokens``,
    ``gold_ll``, ``gold_tokens`` and, for generative examples, ``topk_ids``
    ``[n, k]``, ``topk_logprobs`` ``[n, k]``, ``tail_mass`` ``[n]`` and
    ``target_logprobs`` ``[n]`` over the answer positions. Tensors are built on the
    model's device; ``placement`` gives the precision (default float32). With ``states``
    (the examples' boundary states at ``layer``, :mod:`taskpgm.frozen`) only the layers
    from ``layer`` up run, from the states instead of the token ids.
    """
    backbone, head = _model_parts(model)
    dev = device_mod.model_device(model)
    placement = placement or Placement(str(dev))
    pad = tokenizer.pad_token_id
    if encoded is None:
        encoded = encoded_of(tokenizer, examples, cfg.max_length)
    ids, mask, positions = frozen.left_padded([p for p, _ in encoded], pad)
    b, width = ids.shape
    ids, mask, positions = ids.to(dev), mask.to(dev), positions.to(dev)
    autocast = placement.autocast()
    inputs: dict[str, Any] = {"input_ids": ids}
    upper: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
    if states is not None:
        from transformers import DynamicCache

        embeds = torch.zeros((b, width, states[0][0].shape[-1]), dtype=states[0][0].dtype)
        for row, (prompt_states, _) in enumerate(states):
            embeds[row, width - prompt_states.shape[0] :] = prompt_states
        inputs = {"inputs_embeds": embeds.to(dev), frozen.cache_kwarg(backbone): DynamicCache()}
        upper = functools.partial(frozen.stack, backbone, layer, len(backbone.layers),
                                  final_norm=True)
    with upper(), autocast:
        out = backbone(**inputs, attention_mask=mask, position_ids=positions, use_cache=True)
        first = torch.log_softmax(head(out.last_hidden_state[:, -1]).float(), dim=-1).cpu()
    # Rows of the second pass: every (example, answer) pair with more than one token.
    rows = [(e, a) for e, (_, answers) in enumerate(encoded) for a in range(len(answers))]
    multi = [(e, a) for e, a in rows if len(encoded[e][1][a]) > 1]
    rest: dict[tuple[int, int], torch.Tensor] = {}  # log-probs at answer positions 2..n
    if multi:
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        cache.batch_select_indices(torch.tensor([e for e, _ in multi], device=dev))
        cids, cmask, full_mask, cpos = frozen.continuations(encoded, multi, mask, pad)
        lc = cids.shape[1]
        cids, full_mask, cpos = cids.to(dev), full_mask.to(dev), cpos.to(dev)
        cinputs: dict[str, Any] = {"input_ids": cids}
        if states is not None:
            cembeds = torch.zeros((len(multi), lc, states[0][0].shape[-1]),
                                  dtype=states[0][0].dtype)
            for r, (e, a) in enumerate(multi):
                answer_states = states[e][1][a]
                cembeds[r, : answer_states.shape[0]] = answer_states
            cinputs = {"inputs_embeds": cembeds.to(dev)}
        with upper(), autocast:
            hidden = backbone(**cinputs, attention_mask=full_mask, position_ids=cpos,
                              use_cache=True,
                              **{frozen.cache_kwarg(backbone): cache}).last_hidden_state
            # Only positions whose next token is an answer token: j < len - 1.
            need = torch.zeros(cmask.shape, dtype=torch.bool)
            for r, (e, a) in enumerate(multi):
                need[r, : len(encoded[e][1][a]) - 1] = True
            logp = torch.log_softmax(head(hidden[need.to(dev)]).float(), dim=-1).cpu()
        offset = 0
        for e, a in multi:
            n = len(encoded[e][1][a]) - 1
            rest[(e, a)] = logp[offset : offset + n]
            offset += n
    results = []
    for e, ex in enumerate(examples):
        answers = encoded[e][1]
        lls, positions_lp = [], []
        for a, toks in enumerate(answers):
            dist = [first[e]] + ([*rest[(e, a)]] if (e, a) in rest else [])
            token_lp = torch.stack([d[t] for d, t in zip(dist, toks, strict=True)]).double()
            lls.append(float(token_lp.sum()))
            if ex.choices is None:
                positions_lp = dist
        g = _gold(ex)
        item: dict[str, Any] = {
            "choice_ll": np.array(lls, dtype=np.float64),
            "choice_tokens": np.array([len(t) for t in answers], dtype=np.int32),
            "gold_ll": lls[g], "gold_tokens": len(answers[g]),
        }
        if ex.choices is None:
            stacked = torch.stack(positions_lp)  # [n, V]
            top = torch.topk(stacked, k=min(cfg.top_k, stacked.shape[-1]), dim=-1)
            item["topk_ids"] = top.indices.numpy().astype(np.int32)
            item["topk_logprobs"] = top.values.numpy().astype(np.float32)
            mass = top.values.double().exp().sum(-1)
            item["tail_mass"] = (1.0 - mass).clamp(min=0.0).numpy().astype(np.float32)
            item["target_logprobs"] = torch.stack(
                [d[t] for d, t in zip(positions_lp, answers[0], strict=True)]
            ).numpy().astype(np.float32)
        results.append(item)
    return results


def score(model: Any, tokenizer: Any, examples: Sequence[Example], cfg: SignalsConfig,
          *, progress: Progress | None = None, placement: Placement | None = None,
          boundary: frozen.Boundary | None = None, stream: TextIO | None = None
          ) -> dict[str, np.ndarray]:
    """Score every example with one model; returns the arrays of one shard.

    The model runs where it is; ``placement`` sets the precision (default:
    ``cfg.precision`` resolved on the model's device).

    Examples are batched by prompt length (sorted, then cut into batches of
    ``cfg.batch_size``); the arrays are in the original order:

    * ``gold_ll`` [N] float64, ``gold_tokens`` [N] int32;
    * ``choice_offsets`` [N+1] int64 into ``choice_ll`` / ``choice_tokens``
      (one entry per choice; generative examples have one: their target);
    * ``position_offsets`` [N+1] int64 into the answer-position arrays
      ``topk_ids`` / ``topk_logprobs`` [P, k], ``tail_mass``, ``target_logprobs`` [P]
      (generative examples only; multiple-choice examples own no positions).
    """
    model.eval()
    if placement is None:
        placement = device_mod.resolve(str(device_mod.model_device(model)), cfg.precision)
    k = cfg.top_k
    order = sorted(range(len(examples)),
                   key=lambda i: (len(examples[i].prompt), len(_answers(examples[i]))))
    encoded = encoded_of(tokenizer, examples, cfg.max_length)
    states: list[frozen.States] | None = None
    if boundary is not None and examples:
        sorted_encoded = [encoded[i] for i in order]
        held = frozen.states_for(model, sorted_encoded, boundary, tokenizer.pad_token_id,
                                 placement, cfg.batch_size)
        if held is None:
            print(f"scoring: {len(examples)} examples the uncached way (frozen layers: this "
                  "model or set does not fit base.frozen_cache_mb or the architecture)",
                  file=stream or sys.stderr, flush=True)
        else:
            by_index = dict(zip(order, held, strict=True))
            states = [by_index[i] for i in range(len(examples))]
    items: list[dict[str, Any] | None] = [None] * len(examples)
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        for i, item in zip(idx, score_batch(
                model, tokenizer, [examples[i] for i in idx], cfg, placement,
                encoded=[encoded[i] for i in idx],
                states=None if states is None else [states[i] for i in idx],
                layer=0 if boundary is None else boundary.layer), strict=True):
            items[i] = item
        if progress is not None:
            progress.update(len(idx))
    done = [it for it in items if it is not None]
    n_pos = [len(it["tail_mass"]) if "tail_mass" in it else 0 for it in done]
    kk = max([it["topk_ids"].shape[1] for it in done if "topk_ids" in it], default=k)

    def cat(key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        parts = [it[key] for it in done if key in it]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype=dtype)

    return {
        "gold_ll": np.array([it["gold_ll"] for it in done], dtype=np.float64),
        "gold_tokens": np.array([it["gold_tokens"] for it in done], dtype=np.int32),
        "choice_offsets": np.concatenate([[0], np.cumsum([len(it["choice_ll"]) for it in done])]
                                         ).astype(np.int64),
        "choice_ll": np.concatenate([it["choice_ll"] for it in done]).astype(np.float64),
        "choice_tokens": np.concatenate([it["choice_tokens"] for it in done]).astype(np.int32),
        "position_offsets": np.concatenate([[0], np.cumsum(n_pos)]).astype(np.int64),
        "topk_ids": cat("topk_ids", (0, kk), np.int32),
        "topk_logprobs": cat("topk_logprobs", (0, kk), np.float32),
        "tail_mass": cat("tail_mass", (0,), np.float32),
        "target_logprobs": cat("target_logprobs", (0,), np.float32),
    }


@torch.no_grad()
def probe_set(probes: Mapping[str, Sequence[Example]]) -> list[Example]:
    """The union of every task's probe split, in task order; empty parts are errors."""
    if not probes:
        raise DataError("the probe set is empty: the config lists no tasks (tasks.names)")
    for task, examples in probes.items():
        if not examples:
            raise DataError(f"task {task!r} has no probe examples; raise tasks.probe or "
                            "drop the task (it may be too small to split)")
    return [ex for examples in probes.values() for ex in examples]


def shard_name(key: str) -> str:
    """The file of one model's scores in the signals' work directory (``base``, ``expert:T``)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return f"{safe}.safetensors"


def unscored(work: Path, keys: Iterable[str]) -> list[str]:
    """The models of ``keys`` whose shard is not yet in the work directory ``work``."""
    return [k for k in keys if not (work / shard_name(k)).is_file()]


def model_fingerprints(base: Base, experts: Mapping[str, Expert]) -> dict[str, str]:
    """{model key: its fingerprint}, in :func:`taskpgm.readers.model_keys` order."""
    return dict(zip(model_keys(experts),
                    [base.fingerprint, *(e.fingerprint for e in experts.values())],
                    strict=True))


def ensure_signals(
    base: Base,
    experts: Mapping[str, Expert],
    probes: Mapping[str, Sequence[Example]],
    cfg: SignalsConfig,
    *,
    root: Path | None = None,
    stream: TextIO | None = None,
    placement: Placement | None = None,
) -> Signals:
    """Score the base and every expert on the probe set, reusing finished work.

    The artifact's fingerprint covers the base, the probe set, every expert's
    fingerprint, the non-default ``signals`` settings and the scoring precision
    (``placement``; default ``cfg.precision`` on the base's device). Each model's shard is
    written to the work directory as soon as it is done, so a killed run rescoring
    resumes at the next model.
    """
    examples, ids, probe_fp, placement, fp = plan_probe(base, experts, probes, cfg, placement,
                                                        stream)
    name = "probe"
    out = stream or sys.stderr

    def compute(tmp: Path) -> dict[str, Any]:
        keys = model_keys(experts)
        fps = model_fingerprints(base, experts)
        work = artifacts.work_dir(STAGE, name, fp, root=root)
        todo = unscored(work, keys)
        print(f"signals: {len(examples)} probe examples × {len(keys)} models; "
              f"{len(keys) - len(todo)} already scored", file=out, flush=True)
        if todo:
            stats = score_shards(base, experts, examples, cfg, todo, work, out, placement,
                                  root)
            print(f"signals: {stats['scored']:,} example scorings now, {stats['reused']:,} "
                  "reused from earlier runs", file=out, flush=True)
        for k in keys:
            os.link(work / shard_name(k), tmp / shard_name(k))
        return {
            "base": {"name": base.name, "fingerprint": base.fingerprint},
            "probe": {"fingerprint": probe_fp, "ids": ids, "tasks": [ex.task for ex in examples],
                      "kinds": [ex.kind for ex in examples],
                      "gold": [_gold(ex) for ex in examples]},
            "models": {k: {"fingerprint": fps[k], "shard": shard_name(k)} for k in keys},
            "config": cfg.model_dump(),
            "compute": placement.as_dict(),
        }

    found, computed = artifacts.ensure(STAGE, name, fp, compute, root=root, stream=stream)
    if not computed:
        print(f"signals: reusing {found}", file=out, flush=True)
    return open_signals(found)


def plan_probe(base: Base, experts: Mapping[str, Expert],
               probes: Mapping[str, Sequence[Example]], cfg: SignalsConfig,
               placement: Placement | None, stream: TextIO | None
               ) -> tuple[list[Example], list[str], str, Placement, str]:
    """(probe examples, their ids, probe fingerprint, placement, artifact fingerprint)."""
    examples = probe_set(probes)
    ids = [ex.id for ex in examples]
    if len(set(zip([ex.task for ex in examples], ids, strict=True))) != len(ids):
        raise DataError("the probe set holds the same (task, example id) twice; "
                        "check the task loaders' ids")
    probe_fp = probe_fingerprint(examples)
    parents = [base.fingerprint, probe_fp, *(f"{t}={e.fingerprint}" for t, e in experts.items())]
    if placement is None:
        placement = device_mod.resolve(base.device, cfg.precision, stream=stream)
    return examples, ids, probe_fp, placement, fingerprint_of(parents, cfg, placement)


def score_only(base: Base, experts: Mapping[str, Expert], probes: Mapping[str, Sequence[Example]],
               cfg: SignalsConfig, models: Sequence[str], *, root: Path | None = None,
               stream: TextIO | None = None, placement: Placement | None = None
               ) -> Signals | None:
    """Score just ``models`` (``base`` or task names) into the signals' work directory.

    ``taskpgm signals --only``: one scheduler job per model, all sharing the cache; each
    shard has its own lock, so jobs never score one model twice. Once every model's
    shard is there the artifact is assembled (by whichever job finishes last) and
    returned; until then ``None``.
    """
    examples, _, _, placement, fp = plan_probe(base, experts, probes, cfg, placement, stream)
    found = artifacts.find(STAGE, "probe", fp, root=root)
    if found is not None:
        return open_signals(found)
    keys = model_keys(experts)
    wanted = [BASE_KEY if m == "base" else f"expert:{m}" for m in models]
    unknown = sorted(set(wanted) - set(keys))
    if unknown:
        raise NotFoundError(f"--only names {[u.removeprefix('expert:') for u in unknown]}: "
                            f"neither base nor a task of the config ({', '.join(experts)})")
    work = artifacts.work_dir(STAGE, "probe", fp, root=root)
    score_shards(base, experts, examples, cfg, wanted, work, stream or sys.stderr, placement,
                  root)
    if not unscored(work, keys):
        return ensure_signals(base, experts, probes, cfg, root=root, stream=stream,
                              placement=placement)
    return None


def sample_probes(probes: Mapping[str, Sequence[Example]], total: int | None, floor: int,
                  seed: int = 0) -> dict[str, list[Example]]:
    """A stratified sample of the probe set: ``total`` examples in all, at least
    ``min(floor, P_t)`` of each task t, the rest shared in proportion to P_t − that floor
    (largest remainders, ties to the earlier task). Within a task the examples with the
    smallest sha256 of (seed, id) are kept, in their order, so the sample depends only on
    the examples and the seed; a task's sample grows with ``total`` (nested samples).

    ``total`` None, or at least the whole probe set: every example.
    """
    import hashlib

    sizes = {t: len(v) for t, v in probes.items()}
    if total is None or total >= sum(sizes.values()):
        return {t: list(v) for t, v in probes.items()}
    base = {t: min(floor, n) for t, n in sizes.items()}
    left = max(0, total - sum(base.values()))
    room = {t: sizes[t] - base[t] for t in sizes}
    spare = sum(room.values())
    extra = {t: 0 for t in sizes}
    if left and spare:
        quota = {t: left * room[t] / spare for t in sizes}
        extra = {t: int(q) for t, q in quota.items()}
        order = sorted(sizes, key=lambda t: -(quota[t] - extra[t]))
        for t in order[: left - sum(extra.values())]:
            extra[t] += 1
    out = {}
    for t, examples in probes.items():
        keep = base[t] + min(extra[t], room[t])
        ranked = sorted(range(len(examples)), key=lambda i: hashlib.sha256(
            f"{seed}:{examples[i].id}".encode()).hexdigest())[:keep]
        out[t] = [examples[i] for i in sorted(ranked)]
    return out


def probes_of(config: RunConfig, tasks: Mapping[str, Any]) -> dict[str, list[Example]]:
    """The probe examples a run scores: every task's probe split, or its stratified sample
    (``signals.probe_total``)."""
    sig = config.signals
    return sample_probes({t: s.probe for t, s in tasks.items()}, sig.probe_total,
                         sig.probe_floor, config.tasks.splits.seed)


def concat_shards(parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One shard from shards of consecutive example ranges (offsets shifted)."""
    out: dict[str, np.ndarray] = {}
    for key in ("gold_ll", "gold_tokens", "choice_ll", "choice_tokens", "topk_ids",
                "topk_logprobs", "tail_mass", "target_logprobs"):
        out[key] = np.concatenate([p[key] for p in parts])
    for key, of in (("choice_offsets", "choice_ll"), ("position_offsets", "tail_mass")):
        shifted, start = [np.zeros(1, dtype=np.int64)], 0
        for p in parts:
            shifted.append(p[key][1:] + start)
            start += len(p[of])
        out[key] = np.concatenate(shifted).astype(np.int64)
    return out


def part_fingerprint(model_fp: str, examples: Sequence[Example], cfg: SignalsConfig,
                     placement: Placement) -> str:
    """One model's scores on one task's probe examples: model, examples, settings."""
    return artifacts.fingerprint(PARTS, VERSION, [model_fp, probe_fingerprint(examples)],
                                 fingerprint_settings(cfg, placement), DEFAULTS)


def score_shards(base: Base, experts: Mapping[str, Expert], examples: Sequence[Example],
                  cfg: SignalsConfig, todo: Sequence[str], work: Path, out: TextIO,
                  placement: Placement, root: Path | None = None) -> dict[str, int]:
    """Each model's shard over the probe set into ``work``, from per-(model, task) parts:
    a part scored by an earlier run (another task set, say) is reused, the others are
    scored and kept. Returns the example scorings done now and those reused."""
    by_task: dict[str, list[Example]] = {}
    for ex in examples:
        by_task.setdefault(ex.task, []).append(ex)
    model_fp = model_fingerprints(base, experts)
    stats = {"scored": 0, "reused": 0}

    def part_paths(key: str) -> dict[str, tuple[str, str]]:
        name = key.replace(":", "_")
        return {t: (f"{name}.{t}", part_fingerprint(model_fp[key], exs, cfg, placement))
                for t, exs in by_task.items()}

    def cached(key: str) -> bool:
        return all(artifacts.find(PARTS, n, fp, root=root) is not None
                   for n, fp in part_paths(key).values())

    def scored(model: Any, key: str, tokenizer: Any, progress: Progress, **_: Any
               ) -> dict[str, np.ndarray]:
        parts = []
        for task, (name, fp) in part_paths(key).items():
            def compute(tmp: Path, task: str = task) -> dict[str, Any]:
                arrays = score(model, tokenizer, by_task[task], cfg, progress=progress,
                               placement=placement, boundary=boundary, stream=out)
                save_file(arrays, str(tmp / "shard.safetensors"))
                return {"model": key, "task": task, "examples": len(by_task[task])}

            found, computed = artifacts.ensure(PARTS, name, fp, compute, root=root, stream=out)
            stats["scored" if computed else "reused"] += len(by_task[task])
            parts.append(load_file(str(found / "shard.safetensors")))
        return concat_shards(parts)

    needed = [k for k in todo if not cached(k)]
    progress = Progress("signals", max(1, sum(len(examples) for _ in needed)), unit="ex",
                        every=10.0, stream=out)
    for key in todo:
        if key not in needed:  # every part scored before: assemble without loading a model
            folders = [artifacts.path_of(PARTS, n, fp, root=root)
                       for n, fp in part_paths(key).values()]
            assembled = concat_shards([load_file(str(f / "shard.safetensors")) for f in folders])
            with atomic.replacing(work / shard_name(key)) as tmp:
                save_file(assembled, str(tmp), metadata={"model": key})
            stats["reused"] += len(examples)
    if not needed:
        return stats
    loaded = base.load()
    loaded.model.to(placement.torch_device)
    # The experts' frozen lower layers are the base's: their states are computed once per
    # probe example and every model runs only the adapted layers (taskpgm.frozen).
    boundary = base.boundary(frozen.adapter_boundary(
        [e.path for e in experts.values()], len(frozen.backbone_of(loaded.model).layers))
        if experts and frozen.supported(loaded.model) else None, root=root, disk=True)

    def save(key: str, arrays: dict[str, np.ndarray]) -> None:
        with atomic.replacing(work / shard_name(key)) as tmp:
            save_file(arrays, str(tmp), metadata={"model": key})

    def claimed(key: str) -> contextlib.AbstractContextManager[None]:
        """The shard's lock: another process (``signals --only``) may be scoring it."""
        return artifacts.locked(work / shard_name(key), stream=out)

    if BASE_KEY in needed:
        with claimed(BASE_KEY):
            if not (work / shard_name(BASE_KEY)).is_file():
                print("signals: scoring base", file=out, flush=True)
                save(BASE_KEY, scored(loaded.model, BASE_KEY, loaded.tokenizer, progress))
    wrapped: Any = None
    previous: list[str] = []
    try:
        for task, expert in experts.items():
            key = f"expert:{task}"
            if key not in needed:
                continue
            with claimed(key):
                if (work / shard_name(key)).is_file():  # another process scored it
                    continue
                wrapped, previous = _score_expert(base, loaded, task, expert, key, scored,
                                                  progress, placement, save, wrapped,
                                                  previous, out)
    finally:
        if wrapped is not None:
            wrapped.unload()
    return stats


def _score_expert(base: Base, loaded: Any, task: str, expert: Expert, key: str,
                  scored: Any, progress: Progress, placement: Placement, save: Any,
                  wrapped: Any, previous: list[str], out: TextIO) -> tuple[Any, list[str]]:
    """Score one expert (a full checkpoint, or an adapter swapped into ``wrapped``)."""
    from peft import PeftModel

    print(f"signals: scoring {key}", file=out, flush=True)
    if expert.source == "checkpoint":
        path = artifacts.read_manifest(expert.path)["checkpoint"]
        full = load(str(path))
        full.model.to(placement.torch_device)
        save(key, scored(full.model, key, loaded.tokenizer, progress))
        del full
        device_mod.free_memory(placement.device)
        return wrapped, previous
    name = f"expert{len(previous)}"  # PEFT adapter names cannot hold dots
    check_adapter_dir(Path(expert.path))  # before PEFT could torch.load a .bin
    try:
        if wrapped is None:
            wrapped = PeftModel.from_pretrained(loaded.model, str(expert.path),
                                                adapter_name=name)
        else:
            wrapped.load_adapter(str(expert.path), adapter_name=name)
            wrapped.set_adapter(name)
            wrapped.delete_adapter(previous[-1])  # one adapter loaded at a time
        previous.append(name)
    except Exception as err:
        raise ModelError(f"cannot apply the adapter of expert {task!r} at {expert.path} "
                         f"to base {base.name} ({err}); delete it and rerun "
                         "`taskpgm experts`") from err
    save(key, scored(wrapped, key, loaded.tokenizer, progress))
    device_mod.free_memory(placement.device)
    return wrapped, previous
