"""Scenarios: small, seeded programs that put a lab's graded functions to work inside gpt_lab.

This module holds what every lab's scenarios share (the registry, `tiny_gpt`, tokenizers); each lab's
own scenarios live in `gpt_lab_grader/labs/<lab>/scenarios.py` and register here when imported.

A scenario is `fn(impl, **kwargs)`, where `impl` holds one implementation of the lab's graded
names (attribute access). The sandbox calls it in the child process with the student's
definitions; a hidden check calls the same function in its own process with the reference
implementations, and compares the two results. So "your attention inside the real GPT" and "a
short training run with your loss" are checked exactly like a single function call.
Scenarios return plain tensors, numbers and containers of those; they run on the CPU.

Points per idea (issue 19): a scenario that puts one graded function to work through another (an
`encode` that calls `bpe_merge`, a `GPT` built of `Block`s, an `accuracy_vs_shots` that calls
`few_shot_prompt`) runs it with the lab's reference of the other under its name (`reference_parts`), so
a mistake costs the points of the function it is in, once. Those references are written out in the
lab's scenarios (not gpt_lab's, which the tripwire watches while student code runs).
"""
from __future__ import annotations

import contextlib
import functools
import types
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


def bigram_gpt(successors: Sequence[tuple[int, int]], vocab_size: int, block_size: int = 64,
               default: int | None = None) -> GPT:
    """A GPT (gpt_lab's own class, real weights) whose greedy next token depends only on the last token:
    `successor` for each `(token, successor)` pair, `default` for any other token (itself when None).

    So a scripted continuation is certain, e.g. " Tuesday", then the end token, then more text: a test
    model that writes the end token or a newline where a check needs it (random models never do). How:
    position embeddings and attention are zero; token t embeds as e_t + e_{V+t}; after ln_2 its first half is
    about sqrt(V) at t and -1/sqrt(V) elsewhere, so the MLP's hidden unit t (threshold sqrt(V) / 2) fires
    alone and writes 32 on e_{V+successor(t)}; ln_f keeps only the second half, which the tied head reads,
    so the successor's logit is the largest (by about 20 for a vocabulary of a few hundred tokens).
    """
    table = {int(t): int(s) for t, s in successors}
    V, C = vocab_size, 2 * vocab_size
    model = tiny_gpt(0, vocab_size=V, block_size=block_size, n_layer=1, n_head=1, n_embd=C)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        eye = torch.eye(V)
        model.transformer.wte.weight.copy_(torch.cat([eye, eye], dim=1))  # (V, C); the head is tied to it
        block = model.transformer.h[0]
        block.ln_2.weight[:V] = 1.0                                     # the MLP sees the first half only
        half = V ** 0.5 / 2
        block.mlp.c_fc.weight[:V, :V] = eye                             # unit t reads e_t (about sqrt(V))
        block.mlp.c_fc.bias.fill_(-half)                                # ... and only unit t fires (about half)
        for t in range(V):
            s = table.get(t, t if default is None else int(default))
            block.mlp.c_proj.weight[V + s, t] = 32.0 / half
        model.transformer.ln_f.weight[V:] = 1.0                         # the head reads the second half
    return model.eval()


def _student_globals(impl) -> dict | None:
    """The namespace the student's code runs in (None for reference implementations)."""
    for value in vars(impl).values():
        functions = [value] if not isinstance(value, type) else list(vars(value).values())
        for fn in functions:
            inner = getattr(fn, "__wrapped__", None)  # the sandbox wraps every graded function and method
            if isinstance(inner, types.FunctionType):
                return inner.__globals__
    return None


@contextlib.contextmanager
def names_bound(space: dict | None, **parts):
    """The names of `parts` bound to them in the namespace `space` (a module's or the notebook's globals)
    while the block runs, then restored (a name that was not there is removed again). None: no change."""
    if space is None:
        yield
        return
    missing = object()
    saved = {name: space.get(name, missing) for name in parts}
    space.update(parts)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                space.pop(name, None)
            else:
                space[name] = value


def reference_parts(impl, **parts):
    """Put the given implementations under their names in the student's namespace while the scenario runs
    (nothing changes when `impl` holds the reference implementations)."""
    return names_bound(_student_globals(impl), **parts)


@functools.lru_cache(maxsize=8)
def _compact_tokenizer(kept_ids: tuple[int, ...]):
    from gpt_lab.tokenizer import CompactTokenizer

    return CompactTokenizer(kept_ids)


def tokenizer_of(kept_ids: Sequence[int] | None):
    """GPT-2's own tokenizer (None) or a CompactTokenizer of the kept ids (byte fallback for the rest)."""
    from gpt_lab.tokenizer import get_tokenizer

    return get_tokenizer() if kept_ids is None else _compact_tokenizer(tuple(kept_ids))
