from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tiny_model
from taskpgm.config import ExpertsConfig, SignalsConfig
from taskpgm.errors import DataError
from taskpgm.experts import ensure_experts
from taskpgm.models import Base
from taskpgm.oracles import score_naive
from taskpgm.signals import ensure_signals, score
from taskpgm.tasks.schema import Example


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    return Base(str(tiny_model.tiny_dir(str(tmp_path_factory.mktemp("tiny")))))


def mixed_examples() -> list[Example]:
    """Prompts of varied length, multi-token choices, different choice counts, generative."""
    out = tiny_model.colour_task(6)
    out += [
        Example(task="multi", id=f"m{i}", prompt="Q: " + "the sky is blue " * i + "so\nA:",
                choices=("blue sky", "green grass one two", "red", "plum pear apple")[: 2 + i % 3],
                correct=(i % 2,))
        for i in range(7)
    ]
    return out + tiny_model.sums_task(5)


@pytest.mark.parametrize("batch_size", [1, 4, 16])
def test_scores_equal_the_naive_loop(base: Base, batch_size: int) -> None:
    loaded = base.load()
    examples = mixed_examples()
    arrays = score(loaded.model, loaded.tokenizer, examples, SignalsConfig(batch_size=batch_size))
    offsets = arrays["choice_offsets"]
    assert arrays["choice_tokens"].max() > 1  # the second (cached) pass is exercised
    for i, ex in enumerate(examples):
        answers = list(ex.choices) if ex.choices else [ex.targets[0]]
        for a, text in enumerate(answers):
            want = score_naive(loaded.model, loaded.tokenizer, ex.prompt, text)
            assert arrays["choice_ll"][offsets[i] + a] == pytest.approx(want, abs=1e-4)
        gold = ex.correct[0] if ex.choices else 0
        assert arrays["gold_ll"][i] == arrays["choice_ll"][offsets[i] + gold]


def test_generative_topk_and_tail(base: Base) -> None:
    loaded = base.load()
    examples = tiny_model.sums_task(6)
    arrays = score(loaded.model, loaded.tokenizer, examples, SignalsConfig(top_k=8))
    pos = arrays["position_offsets"]
    assert pos[-1] == arrays["gold_tokens"].sum() == len(arrays["tail_mass"])
    top = arrays["topk_logprobs"]
    assert top.shape == (pos[-1], 8)
    assert (np.diff(top, axis=1) <= 0).all()
    mass = np.exp(top.astype(np.float64)).sum(1) + arrays["tail_mass"]
    np.testing.assert_allclose(mass, 1.0, atol=1e-5)
    for i in range(len(examples)):
        got = arrays["target_logprobs"][pos[i] : pos[i + 1]].sum()
        assert got == pytest.approx(arrays["gold_ll"][i], abs=1e-4)


def test_ensure_signals_switches_adapters_and_reuses(base: Base, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from peft import PeftModel

    cfg = ExpertsConfig(steps=6, batch_size=4, lr=1e-2, checkpoint_every=100, warmup_steps=2)
    experts = ensure_experts(
        base, {"colours": tiny_model.colour_task(40), "math.sums": tiny_model.sums_task(40)},
        cfg, root=tmp_path)
    probes = {"colours": tiny_model.colour_task(5, seed=3),
              "math.sums": tiny_model.sums_task(3, seed=4)}
    sig = ensure_signals(base, experts, probes, SignalsConfig(batch_size=3), root=tmp_path)
    assert sig.models == ["base", "expert:colours", "expert:math.sums"]
    assert sig.example_ids == [ex.id for ex in probes["colours"] + probes["math.sums"]]
    assert sig.manifest["models"]["expert:math.sums"]["fingerprint"] == (
        experts["math.sums"].fingerprint)
    assert sig.manifest["base"]["fingerprint"] == base.fingerprint
    # Each expert's signals equal those of a freshly built PeftModel for that adapter alone.
    loaded = base.load()
    examples = probes["colours"] + probes["math.sums"]
    for task in ("colours", "math.sums"):
        single = PeftModel.from_pretrained(loaded.model, str(experts[task].path))
        want = score(single, loaded.tokenizer, examples, SignalsConfig())
        single.unload()
        np.testing.assert_allclose(sig.arrays(f"expert:{task}")["choice_ll"], want["choice_ll"],
                                   atol=1e-4)
    assert not np.allclose(sig.arrays("base")["choice_ll"],
                           sig.arrays("expert:math.sums")["choice_ll"])
    # A second run reuses the artifact without loading the model.
    fresh = Base(str(base.path))
    again = ensure_signals(fresh, experts, probes, SignalsConfig(batch_size=3), root=tmp_path)
    assert again.path == sig.path and not fresh.is_loaded
    assert "reusing" in capsys.readouterr().err


def test_a_killed_scoring_run_resumes_at_the_next_model(base: Base, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import taskpgm.signals as signals_module

    cfg = ExpertsConfig(steps=2, batch_size=4, checkpoint_every=100, warmup_steps=1)
    experts = ensure_experts(base, {"colours": tiny_model.colour_task(20)}, cfg, root=tmp_path)
    probes = {"colours": tiny_model.colour_task(4, seed=3)}
    calls: list[int] = []
    die_at = [2]
    real = signals_module.score

    def dying(*args: object, **kwargs: object) -> dict[str, np.ndarray]:
        calls.append(1)
        if len(calls) == die_at[0]:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(signals_module, "score", dying)
    with pytest.raises(KeyboardInterrupt):
        ensure_signals(base, experts, probes, SignalsConfig(), root=tmp_path)
    assert not list((tmp_path / "signals").glob("probe-*/manifest.json"))
    calls.clear()
    die_at[0] = 0
    sig = ensure_signals(base, experts, probes, SignalsConfig(), root=tmp_path)
    assert len(calls) == 1  # only the expert was scored again
    assert sig.arrays("base")["gold_ll"].shape == (4,)


def test_bad_probe_sets(base: Base, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="probe set is empty"):
        ensure_signals(base, {}, {}, SignalsConfig(), root=tmp_path)
    with pytest.raises(DataError, match="'sums' has no probe examples"):
        ensure_signals(base, {}, {"colours": tiny_model.colour_task(2), "sums": []},
                       SignalsConfig(), root=tmp_path)
    assert not (tmp_path / "signals").exists()
    with pytest.raises(DataError, match=r"no model"):
        sig = ensure_signals(base, {}, {"c": tiny_model.colour_task(2)}, SignalsConfig(),
                             root=tmp_path)
        sig.arrays("expert:nope")


def write_task(path: Path, examples: list[Example]) -> None:
    import json

    path.write_text("".join(
        json.dumps({"prompt": ex.prompt, "choices": list(ex.choices or ()),
                    "answer": ex.correct[0]}) + "\n" for ex in examples))


def test_cli_experts_then_signals_then_nothing_to_do(base: Base, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from taskpgm.cli import main

    write_task(tmp_path / "colours.jsonl", tiny_model.colour_task(60))
    write_task(tmp_path / "other.jsonl", tiny_model.colour_task(60, name="other", seed=5))
    run = tmp_path / "run.yaml"
    run.write_text(
        f"base:\n  model: {base.path}\n"
        "tasks:\n  names: [colours.jsonl, other.jsonl]\n"
        "  splits: {probe: 8, eval: 4, max_train: 40}\n"
        "experts:\n  steps: 3\n  batch_size: 4\n  checkpoint_every: 2\n"
        "signals:\n  batch_size: 4\nmixture:\n  token_budget: 2000\noutput_dir: out\n"
    )
    assert main(["experts", str(run), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr()
    assert "colours\ttrained" in out.out and "experts: 0 of 2 finished already" in out.err
    assert main(["signals", str(run), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr()
    assert "2 of 2 finished already" in out.err and "signals: scoring expert:other" in out.err
    path = Path(out.out.strip().splitlines()[-1])
    assert path.parent.parent == tmp_path / "out" and (path / "manifest.json").is_file()
    assert main(["signals", str(run), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr()
    assert "reusing" in out.err and "signals: scoring" not in out.err and "step 1/" not in out.err


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from taskpgm.cli import main

    run = tmp_path / "run.yaml"
    run.write_text("experts:\n  rnak: 4\n")
    assert main(["experts", str(run), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 1 problem(s)") and "Traceback" not in err
    run.write_text("base:\n  model: no-such-model\ntasks:\n  names: [x.jsonl]\n")
    assert main(["signals", str(run), "--out", str(tmp_path / "r")]) == 1
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_imported_full_checkpoint_is_checked_and_scored(base: Base, tmp_path: Path) -> None:
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from taskpgm.errors import ModelError

    tuned = tmp_path / "tuned"
    shutil.copytree(base.path, tuned)
    model = LlamaForCausalLM.from_pretrained(str(tuned))
    with torch.no_grad():
        model.lm_head.weight.mul_(1.5)
    model.save_pretrained(tuned)
    cfg = ExpertsConfig(import_={"colours": str(tuned)})
    found = ensure_experts(base, {"colours": tiny_model.colour_task(10)}, cfg, root=tmp_path)
    assert found["colours"].source == "checkpoint"
    probes = {"colours": tiny_model.colour_task(4, seed=3)}
    sig = ensure_signals(base, found, probes, SignalsConfig(), root=tmp_path)
    loaded = base.load()
    want = score(model, loaded.tokenizer, probes["colours"], SignalsConfig())
    np.testing.assert_allclose(sig.arrays("expert:colours")["choice_ll"], want["choice_ll"],
                               atol=1e-4)
    # A checkpoint of another shape is refused before anything is written.
    other = tmp_path / "other"
    shutil.copytree(base.path, other)
    small = LlamaConfig.from_pretrained(str(other))
    small.hidden_size, small.intermediate_size = 32, 64
    LlamaForCausalLM(small).save_pretrained(other)
    with pytest.raises(ModelError, match="fine-tuned from another base"):
        ensure_experts(base, {"c": tiny_model.colour_task(10)},
                       ExpertsConfig(import_={"c": str(other)}), root=tmp_path / "x")
    assert not list((tmp_path / "x").glob("experts/c-*"))
