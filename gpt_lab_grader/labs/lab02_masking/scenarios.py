"""Scenarios of lab02-masking: the student's masks and collate inside gpt_lab's GPT.

See `gpt_lab_grader.labs.scenarios` for the contract (`fn(impl, **kwargs)`, plain results, CPU, seconds).
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

import gpt_lab.model
from gpt_lab_grader.labs.scenarios import scenario, tiny_gpt


@contextlib.contextmanager
def _model_masks(impl):
    """Make gpt_lab's GPT build its masks with `impl.causal_mask` / `impl.combined_mask`."""
    saved = gpt_lab.model.causal_mask, gpt_lab.model.combined_mask
    gpt_lab.model.causal_mask, gpt_lab.model.combined_mask = impl.causal_mask, impl.combined_mask
    try:
        yield
    finally:
        gpt_lab.model.causal_mask, gpt_lab.model.combined_mask = saved


@scenario
def padded_batch_logits(impl, sequences: Sequence[Sequence[int]], side: str = "right", pad_id: int = 0,
                        seed: int = 0, **config) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A padded batch made by your collate, run through a seeded GPT that uses your masks."""
    ids, attention_mask = impl.collate(sequences, pad_id, side=side)
    model = tiny_gpt(seed, **config)
    with _model_masks(impl), torch.no_grad():
        logits = model(ids, attention_mask=attention_mask)[0]
    return ids, attention_mask, logits


@scenario
def causal_logits(impl, idx: torch.Tensor, seed: int = 0, **config) -> torch.Tensor:
    """A seeded GPT that builds its causal mask with your causal_mask gives the right logits."""
    model = tiny_gpt(seed, **config)
    with _model_masks(impl), torch.no_grad():
        # an all-ones attention mask sends the model through the combined (causal + padding) mask path
        ones = torch.ones_like(idx)
        return model(idx, attention_mask=ones)[0]
