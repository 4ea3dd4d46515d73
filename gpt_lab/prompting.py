"""Prompting a base model: show it a pattern and let it continue the text.

A pre-trained model only continues text, but the lecture's point is that a pattern in the
prompt steers that continuation: after a few "input -> output" pairs, the most likely next
text after a new input is its output. `few_shot_prompt` writes such a prompt and
`accuracy_vs_shots` measures how exact-match accuracy grows with the number of examples shown.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from gpt_lab.data import repeated_tokens
from gpt_lab.train import BatchFn, batch_generator

Pair = tuple[str, str]

# The function-name task written for a code model: the code, then a comment naming it.
CODE_NAME_FORMAT = {"answer_prefix": "\n# name:", "separator": "\n\n"}
# The arguments task the same way: the code, then a comment listing its arguments ("self, path, strict").
CODE_ARGUMENTS_FORMAT = {"answer_prefix": "\n# arguments:", "separator": "\n\n"}


def few_shot_prompt(examples: Sequence[Pair], query: str, instruction: str = "", answer_prefix: str = " ->",
                    separator: str = "\n") -> str:
    """`instruction`, then one "{input}{answer_prefix} {output}" block per example, then the query.

    Blocks are joined by `separator`; the prompt ends with `answer_prefix` (no trailing space, so
    the model writes " {output}" with the leading space GPT-2 tokens carry). The lecture's
    pattern `Monday -> Tuesday` is `few_shot_prompt([("Monday", "Tuesday")], "Friday")`.
    """
    blocks = [instruction] if instruction else []
    blocks += [f"{x}{answer_prefix} {y}" for x, y in examples]
    return separator.join(blocks + [f"{query}{answer_prefix}"])


def _pairs(examples) -> list[Pair]:
    """(input, output) pairs, or objects with `.code` and `.answer` (`gpt_lab.sft.SFTExample`)."""
    return [(e.code, e.answer) if hasattr(e, "answer") else (e[0], e[1]) for e in examples]


@torch.no_grad()
def complete(model: torch.nn.Module, tokenizer, prompts: Sequence[str], max_new_tokens: int = 16,
             batch_size: int = 16) -> list[str]:
    """Greedy continuation of each prompt up to the end token, cut at the first newline, stripped.

    Prompts are batched by length (less padding). Generation stops at the end of the model's
    context if that comes before `max_new_tokens`.
    """
    from gpt_lab.decoding import generate

    ids = [tokenizer.encode(p) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [""] * len(ids)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        room = model.config.block_size + 1 - max(len(ids[i]) for i in rows)
        new = generate(model, [ids[i] for i in rows], min(max_new_tokens, max(room, 1)), strategy="greedy",
                       eos_id=tokenizer.eot_token)
        for i, tokens in zip(rows, new):
            out[i] = tokenizer.decode(tokens).split("\n")[0].strip()
    return out


def accuracy_vs_shots(model: torch.nn.Module, tokenizer, task_examples: Sequence,
                      shots: Sequence[int] = (0, 1, 2, 4, 8), n_eval: int | None = None, seed: int = 0,
                      shot_examples: Sequence | None = None, instruction: str = "",
                      answer_prefix: str = CODE_NAME_FORMAT["answer_prefix"],
                      separator: str = CODE_NAME_FORMAT["separator"], max_new_tokens: int = 16,
                      batch_size: int = 16) -> dict[int, float]:
    """Exact-match accuracy of greedy few-shot answers for each number of shots k.

    Queries are the first `n_eval` of `task_examples` ((input, output) pairs, or SFTExamples
    read as (code, answer)); shots are drawn (seeded) from `shot_examples` (default: the other
    task examples), never with the query's own answer, and nested: the k = 4 prompt holds the
    k = 2 shots plus two more, so the curve shows the effect of adding examples.
    """
    queries = _pairs(task_examples)[:n_eval]
    pool = _pairs(shot_examples) if shot_examples is not None else _pairs(task_examples)
    if not queries:
        raise ValueError("no task examples to evaluate")
    k_max = max(shots)
    rng = random.Random(seed)
    chosen = []
    for x, y in queries:
        candidates = [p for p in pool if p[1] != y and p[0] != x]
        if len(candidates) < k_max:
            raise ValueError(f"{k_max} shots need at least {k_max} examples with other answers, have {len(candidates)}")
        chosen.append(rng.sample(candidates, k_max))
    block = model.config.block_size
    result = {}
    for k in shots:
        prompts = [few_shot_prompt(c[:k], x, instruction, answer_prefix, separator) for (x, _), c in zip(queries, chosen)]
        longest = max(len(tokenizer.encode(p)) for p in prompts)
        if longest + max_new_tokens - 1 > block:
            raise ValueError(f"a {k}-shot prompt has {longest} tokens: with {max_new_tokens} new tokens it exceeds "
                             f"the context (block_size {block}); use shorter examples or fewer shots")
        answers = complete(model, tokenizer, prompts, max_new_tokens, batch_size)
        result[k] = sum(a == y.strip() for a, (_, y) in zip(answers, queries)) / len(queries)
    return result


def copy_task_batches(vocab_size: int, batch_size: int, length: int, seed: int = 0,
                      min_period: int | None = None) -> BatchFn:
    """Batches `(x, y)` of the copy task for `gpt_lab.train.train`: rows of `repeated_tokens`, shifted.

    Only the repeats are predictable, and only by copying from earlier in the row. With a fixed
    period (the default) the copy is always `length` tokens back, so a model can learn it from
    positions alone ("attend 32 tokens back"); with random periods (`min_period`) it must find
    the earlier occurrence of the current token and copy what followed it, the induction head that
    few-shot prompting relies on. x, y: (B, 2 * length - 1).
    """
    def batches(split: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        seq = repeated_tokens(vocab_size, batch_size, length, batch_generator(seed, split, step), min_period)
        return seq[:, :-1], seq[:, 1:]

    return batches


@torch.no_grad()
def repeat_loss(model: torch.nn.Module, vocab_size: int, length: int = 50, batch_size: int = 8,
                seed: int = 0) -> tuple[float, float]:
    """Probe for copying from context: loss (nats/token) on random tokens, then on their repeat.

    Each row is `length` random token ids followed by the same ids again (`repeated_tokens`).
    A model that copies what followed an earlier match (an "induction head") predicts the
    repeat almost perfectly, so the second number falls far below the first; a model without
    the skill scores both halves alike, near log(vocab_size). A model that only learned to copy
    from a fixed distance back (see `copy_task_batches`) passes at that one `length`, so probe
    more than one. Returns (first pass, repeat).
    """
    if 2 * length > model.config.block_size:
        raise ValueError(f"2 * length = {2 * length} exceeds the context (block_size {model.config.block_size})")
    device = next(model.parameters()).device
    seq = repeated_tokens(vocab_size, batch_size, length, torch.Generator().manual_seed(seed)).to(device)  # (B, 2L)
    logits, _ = model(seq)                                                     # (B, 2L, V)
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), seq[:, 1:],
                                            reduction="none")                  # (B, 2L - 1): position t predicts t + 1
    return float(nll[:, :length - 1].mean()), float(nll[:, length:].mean())


def binomial_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% with the default z): `(low, high)`.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 or n successes,
    where exact-match accuracies of a small model often sit.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at 0 (or n) successes the bound is exactly 0 (or 1); rounding would leave it a hair inside,
    # and an error bar p - low would then be a tiny negative number that matplotlib refuses
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@torch.no_grad()
def induction_scores(model: torch.nn.Module, vocab_size: int, length: int = 50, batch_size: int = 8,
                     seed: int = 0) -> torch.Tensor:
    """(n_layer, n_head): how much each head attends the way an induction head does.

    On `length` random tokens followed by the same tokens again, the query at repeat position
    `length + i` can predict its next token by attending to position `i + 1`, the token that
    followed the earlier occurrence of the current one. The score is the mean attention weight on
    exactly that position over the repeat; uniform attention scores about 1 / (number of keys).
    """
    device = next(model.parameters()).device
    seq = repeated_tokens(vocab_size, batch_size, length, torch.Generator().manual_seed(seed)).to(device)
    maps = torch.stack(model.attention_maps(seq))             # (n_layer, B, n_head, 2L, 2L)
    queries = torch.arange(length, 2 * length - 1, device=device)
    weights = maps[:, :, :, queries, queries - length + 1]    # (n_layer, B, n_head, L - 1)
    return weights.mean(dim=(1, 3)).cpu()
