from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import tiny_model
from taskpgm import models, tokens
from taskpgm.errors import ModelError, NotFoundError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model.tiny_dir(str(tmp_path_factory.mktemp("tiny")))


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(NotFoundError, match="smollm2-135m"):
        models.resolve("no-such-model")


def test_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"no config\.json"):
        models.resolve(str(tmp_path))


def test_corrupt_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKPGM_HOME", str(tmp_path / "home"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelError, match="cannot read the GGUF file"):
        models.resolve(str(bad))
    assert not list((tmp_path / "home" / "models").glob("gguf-*"))  # nothing half-written


def test_corrupt_safetensors_and_pickle_only(tiny: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="cannot load the model"):
        models.load(str(broken))
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ModelError, match="never unpickles"):
        models.load(str(pickled))


def test_load_gives_a_frozen_eval_model_and_base_loads_lazily(tiny: Path) -> None:
    lm = models.load(str(tiny))
    assert lm.tokenizer.pad_token_id is not None
    assert not lm.model.training
    assert not any(p.requires_grad for p in lm.model.parameters())
    base = models.Base(str(tiny))
    assert not base.is_loaded
    assert base.load().fingerprint == base.fingerprint and base.is_loaded


def _rewrite(path: Path, data: bytes, mtime_ns: int) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_fingerprint_follows_the_files_not_the_path(tiny: Path, tmp_path: Path) -> None:
    original = models.checkpoint_fingerprint(tiny)
    assert len(original) == 32 and int(original, 16) >= 0
    # A copy elsewhere (times kept, as copytree does) is the same checkpoint.
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(tiny, copy)
    assert models.checkpoint_fingerprint(copy) == original
    assert models.load(str(copy)).fingerprint == original
    weights = copy / "model.safetensors"
    data, mtime = weights.read_bytes(), weights.stat().st_mtime_ns
    # Weight bytes rewritten (same size): the write leaves a new modification time.
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    _rewrite(weights, bytes(flipped), mtime + 1_000_000_000)
    changed = models.checkpoint_fingerprint(copy)
    assert changed != original
    # A weight file of another size, even under the old modification time.
    _rewrite(weights, data + b"\0", mtime)
    assert models.checkpoint_fingerprint(copy) not in (original, changed)
    _rewrite(weights, data, mtime)
    assert models.checkpoint_fingerprint(copy) == original  # back to the same files
    # Config and tokenizer files count by content, whatever their sizes and times.
    for name in ("config.json", "tokenizer.json"):
        path = copy / name
        text, when = path.read_bytes(), path.stat().st_mtime_ns
        assert b"false" in text
        _rewrite(path, text.replace(b"false", b"FALSE", 1), when)  # same size, same time
        assert models.checkpoint_fingerprint(copy) != original, name
        _rewrite(path, text, when)
    assert models.checkpoint_fingerprint(copy) == original
    # A stored fingerprint (converted models) is used as is.
    (copy / "fingerprint.txt").write_text("abc123\n")
    assert models.checkpoint_fingerprint(copy) == "abc123"


def test_tokenizer_fingerprint_tells_vocabularies_apart(tiny: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    same = models.tokenizer_fingerprint(AutoTokenizer.from_pretrained(str(copy)))
    assert same == models.tokenizer_fingerprint(AutoTokenizer.from_pretrained(str(tiny)))
    grown = AutoTokenizer.from_pretrained(str(copy))
    grown.add_tokens(["zebra-token"])
    assert models.tokenizer_fingerprint(grown) != same
    other_eos = AutoTokenizer.from_pretrained(str(copy))
    other_eos.eos_token = "<s>"
    assert models.tokenizer_fingerprint(other_eos) != same


def test_encode_keeps_the_answer_and_cuts_the_prompt_from_the_left(tiny: Path) -> None:
    tok = models.load(str(tiny)).tokenizer
    assert tokens.continuation("Q: x\nA:", "red") == " red"
    assert tokens.continuation("Q: x\nA: ", "red") == "red"
    prompt = "Q: " + "the sky is blue " * 40 + "\nA:"
    full, answers = tokens.encode(tok, prompt, ["green grass", "red"], 1000)
    cut, answers_cut = tokens.encode(tok, prompt, ["green grass", "red"], 12)
    assert answers_cut == answers
    assert len(cut) + max(len(a) for a in answers) <= 12
    assert cut == full[-len(cut):]


@pytest.mark.slow
def test_default_model_converts_once_and_reloads_fast() -> None:
    path = models.resolve(models.DEFAULT_MODEL)
    assert (path / "model.safetensors").is_file() and (path / "fingerprint.txt").is_file()
    lm = models.load(models.DEFAULT_MODEL)
    assert lm.load_seconds < 15
    assert "quantization_config" not in lm.model.config.to_dict()
    assert sum(p.numel() for p in lm.model.parameters()) == pytest.approx(134.5e6, rel=0.01)


def test_trailing_prompt_space_moves_onto_the_answer(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny))
    prompt_ids, (answer_ids,) = tokens.encode(tok, "Q: 2 + 2\nA: ", ["4"], 64)
    assert prompt_ids == tok("Q: 2 + 2\nA:").input_ids
    assert answer_ids == tok(" 4", add_special_tokens=False).input_ids
    # a prompt that ends in a newline keeps it, and the answer follows it directly
    prompt_ids, (answer_ids,) = tokens.encode(tok, "Q: 2 + 2\n", ["4"], 64)
    assert answer_ids == tok("4", add_special_tokens=False).input_ids


HUB_PROBE = """
import sys
from taskpgm import models
from taskpgm.errors import TaskPGMError
try:
    path = models.resolve(sys.argv[1])
    lm = models.load(sys.argv[1])
    print("ok", path, lm.fingerprint)
except TaskPGMError as err:
    print("error", err)
"""


def _hub_cache(tmp_path: Path, tiny: Path, repo: str) -> Path:
    """A Hugging Face hub cache holding ``repo`` at one commit, laid out as the hub writes it."""
    cache = tmp_path / "hub"
    folder = cache / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny, folder / "snapshots" / commit)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    return cache


def _resolve_offline(spec: str, cache: Path) -> str:
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", HUB_PROBE, spec], env=env, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_hub_id_loads_through_the_hub_cache(tiny: Path, tmp_path: Path) -> None:
    """A hub id goes through ``huggingface_hub.snapshot_download`` (offline: its cache)."""
    cache = _hub_cache(tmp_path, tiny, "acme/tiny-llama")
    out = _resolve_offline("acme/tiny-llama", cache)
    assert out.startswith("ok "), out
    _, path, fingerprint = out.split()
    assert Path(path).parent.parent.name == "models--acme--tiny-llama"
    # the same files as the local copy, plus the commit the snapshot holds
    assert fingerprint == models.checkpoint_fingerprint(Path(path))
    assert fingerprint != models.checkpoint_fingerprint(tiny)


def test_hub_id_that_cannot_be_fetched_says_what_to_do(tiny: Path, tmp_path: Path) -> None:
    cache = _hub_cache(tmp_path, tiny, "acme/tiny-llama")
    out = _resolve_offline("acme/not-there", cache)
    assert out.startswith("error could not fetch model 'acme/not-there'"), out
    assert "point base.model at the local directory" in out
