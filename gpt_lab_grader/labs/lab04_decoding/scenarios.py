"""Scenarios of lab04-decoding: the student's logits filters and beam search on seeded tiny GPTs.

See `gpt_lab_grader.labs.scenarios` for the contract (`fn(impl, **kwargs)`, plain results, CPU, seconds).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from gpt_lab_grader.labs.scenarios import scenario, tiny_gpt


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
