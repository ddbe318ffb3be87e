"""Scoring from the base's frozen lower layers equals the full forward (tiny 4-layer llama)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tiny_model
from taskpgm import frozen
from taskpgm.config import ExpertsConfig, SignalsConfig
from taskpgm.models import Base
from taskpgm.signals import score
from taskpgm.tasks.schema import Example

LAYERS = 4  # the boundary sits inside the stack: layers 0-1 frozen, 2-3 adapted


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    folder = tiny_model.build(tmp_path_factory.mktemp("tiny4") / "m", seed=3, layers=LAYERS)
    return Base(str(folder))


def examples() -> list[Example]:
    """Multiple choice with multi-token choices of several counts, and generative ones."""
    out = tiny_model.colour_task(7)
    out += [Example(task="multi", id=f"m{i}", prompt="Q: " + "the sky is blue " * i + "so\nA:",
                    choices=("blue sky", "green grass one two", "red", "plum pear")[: 2 + i % 3],
                    correct=(i % 2,)) for i in range(6)]
    return out + tiny_model.sums_task(6)


def adapter(base: Base, layers: int | None, seed: int = 0) -> object:
    """A LoRA adapter with random (non-zero) B on the top ``layers`` layers."""
    from peft import get_peft_model

    from taskpgm.trainer import lora_config

    loaded = base.load()
    cfg = ExpertsConfig(layers=layers, rank=4, dropout=0.0)
    model = get_peft_model(loaded.model, lora_config(cfg, LAYERS))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], tol: float) -> None:
    for key in ("gold_ll", "choice_ll", "target_logprobs", "topk_logprobs", "tail_mass"):
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=tol, err_msg=key)
    for key in ("choice_offsets", "position_offsets", "topk_ids", "gold_tokens"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("batch_size", [1, 5])
def test_the_base_scored_from_boundary_states_equals_the_full_forward(base, batch_size):
    loaded = base.load()
    cfg = SignalsConfig(batch_size=batch_size, top_k=8)
    frozen.STORE.clear()
    full = score(loaded.model, loaded.tokenizer, examples(), cfg)
    boundary = frozen.Boundary(base.fingerprint, layer=2)
    cached = score(loaded.model, loaded.tokenizer, examples(), cfg, boundary=boundary)
    assert frozen.STORE.built == 1 and len(frozen.STORE.sets) == 1
    assert_same(full, cached, 1e-5)
    assert full["choice_tokens"].max() > 1  # the answers' second pass ran on states too


def test_an_adapter_scored_from_the_shared_states_equals_its_full_forward(base):
    loaded = base.load()
    cfg = SignalsConfig(batch_size=4, top_k=8)
    boundary = frozen.Boundary(base.fingerprint, layer=2)
    frozen.STORE.clear()
    base_scores = score(loaded.model, loaded.tokenizer, examples(), cfg, boundary=boundary)
    built = frozen.STORE.built
    for seed in (0, 1):
        wrapped = adapter(base, layers=2, seed=seed)
        try:
            full = score(wrapped, loaded.tokenizer, examples(), cfg)
            hits = frozen.STORE.hits
            cached = score(wrapped, loaded.tokenizer, examples(), cfg, boundary=boundary)
            assert frozen.STORE.hits == hits + 1  # scored from the states
        finally:
            wrapped.unload()
        assert frozen.STORE.built == built == 1  # the adapters reused the base's states
        assert_same(full, cached, 1e-5)
        assert np.abs(full["choice_ll"] - base_scores["choice_ll"]).max() > 1e-2  # it is moved


def test_an_adapter_below_the_boundary_is_scored_the_full_way(base, capsys):
    loaded = base.load()
    cfg = SignalsConfig(batch_size=4)
    wrapped = adapter(base, layers=None)  # every layer adapted: no frozen layers
    try:
        assert frozen.first_adapted_layer(wrapped) == 0
        full = score(wrapped, loaded.tokenizer, examples(), cfg)
        again = score(wrapped, loaded.tokenizer, examples(), cfg,
                      boundary=frozen.Boundary(base.fingerprint, layer=2))
    finally:
        wrapped.unload()
    np.testing.assert_array_equal(full["choice_ll"], again["choice_ll"])
    assert "uncached" in capsys.readouterr().err


def test_the_store_keeps_its_bound_and_a_set_over_it_is_not_cached(base, capsys):
    loaded = base.load()
    cfg = SignalsConfig(batch_size=4)
    frozen.STORE.clear()
    score(loaded.model, loaded.tokenizer, examples(), cfg,
          boundary=frozen.Boundary(base.fingerprint, layer=2, max_bytes=1000))
    assert not frozen.STORE.sets and "uncached" in capsys.readouterr().err
    first, second = examples()[:6], examples()[6:12]
    score(loaded.model, loaded.tokenizer, first, cfg,
          boundary=frozen.Boundary(base.fingerprint, layer=2))
    one = frozen.states_bytes(next(iter(frozen.STORE.sets.values())))
    frozen.STORE.clear()
    bound = frozen.Boundary(base.fingerprint, layer=2, max_bytes=int(one * 1.5))
    score(loaded.model, loaded.tokenizer, first, cfg, boundary=bound)
    score(loaded.model, loaded.tokenizer, second, cfg, boundary=bound)
    assert frozen.STORE.built == 2 and len(frozen.STORE.sets) == 1  # the older one went
    assert sum(frozen.states_bytes(s) for s in frozen.STORE.sets.values()) <= bound.max_bytes


def test_the_layer_stack_is_restored(base):
    loaded = base.load()
    backbone = frozen.backbone_of(loaded.model)
    layers, norm = list(backbone.layers), backbone.norm
    with pytest.raises(RuntimeError), frozen.stack(backbone, 2, 4, final_norm=False):
        assert len(backbone.layers) == 2 and backbone.layers[0].self_attn.layer_idx == 0
        raise RuntimeError
    assert list(backbone.layers) == layers and backbone.norm is norm
    assert [layer.self_attn.layer_idx for layer in backbone.layers] == [0, 1, 2, 3]


def test_states_are_not_shared_across_bases_or_boundaries(base):
    loaded = base.load()
    enc = [([5, 6, 7], [[8], [9, 10]])]
    keys = {frozen.set_key(frozen.Boundary(b, k), enc, frozen.Placement("cpu"))
            for b in (base.fingerprint, "other") for k in (1, 2)}
    assert len(keys) == 4
    assert frozen.supported(loaded.model)


def test_the_signals_stage_gives_the_same_numbers_with_and_without_the_cache(base, tmp_path):
    from taskpgm.experts import ensure_experts
    from taskpgm.signals import ensure_signals

    cfg = ExpertsConfig(steps=4, batch_size=4, lr=1e-2, checkpoint_every=100, warmup_steps=1,
                        layers=2)
    experts = ensure_experts(base, {"colours": tiny_model.colour_task(30),
                                    "sums": tiny_model.sums_task(30)}, cfg, root=tmp_path)
    assert frozen.adapter_boundary([e.path for e in experts.values()], LAYERS) == 2
    probes = {"colours": tiny_model.colour_task(6, seed=5), "sums": tiny_model.sums_task(4, seed=6)}
    frozen.STORE.clear()
    cached = ensure_signals(base, experts, probes, SignalsConfig(batch_size=3),
                            root=tmp_path / "a")
    assert frozen.STORE.built == 2 and frozen.STORE.hits == 2 * 2  # two tasks, three models
    off = Base(str(base.path), frozen_cache_mb=0)
    full = ensure_signals(off, experts, probes, SignalsConfig(batch_size=3), root=tmp_path / "b")
    for key in cached.models:
        for name in ("choice_ll", "gold_ll", "target_logprobs"):
            np.testing.assert_allclose(cached.arrays(key)[name], full.arrays(key)[name],
                                       rtol=0, atol=1e-5, err_msg=f"{key} {name}")


def test_evaluation_rows_are_the_same_with_and_without_the_cache(base, tmp_path):
    from taskpgm.evaluation import Recipe, ensure_evaluation
    from taskpgm.inputs import EvalSet

    train = {"colours": tiny_model.colour_task(40), "sums": tiny_model.sums_task(40)}
    evalset = EvalSet({("eval", "colours"): tuple(tiny_model.colour_task(8, seed=7)),
                       ("eval", "sums"): tuple(tiny_model.sums_task(6, seed=8))})
    recipe = Recipe(token_budget=300, max_repeat=4.0,
                    experts=ExpertsConfig(batch_size=4, lr=1e-2, warmup_steps=1, layers=2,
                                          precision="fp32"),
                    scoring=SignalsConfig(batch_size=4, precision="fp32"),
                    normalization="length")
    methods = {"uniform": {"colours": 0.5, "sums": 0.5}, "tilted": {"colours": 0.8, "sums": 0.2}}
    frozen.STORE.clear()
    rows = ensure_evaluation(base, methods, train, {"colours": 12.0, "sums": 6.0}, evalset,
                             recipe, seeds=[0], root=tmp_path / "a")
    # the eval set's states built once (with the base) and read by both trainings' scoring;
    # the two mixtures share most training sequences, whose states the second one reuses
    scored_sets = [v for v in frozen.STORE.sets.values() if isinstance(v, list)]
    assert len(scored_sets) == 1 and frozen.STORE.hits >= 2 + 10
    off = Base(str(base.path), frozen_cache_mb=0)
    again = ensure_evaluation(off, methods, train, {"colours": 12.0, "sums": 6.0}, evalset,
                              recipe, seeds=[0], root=tmp_path / "b")
    assert len(rows) == len(again)
    for a, b in zip(rows, again, strict=True):
        assert (a["method"], a["task"], a["accuracy"]) == (b["method"], b["task"], b["accuracy"])
        assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-5)


@pytest.mark.parametrize("order", ["shuffled", "keyed"])
def test_an_adapter_trained_on_boundary_states_equals_one_trained_the_full_way(
        base, tmp_path, order):
    from safetensors.torch import load_file

    from taskpgm.trainer import train_adapter

    loaded = base.load()
    data = tiny_model.colour_task(24) + tiny_model.sums_task(16)
    cfg = ExpertsConfig(steps=6, batch_size=4, lr=1e-2, warmup_steps=1, layers=2,
                        checkpoint_every=100, dropout=0.1, precision="fp32")
    keys = [(i * 0.618) % 1.0 for i in range(len(data))] if order == "keyed" else None
    kw = {"order": order, "keys": keys, "n_batches": 10 if keys else None}
    frozen.STORE.clear()
    full = train_adapter(loaded, "t", data, cfg, tmp_path / "w1", tmp_path / "a1", **kw)
    assert frozen.STORE.built == 0
    boundary = frozen.Boundary(base.fingerprint, layer=2)
    cached = train_adapter(loaded, "t", data, cfg, tmp_path / "w2", tmp_path / "a2",
                           boundary=boundary, **kw)
    assert frozen.STORE.built > 0  # the states were built and used
    np.testing.assert_allclose([e["loss"] for e in cached["steps_log"]],
                               [e["loss"] for e in full["steps_log"]], rtol=0, atol=1e-5)
    a = load_file(str(tmp_path / "a1" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "a2" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(".layers.0." not in k and ".layers.1." not in k
                                        for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5)
    # a second training on the same examples reuses every sequence's states
    built = frozen.STORE.built
    train_adapter(loaded, "t", data, cfg, tmp_path / "w3", tmp_path / "a3",
                  boundary=boundary, **kw)
    assert frozen.STORE.built == built


def test_states_on_disk_are_read_by_a_fresh_process_and_damage_is_recomputed(base, tmp_path,
                                                                           capsys):
    from taskpgm import artifacts

    loaded = base.load()
    cfg = SignalsConfig(batch_size=4)
    boundary = frozen.Boundary(base.fingerprint, layer=2, disk=True, root=tmp_path)
    frozen.STORE.clear()
    first = score(loaded.model, loaded.tokenizer, examples(), cfg, boundary=boundary)
    folders = list((tmp_path / frozen.STAGE).glob("states-2-*"))
    assert len(folders) == 1 and artifacts.read_manifest(folders[0])["examples"] == 19
    held = frozen.load_states(folders[0] / frozen.STATES_FILE)
    again = frozen.STORE.get(next(iter(frozen.STORE.sets)))
    assert len(held) == len(again) == 19
    for (p, ans), (q, bns) in zip(held, again, strict=True):
        assert torch.equal(p, q) and all(torch.equal(a, b) for a, b in zip(ans, bns, strict=True))
    frozen.STORE.clear()  # a new process: nothing in memory, the artifact on disk
    mtime = (folders[0] / frozen.STATES_FILE).stat().st_mtime_ns
    second = score(loaded.model, loaded.tokenizer, examples(), cfg, boundary=boundary)
    assert (folders[0] / frozen.STATES_FILE).stat().st_mtime_ns == mtime  # read, not rebuilt
    np.testing.assert_array_equal(first["choice_ll"], second["choice_ll"])
    with open(folders[0] / frozen.STATES_FILE, "r+b") as f:  # damage one byte of the rows
        f.seek(-5, 2)
        byte = f.read(1)
        f.seek(-5, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    frozen.STORE.clear()
    artifacts._verified.clear()  # a new process checks every artifact's files once
    third = score(loaded.model, loaded.tokenizer, examples(), cfg, boundary=boundary)
    assert "damaged" in capsys.readouterr().err
    np.testing.assert_array_equal(first["choice_ll"], third["choice_ll"])
