"""Scenarios of labs 4-7 (decoding, KV cache, prompting, SFT): the graded functions at work in gpt_lab.

Same contract as `gpt_lab.grading.scenarios`: `fn(impl, **kwargs)` with `impl` one implementation
of the lab's graded names, deterministic, CPU, seconds; results are plain tensors, numbers,
strings and containers of those, so the hidden checks compare the student's run with the
reference run (`reference_lab05`, ... below) value by value.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from types import SimpleNamespace

import torch

from gpt_lab.grading.scenarios import scenario, tiny_gpt

# ---------------------------------------------------------------------------------------------
# lab04-decoding


def _as_records(hypotheses, what: str = "beam_search") -> list[dict]:
    """Hypothesis objects -> [{"tokens", "logprob", "score", "finished"}] of plain Python values."""
    if not isinstance(hypotheses, (list, tuple)):
        raise AssertionError(f"{what} should return a list of Hypothesis objects, got {type(hypotheses).__name__}")
    records = []
    for i, h in enumerate(hypotheses):
        try:
            records.append({"tokens": [int(t) for t in h.tokens], "logprob": float(h.logprob),
                            "score": float(h.score), "finished": bool(h.finished)})
        except (AttributeError, TypeError, ValueError) as exc:
            raise AssertionError(f"{what}'s result [{i}] is not a Hypothesis(tokens, logprob, score, finished) "
                                 f"({type(exc).__name__}: {exc})") from None
    return records


def sharp_gpt(seed: int, sharpness: float = 1.0, **config):
    """A seeded tiny GPT whose token embeddings (= output layer) are scaled: peakier distributions."""
    model = tiny_gpt(seed, **config)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(sharpness)
    return model


@scenario
def beam_hypotheses(impl, prompt: Sequence[int], beam_width: int, max_new_tokens: int, eos_id: int | None = None,
                    length_penalty: float = 1.0, seed: int = 0, sharpness: float = 1.0, **config) -> list[dict]:
    """Your beam_search on a seeded tiny GPT: the ranked hypotheses (tokens, logprob, score, finished)."""
    model = sharp_gpt(seed, sharpness, **config)
    return _as_records(impl.beam_search(model, list(prompt), beam_width, max_new_tokens, eos_id=eos_id,
                                        length_penalty=length_penalty))


@scenario
def filter_and_input(impl, function: str, logits: torch.Tensor, args: Sequence = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """Your logits function on a tensor: its result, and the input tensor after the call (unchanged?)."""
    if function not in ("apply_temperature", "top_k_filter", "top_p_filter", "apply_penalties"):
        raise ValueError(f"not a logits function of lab04: {function}")
    logits = logits.clone()
    out = getattr(impl, function)(logits, *args)
    return out, logits


# ---------------------------------------------------------------------------------------------
# lab05-kv-cache


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


# ---------------------------------------------------------------------------------------------
# lab06-prompting: a small model trained (by the check, once) on a pattern task is sent here as
# weights + config + the kept ids of its tokenizer.


@functools.lru_cache(maxsize=8)
def _compact_tokenizer(kept_ids: tuple[int, ...]):
    from gpt_lab.tokenizer import CompactTokenizer

    return CompactTokenizer(kept_ids)


def _tokenizer(kept_ids: Sequence[int] | None):
    """GPT-2's own tokenizer (None) or a CompactTokenizer of the kept ids (byte fallback for the rest)."""
    from gpt_lab.tokenizer import get_tokenizer

    return get_tokenizer() if kept_ids is None else _compact_tokenizer(tuple(kept_ids))


def rebuild_model(state: dict, config: dict, kept_ids: Sequence[int]):
    """(GPT in eval mode, CompactTokenizer) from what a check sends over the pipe."""
    from gpt_lab.model import GPT, GPTConfig

    model = GPT(GPTConfig(**config))
    model.load_state_dict(state)
    return model.eval(), _tokenizer(kept_ids)


@scenario
def completions(impl, state: dict, config: dict, kept_ids: Sequence[int], prompts: Sequence[str],
                max_new_tokens: int = 16, batch_size: int = 16) -> list[str]:
    """Your complete() on a small trained model: one answer per prompt."""
    model, tok = rebuild_model(state, config, kept_ids)
    return impl.complete(model, tok, list(prompts), max_new_tokens, batch_size)


@scenario
def shot_accuracy(impl, state: dict, config: dict, kept_ids: Sequence[int], task_examples: Sequence,
                  as_sft_examples: bool = False, shot_examples: Sequence | None = None, **kwargs) -> dict:
    """Your accuracy_vs_shots on a small trained model: {shots: accuracy}."""
    from gpt_lab.sft import SYSTEM_PROMPT, SFTExample

    model, tok = rebuild_model(state, config, kept_ids)
    task = [tuple(p) for p in task_examples]
    if as_sft_examples:  # objects with .code and .answer, like the lab's data set
        task = [SFTExample(SYSTEM_PROMPT, f"Q: {x}", y, "pattern", "days", x) for x, y in task]
    pool = None if shot_examples is None else [tuple(p) for p in shot_examples]
    return impl.accuracy_vs_shots(model, tok, task, shot_examples=pool, **kwargs)


@scenario
def shot_prompts(impl, state: dict, config: dict, kept_ids: Sequence[int], task_examples: Sequence,
                 shot_examples: Sequence | None = None, answer: str = "Tuesday", **kwargs) -> dict:
    """The prompts your accuracy_vs_shots hands to your complete() (which answers `answer` to every prompt
    here), and the accuracy it reports: {"prompts": sorted list, "max_new_tokens": [...], "accuracy": {...}}."""
    model, tok = rebuild_model(state, config, kept_ids)
    calls = []

    def recorder(model, tokenizer, prompts, max_new_tokens=16, batch_size=16):
        calls.append((list(prompts), max_new_tokens))
        return [answer] * len(prompts)

    fn = impl.accuracy_vs_shots
    namespace = getattr(fn, "__wrapped__", fn).__globals__  # where its `complete` is looked up
    saved = namespace.get("complete")
    namespace["complete"] = recorder
    try:
        pool = None if shot_examples is None else [tuple(p) for p in shot_examples]
        accuracy = fn(model, tok, [tuple(p) for p in task_examples], shot_examples=pool, **kwargs)
    finally:
        namespace["complete"] = saved
    return {"prompts": sorted(p for prompts, _ in calls for p in prompts),
            "max_new_tokens": sorted({n for _, n in calls}), "accuracy": accuracy}


def reference_lab06() -> SimpleNamespace:
    from gpt_lab import prompting

    return SimpleNamespace(few_shot_prompt=prompting.few_shot_prompt, complete=prompting.complete,
                           accuracy_vs_shots=prompting.accuracy_vs_shots)


# ---------------------------------------------------------------------------------------------
# lab07-sft




@scenario
def sft_example(impl, system: str | None, user: str, answer: str, kept_ids: Sequence[int] | None = None,
                mask_prompt: bool = True) -> tuple[list[int], list[int]]:
    """Your build_sft_example with a given tokenizer: (input_ids, labels)."""
    ids, labels = impl.build_sft_example(system, user, answer, _tokenizer(kept_ids), mask_prompt)
    if not isinstance(ids, list) or not isinstance(labels, list):
        raise AssertionError("build_sft_example should return two lists of ints (input_ids, labels), got "
                             f"{type(ids).__name__} and {type(labels).__name__}")
    return ids, labels


@scenario
def exact_match(impl, exchanges: Sequence[tuple[str, str, str]], kept_ids: Sequence[int], max_new_tokens: int = 24,
                batch_size: int = 32, seed: int = 0, **config) -> float:
    """Your evaluate_exact_match of a seeded GPT on (system, user, answer) examples."""
    from gpt_lab.sft import SFTExample

    model = tiny_gpt(seed, **config)
    examples = [SFTExample(s, u, a, "function-name", "check") for s, u, a in exchanges]
    return impl.evaluate_exact_match(model, _tokenizer(kept_ids), examples, max_new_tokens, batch_size)


def reference_lab07() -> SimpleNamespace:
    from gpt_lab import sft

    return SimpleNamespace(apply_chat_template=sft.apply_chat_template, build_sft_example=sft.build_sft_example,
                           evaluate_exact_match=sft.evaluate_exact_match)
