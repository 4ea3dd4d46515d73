"""Scenarios: small, seeded programs that put a lab's graded functions to work inside gpt_lab.

This module holds what every lab's scenarios share (the registry, `tiny_gpt`, tokenizers); each lab's
own scenarios live in `gpt_lab_grader/labs/<lab>/scenarios.py` and register here when imported.

A scenario is `fn(impl, **kwargs)`, where `impl` holds one implementation of the lab's graded
names (attribute access). The sandbox calls it in the child process with the student's
definitions; a hidden check calls the same function in its own process with the reference
implementations, and compares the two results. So "your attention inside the real GPT" and "a
short training run with your loss" are checked exactly like a single function call.
Scenarios return plain tensors, numbers and containers of those; they run on the CPU.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch

from gpt_lab.model import GPT, GPTConfig

SCENARIOS: dict[str, Callable] = {}


def scenario(fn: Callable) -> Callable:
    """Register `fn` as a scenario under its own name."""
    SCENARIOS[fn.__name__] = fn
    return fn


def describe(name: str) -> str:
    """The first line of a scenario's docstring: what it does, for failure messages."""
    fn = SCENARIOS.get(name)
    doc = (fn.__doc__ or name).strip().splitlines()[0] if fn else name
    return doc.rstrip(".")


def tiny_gpt(seed: int = 0, vocab_size: int = 61, block_size: int = 32, n_layer: int = 2, n_head: int = 2,
             n_embd: int = 32, bias: bool = True, norm: str = "pre", dropout: float = 0.0,
             attention_fn: Callable | None = None) -> GPT:
    """A small GPT with weights fixed by `seed`, on the CPU, in eval mode."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                       n_embd=n_embd, dropout=dropout, bias=bias, norm=norm)
    return GPT(config, attention_fn=attention_fn).eval()


@functools.lru_cache(maxsize=8)
def _compact_tokenizer(kept_ids: tuple[int, ...]):
    from gpt_lab.tokenizer import CompactTokenizer

    return CompactTokenizer(kept_ids)


def tokenizer_of(kept_ids: Sequence[int] | None):
    """GPT-2's own tokenizer (None) or a CompactTokenizer of the kept ids (byte fallback for the rest)."""
    from gpt_lab.tokenizer import get_tokenizer

    return get_tokenizer() if kept_ids is None else _compact_tokenizer(tuple(kept_ids))
