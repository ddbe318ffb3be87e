"""Text to token ids, the same way for training, scoring and exports (no torch here).

A prompt is scored and trained as :func:`scored_prompt` (its trailing space moved onto
the answer) followed by :func:`continuation` of each answer; :func:`encode` tokenizes the
two separately so the answer boundary stays exact, and :func:`tokenize_training` gives a
training example's ids. Model-free modules (exports, oracles, the run inputs) use these
without importing the model code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from taskpgm.tasks.schema import Example


def scored_prompt(prompt: str) -> str:
    """The prompt as the model sees it: trailing spaces move onto the answer.

    BIG-bench prompts end in ``"A: "``; left on the prompt, that space becomes a
    token of its own and the answer is tokenized without its leading space, a
    split the model never saw in training (measured: ~13 nats on the first
    answer token of the base model).
    """
    return prompt.rstrip(" \t")


def continuation(prompt: str, answer: str) -> str:
    """The text appended to ``prompt`` for ``answer``: a space unless the prompt ends in one."""
    if not prompt or prompt[-1].isspace() or answer[:1].isspace():
        return answer
    return " " + answer


def encode(
    tokenizer: Any, prompt: str, answers: list[str] | tuple[str, ...], max_length: int
) -> tuple[list[int], list[list[int]]]:
    """Tokenize a prompt and its answers separately (the answer boundary stays exact).

    The prompt keeps the tokenizer's special tokens (a BOS, if it adds one); each
    answer is tokenized without them. When prompt plus the longest answer exceed
    ``max_length`` tokens, the prompt is cut from the left (its end, next to the
    answer, matters most); answers are never cut.

    Returns:
        ``(prompt_ids, [answer_ids, ...])``.
    """
    prompt = scored_prompt(prompt)
    prompt_ids: list[int] = tokenizer(prompt).input_ids
    answer_ids = [
        tokenizer(continuation(prompt, a), add_special_tokens=False).input_ids for a in answers
    ]
    longest = max((len(a) for a in answer_ids), default=0)
    room = max(1, max_length - longest)
    if len(prompt_ids) > room:
        prompt_ids = prompt_ids[-room:]
    return prompt_ids, answer_ids


def tokenize_training(
    tokenizer: Any, examples: Sequence[Example], max_length: int
) -> list[tuple[list[int], int]]:
    """Each example as ``(token ids, number of prompt tokens)``: prompt + training target."""
    out = []
    for ex in examples:
        prompt_ids, (answer_ids,) = encode(tokenizer, ex.prompt, [ex.answer_text], max_length)
        out.append((prompt_ids + answer_ids, len(prompt_ids)))
    return out


__all__ = ["continuation", "encode", "scored_prompt", "tokenize_training"]
