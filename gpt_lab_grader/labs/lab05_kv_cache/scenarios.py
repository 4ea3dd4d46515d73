"""Scenarios of lab05-kv-cache: the student's KV cache inside gpt_lab's GPT, and cached greedy decoding.

See `gpt_lab_grader.labs.scenarios` for the contract (`fn(impl, **kwargs)`, plain results, CPU, seconds).
"""
from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch

from gpt_lab_grader.labs.scenarios import scenario, tiny_gpt


def _kv(shape: Sequence[int], seed: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


@scenario
def kv_cache_updates(impl, n_layer: int, batch_size: int, n_head: int, head_dim: int, max_length: int,
                     chunks: Sequence[int], dtype: torch.dtype = torch.float32) -> dict:
    """Your KVCache fed chunks of new positions, layer after layer: what update returns and the length."""
    cache = impl.KVCache(n_layer, batch_size, n_head, head_dim, max_length, "cpu", dtype)
    keys, values, lengths = [], [], [cache.length]
    for c, T in enumerate(chunks):
        for layer in range(n_layer):
            seed = 1000 * c + 10 * layer
            k, v = cache.update(layer, _kv((batch_size, n_head, T, head_dim), seed, dtype),
                                _kv((batch_size, n_head, T, head_dim), seed + 1, dtype))
            keys.append(k.clone())
            values.append(v.clone())
        lengths.append(cache.length)  # unchanged by update
        cache.advance(T)
        lengths.append(cache.length)
    return {"keys": keys, "values": values, "lengths": [int(n) for n in lengths]}


@scenario
def kv_cache_overflow(impl, max_length: int, filled: int, new: int) -> str:
    """Your KVCache asked to hold more positions than max_length: the exception it raises ('' if none)."""
    cache = impl.KVCache(1, 2, 2, 4, max_length, "cpu", torch.float32)
    if filled:
        cache.update(0, _kv((2, 2, filled, 4), 0, torch.float32), _kv((2, 2, filled, 4), 1, torch.float32))
        cache.advance(filled)
    try:
        cache.update(0, _kv((2, 2, new, 4), 2, torch.float32), _kv((2, 2, new, 4), 3, torch.float32))
    except Exception as exc:  # noqa: BLE001 (the check looks at which one)
        return type(exc).__name__
    return ""


@scenario
def cached_forward_logits(impl, idx: torch.Tensor, chunks: Sequence[int], attention_mask: torch.Tensor | None = None,
                          seed: int = 0, dtype: torch.dtype = torch.float32, **config) -> torch.Tensor:
    """A seeded GPT run chunk by chunk with your KVCache: the logits of every position, (B, T, V)."""
    model = tiny_gpt(seed, **config).to(dtype)
    cache = impl.KVCache.for_model(model, idx.shape[0])
    out, start = [], 0
    with torch.no_grad():
        for T in chunks:
            mask = None if attention_mask is None else attention_mask[:, :start + T]
            out.append(model(idx[:, start:start + T], attention_mask=mask, kv_cache=cache)[0])
            start += T
    return torch.cat(out, dim=1)


class _Positions:
    """Counts the positions (batch rows x length) the model's token embedding sees."""

    def __init__(self, model):
        self.count = 0
        self.handle = model.transformer.wte.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.count += inputs[0].numel()


@scenario
def next_token_logits_steps(impl, idx: torch.Tensor, start: int, attention_mask: torch.Tensor | None = None,
                            use_cache: bool = True, seed: int = 0, **config) -> dict:
    """Your next_token_logits called after every prefix idx[:, :t], t >= start, with gpt_lab's KVCache:
    the logits of each step and the positions the model processed."""
    from gpt_lab.kv_cache import KVCache

    model = tiny_gpt(seed, **config)
    cache = KVCache.for_model(model, idx.shape[0]) if use_cache else None
    counter = _Positions(model)
    steps = []
    with torch.no_grad():
        for t in range(start, idx.shape[1] + 1):
            mask = None if attention_mask is None else attention_mask[:, :t]
            steps.append(impl.next_token_logits(model, idx[:, :t], mask, cache))
    counter.handle.remove()
    return {"logits": torch.stack(steps, dim=1), "positions": counter.count}


@scenario
def greedy_generation(impl, prompt: Sequence[int], max_new_tokens: int, eos_id: int | None = None,
                      use_cache: bool = True, seed: int = 0, **config) -> dict:
    """Your greedy_generate on a seeded GPT: the new tokens and the positions the model processed."""
    model = tiny_gpt(seed, **config)
    counter = _Positions(model)
    tokens = impl.greedy_generate(model, list(prompt), max_new_tokens, eos_id=eos_id, use_cache=use_cache)
    counter.handle.remove()
    if not isinstance(tokens, list):
        raise AssertionError(f"greedy_generate should return a list of token ids, got {type(tokens).__name__}")
    return {"tokens": tokens, "positions": counter.count}


def reference_greedy_generate(model, prompt_ids, max_new_tokens, eos_id=None, use_cache=True) -> list[int]:
    """gpt_lab's greedy decoding of one prompt, the reference of lab05's greedy_generate."""
    from gpt_lab.decoding import generate

    return generate(model, list(prompt_ids), max_new_tokens, strategy="greedy", eos_id=eos_id, use_cache=use_cache)[0]


def reference_lab05() -> SimpleNamespace:
    from gpt_lab.decoding import next_token_logits
    from gpt_lab.kv_cache import KVCache

    return SimpleNamespace(KVCache=KVCache, next_token_logits=next_token_logits,
                           greedy_generate=reference_greedy_generate)
