"""The base's frozen lower layers, computed once per example and reused by every model.

With ``experts.layers: N`` an adapter changes only the top N of the base's L layers, so the
hidden state entering layer k = L − N (the *boundary*) is the base model's at every prompt
and answer token: the same for the base, for every expert and for every evaluation
training. :func:`boundary_states` computes it once per example (the lower k layers, with
their own KV cache so the prompt is computed once for all its answers), and
:func:`taskpgm.signals.score_batch` then runs only the upper layers and the head from those
states instead of from the token ids.

What is cached, per example: the boundary hidden state of every prompt token, [P, d], and
of every answer's tokens after the prompt, [A_a, d] for answer a, on the CPU in the
dtype the lower layers produced (float32 in fp32: 4 d bytes a token, 2,304 for
SmolLM2-135M's d = 576). The upper layers' keys and values
depend on the adapter, so they are computed from the states on every scoring, as before.
States live in a per-process store bounded by ``base.frozen_cache_mb`` (least recently used
out; a set larger than the bound is scored the uncached way, with a line that says so),
keyed by the base's fingerprint, the boundary, the scoring precision, the tokenization
settings and the examples' content.

The upper stack is run by the model's own forward with its layer list cut to the upper
layers (:func:`stack`), so rotary positions, masks and the final norm are the model's own.
That needs a decoder whose forward feeds ``inputs_embeds`` to its first layer unchanged
(:data:`ARCHITECTURES`); any other model is scored the uncached way.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from taskpgm.placement import Placement

#: Decoders whose forward passes ``inputs_embeds`` to the first layer unchanged (Gemma,
#: for one, scales them) and keeps ``layers``, ``norm`` and a per-layer ``layer_idx``.
ARCHITECTURES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


#: The on-disk states of a scored example set: a cache artifact like every stage's.
STAGE = "frozen"
VERSION = 1
STATES_FILE = "states.safetensors"


@dataclass(frozen=True)
class Boundary:
    """Where the frozen layers end for a set of scorings: the base's fingerprint (what the
    states are of) and the first adapted layer ``layer``; ``max_bytes`` bounds the store.
    With ``disk`` a scored set's states are also an artifact in the cache (``root``, or
    the default cache), so other processes and Ray jobs that share it read them."""

    base: str
    layer: int
    max_bytes: int = 1 << 30
    disk: bool = False
    root: Path | None = None


#: One example's boundary states: the prompt's [P, d] and each answer's [A_a, d].
States = tuple[torch.Tensor, tuple[torch.Tensor, ...]]


def backbone_of(model: Any) -> Any:
    """The decoder (hidden states) of a causal LM or a PEFT wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_decoder()


def supported(model: Any) -> bool:
    """Whether this model's upper layers can be run from boundary states."""
    backbone = backbone_of(model)
    kind = getattr(getattr(backbone, "config", None), "model_type", None)
    return (kind in ARCHITECTURES and isinstance(getattr(backbone, "layers", None),
                                                 torch.nn.ModuleList)
            and hasattr(backbone, "norm"))


def first_adapted_layer(model: Any) -> int:
    """The lowest layer whose output an enabled, active LoRA adapter changes: 0 when the
    first layer is adapted, the number of layers when none is (a plain model, or a PEFT
    model inside ``disable_adapter()``). Read from the layers' own LoRA modules, so it
    holds whatever config the adapter came with."""
    layers = backbone_of(model).layers
    for i, layer in enumerate(layers):
        for module in layer.modules():
            lora = getattr(module, "lora_A", None)
            if lora is None or getattr(module, "disable_adapters", False):
                continue
            active = getattr(module, "active_adapters", ())
            if any(name in lora for name in active):
                return i
    return len(layers)


def usable(model: Any, boundary: Boundary) -> bool:
    """Whether ``model`` can run from states at ``boundary``: a supported architecture
    whose layers below the boundary are the base's (no active adapter there)."""
    return (boundary.layer > 0 and supported(model)
            and first_adapted_layer(model) >= boundary.layer)


@contextlib.contextmanager
def stack(backbone: Any, start: int, stop: int, *, final_norm: bool) -> Iterator[None]:
    """Within the block, the backbone's forward runs only layers [start, stop), renumbered
    from 0 for the KV cache, and applies its final norm only when ``final_norm``."""
    layers = backbone.layers
    kept = list(layers)[start:stop]
    old_idx = [getattr(layer.self_attn, "layer_idx", None) for layer in kept]
    norm = backbone.norm
    try:
        backbone.layers = torch.nn.ModuleList(kept)
        for i, layer in enumerate(kept):
            layer.self_attn.layer_idx = i
        if not final_norm:
            backbone.norm = torch.nn.Identity()
        yield
    finally:
        backbone.layers = layers
        backbone.norm = norm
        for layer, idx in zip(kept, old_idx, strict=True):
            layer.self_attn.layer_idx = idx


def set_key(boundary: Boundary, encoded: Sequence[tuple[list[int], list[list[int]]]],
            placement: Placement) -> str:
    """The store's key of one set of examples: base, boundary, precision and token ids."""
    h = hashlib.sha256(json.dumps([boundary.base, boundary.layer, placement.bf16,
                                   placement.device]).encode())
    for prompt, answers in encoded:
        h.update(json.dumps([prompt, answers]).encode())
    return h.hexdigest()


def states_bytes(states: Sequence[States]) -> int:
    return sum(p.numel() * p.element_size() + sum(a.numel() * a.element_size() for a in ans)
               for p, ans in states)


class Store:
    """Boundary states in memory — of a scored example set, or of one training sequence —
    least recently used out past a bound."""

    def __init__(self) -> None:
        self.sets: OrderedDict[str, Any] = OrderedDict()
        self.sizes: dict[str, int] = {}
        self.bytes = 0
        self.built = 0  # entries computed (tests and benchmarks read these)
        self.hits = 0

    def get(self, key: str) -> Any:
        found = self.sets.get(key)
        if found is not None:
            self.sets.move_to_end(key)
            self.hits += 1
        return found

    def put(self, key: str, value: Any, nbytes: int, max_bytes: int) -> None:
        if key in self.sets:
            self.bytes -= self.sizes[key]
        self.sets[key], self.sizes[key] = value, nbytes
        self.bytes += nbytes
        self.built += 1
        while len(self.sets) > 1 and self.bytes > max_bytes:
            old, _ = self.sets.popitem(last=False)
            self.bytes -= self.sizes.pop(old)

    def clear(self) -> None:
        self.sets.clear()
        self.sizes.clear()
        self.bytes = self.built = self.hits = 0


STORE = Store()


def left_padded(prompts: Sequence[Sequence[int]], pad_id: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts left-padded into one batch: ids, attention mask and positions (the two
    passes of the scorer and of :func:`boundary_states` build it the same way)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt))
        mask[row, width - len(prompt) :] = 1
    return ids, mask, (mask.cumsum(1) - 1).clamp(min=0)


def continuations(encoded: Sequence[tuple[list[int], list[list[int]]]],
                  pairs: Sequence[tuple[int, int]], mask: torch.Tensor, pad_id: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The second pass's batch: answer a of example e for each (e, a) in ``pairs``,
    right-padded, attending to its prompt's cache rows — ids, their own mask, the mask
    over prompt and answer, and the answer tokens' positions."""
    lc = max(len(encoded[e][1][a]) for e, a in pairs)
    cids = torch.full((len(pairs), lc), pad_id, dtype=torch.long)
    cmask = torch.zeros((len(pairs), lc), dtype=torch.long)
    for r, (e, a) in enumerate(pairs):
        toks = encoded[e][1][a]
        cids[r, : len(toks)] = torch.tensor(toks)
        cmask[r, : len(toks)] = 1
    sel = torch.tensor([e for e, _ in pairs])
    full_mask = torch.cat([mask.cpu()[sel], cmask], dim=1)
    start = torch.tensor([len(encoded[e][0]) for e, _ in pairs])
    return cids, cmask, full_mask, start[:, None] + torch.arange(lc)[None, :]


@torch.no_grad()
def boundary_states(model: Any, encoded: Sequence[tuple[list[int], list[list[int]]]],
                    layer: int, pad_id: int, placement: Placement, batch_size: int
                    ) -> list[States]:
    """The hidden states entering ``layer`` for every prompt and answer token, per example.

    The same two passes as the scoring: the prompts left-padded through layers [0, layer)
    with a KV cache, then every answer's tokens attending to its prompt's cache. ``model``
    must not adapt any layer below ``layer`` (its lower layers are the base's).
    """
    from transformers import DynamicCache

    backbone = backbone_of(model)
    dev = placement.torch_device
    out: list[States] = []
    autocast = placement.autocast()
    with stack(backbone, 0, layer, final_norm=False), autocast:
        for start in range(0, len(encoded), batch_size):
            part = encoded[start : start + batch_size]
            ids, mask, positions = left_padded([p for p, _ in part], pad_id)
            width = ids.shape[1]
            cache = DynamicCache()
            hidden = backbone(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                              position_ids=positions.to(dev), use_cache=True,
                              **{cache_kwarg(backbone): cache}).last_hidden_state
            prompts = [hidden[row, width - len(p) :].cpu()
                       for row, (p, _) in enumerate(part)]
            pairs = [(e, a) for e, (_, answers) in enumerate(part) for a in range(len(answers))]
            cache.batch_select_indices(torch.tensor([e for e, _ in pairs], device=dev))
            cids, _, full_mask, cpos = continuations(part, pairs, mask, pad_id)
            chidden = backbone(input_ids=cids.to(dev), attention_mask=full_mask.to(dev),
                               position_ids=cpos.to(dev), use_cache=True,
                               **{cache_kwarg(backbone): cache}).last_hidden_state
            answers: list[list[torch.Tensor]] = [[] for _ in part]
            for r, (e, a) in enumerate(pairs):
                answers[e].append(chidden[r, : len(part[e][1][a])].cpu())
            out.extend((p, tuple(ans)) for p, ans in zip(prompts, answers, strict=True))
    return out


def cache_kwarg(backbone: Any) -> str:
    """``cache`` in transformers ≥ 5.2x, ``past_key_values`` before."""
    params = inspect.signature(backbone.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def states_for(model: Any, encoded: Sequence[tuple[list[int], list[list[int]]]],
               boundary: Boundary, pad_id: int, placement: Placement, batch_size: int
               ) -> list[States] | None:
    """The example set's boundary states from the store, else computed and kept; None when
    this model cannot use them (another architecture, an adapter below the boundary, or a
    set larger than the store's bound)."""
    if not usable(model, boundary):
        return None
    key = set_key(boundary, encoded, placement)
    found: list[States] | None = STORE.get(key)
    if found is not None:
        return found
    d = int(backbone_of(model).config.hidden_size)
    tokens = sum(len(p) + sum(len(a) for a in ans) for p, ans in encoded)
    if tokens * d * 4 > boundary.max_bytes:
        return None
    if not boundary.disk:
        states = boundary_states(model, encoded, boundary.layer, pad_id, placement, batch_size)
    else:
        from taskpgm import artifacts

        def compute(tmp: Path) -> dict[str, Any]:
            computed = boundary_states(model, encoded, boundary.layer, pad_id, placement,
                                       batch_size)
            save_states(computed, tmp / STATES_FILE)
            return {"base": boundary.base, "layer": boundary.layer, "examples": len(encoded),
                    "tokens": tokens, "bytes_per_token": 4 * d}

        fp = artifacts.fingerprint(STAGE, VERSION, [key], {}, {})
        folder, _ = artifacts.ensure(STAGE, f"states-{boundary.layer}", fp, compute,
                                     root=boundary.root)
        states = load_states(folder / STATES_FILE)
    STORE.put(key, states, states_bytes(states), boundary.max_bytes)
    return states


def save_states(states: Sequence[States], path: Path) -> None:
    """One set's states as one safetensors file: the rows of every prompt and answer in
    order, and their lengths."""
    from safetensors.torch import save_file

    rows = [t for p, ans in states for t in (p, *ans)]
    save_file({"rows": torch.cat(rows).contiguous(),
               "lengths": torch.tensor([t.shape[0] for t in rows], dtype=torch.int64),
               "answers": torch.tensor([len(ans) for _, ans in states], dtype=torch.int64)},
              str(path))


def load_states(path: Path) -> list[States]:
    from safetensors.torch import load_file

    held = load_file(str(path))
    parts = iter(torch.split(held["rows"], held["lengths"].tolist()))
    return [(next(parts), tuple(next(parts) for _ in range(int(n))))
            for n in held["answers"].tolist()]


def adapter_boundary(adapters: Sequence[Any], n_layers: int) -> int | None:
    """The first layer any of these LoRA adapter directories changes (their
    ``adapter_config.json``), or None when one adapts every layer or is not an adapter."""
    from pathlib import Path

    lowest = n_layers
    for folder in adapters:
        config = Path(folder) / "adapter_config.json"
        if not config.is_file():
            return None
        layers = json.loads(config.read_text()).get("layers_to_transform")
        if layers is None:
            return None
        lowest = min([lowest, *([layers] if isinstance(layers, int) else layers)])
    return lowest if lowest < n_layers else None


def sequence_key(boundary: Boundary, ids: Sequence[int], placement: Placement) -> str:
    """The store's key of one training sequence's states."""
    return hashlib.sha256(json.dumps(["train", boundary.base, boundary.layer, placement.bf16,
                                      placement.device, list(ids)]).encode()).hexdigest()


@torch.no_grad()
def sequence_states(model: Any, batch: Sequence[Sequence[int]], boundary: Boundary,
                    pad_id: int, placement: Placement) -> list[torch.Tensor]:
    """The boundary states [len, d] of each token sequence of a training batch: from the
    store, else computed through the lower layers of ``model`` (which must not adapt them)
    and kept. Each sequence is computed alone, so its states are the same whichever
    training computed them first: a run gives the same adapters however its store was
    filled (killed and resumed, or trainings in another order)."""
    keys = [sequence_key(boundary, ids, placement) for ids in batch]
    found = [STORE.get(k) for k in keys]
    missing = [i for i, f in enumerate(found) if f is None]
    backbone = backbone_of(model)
    dev = placement.torch_device
    for i in missing:  # each alone, so its states never depend on what it was batched with
        ids = torch.tensor([list(batch[i])], dtype=torch.long, device=dev)
        with stack(backbone, 0, boundary.layer, final_norm=False), placement.autocast():
            states = backbone(input_ids=ids).last_hidden_state[0].cpu()
        found[i] = states
        STORE.put(keys[i], states, states.numel() * states.element_size(), boundary.max_bytes)
    return [f for f in found if f is not None]
