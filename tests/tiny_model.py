"""A tiny random llama (2 layers, 64 dims) and a tokenizer built here: no download."""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

import torch

from taskpgm.tasks.schema import Example

WORDS = ["yes", "no", "red", "blue", "green", "cat", "dog", "bird", "one", "two", "three",
         "apple", "pear", "plum", "Q", "A", "is", "the", "colour", "of", "sky", "grass"]


def corpus() -> list[str]:
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(300)]
    lines += [f"{a} + {b} = {a + b}" for a in range(30) for b in range(5)]
    return [*lines, "Question: Answer: \n"]


def build(folder: Path, seed: int = 0, layers: int = 2) -> Path:
    """Write a tiny llama checkpoint (``layers`` decoder layers) + tokenizer into ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus(), trainer)
    from tokenizers import decoders
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", pad_token="</s>")
    fast.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@cache
def tiny_dir(root: str, seed: int = 0) -> Path:
    return build(Path(root) / f"tiny-llama-{seed}", seed)


def colour_task(n: int, name: str = "colours", seed: int = 0) -> list[Example]:
    """A learnable multiple-choice task: the answer is the word repeated in the prompt."""
    rng = random.Random(seed)
    options = ["red", "blue", "green", "cat", "dog"]
    out = []
    for i in range(n):
        k = rng.randrange(len(options))
        filler = " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 6)))
        prompt = f"Q: {filler} the colour is {options[k]} {options[k]}\nA:"
        out.append(Example(task=name, id=f"{name}-{i}", prompt=prompt,
                           choices=tuple(options), correct=(k,)))
    return out


def sums_task(n: int, name: str = "sums", seed: int = 1) -> list[Example]:
    """A generative task: small additions."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randrange(30), rng.randrange(5)
        out.append(Example(task=name, id=f"{name}-{i}", prompt=f"{a} + {b} =",
                           targets=(str(a + b),)))
    return out
