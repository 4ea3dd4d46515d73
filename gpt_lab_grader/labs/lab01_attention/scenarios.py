"""Scenarios of lab01-attention: the student's attention inside gpt_lab's GPT.

See `gpt_lab_grader.labs.scenarios` for the contract (`fn(impl, **kwargs)`, plain results, CPU, seconds).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from collections.abc import Callable

from gpt_lab_grader.labs.scenarios import scenario, tiny_gpt


@scenario
def gpt_logits_with_attention(impl, idx: torch.Tensor, attention_mask: torch.Tensor | None = None, seed: int = 0,
                              **config) -> torch.Tensor:
    """A seeded GPT with your scaled_dot_product_attention plugged into every block gives the right logits."""
    model = tiny_gpt(seed, attention_fn=impl.scaled_dot_product_attention, **config)
    with torch.no_grad():
        return model(idx, attention_mask=attention_mask)[0]


class FunctionalAttention(nn.Module):
    """Runs a functional `multi_head_attention(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias,
    n_head, mask)` with the weights of an existing `MultiHeadAttention`, in its place inside a block."""

    def __init__(self, attn: nn.Module, multi_head_attention: Callable):
        super().__init__()
        self.attn, self.fn = attn, multi_head_attention

    def forward(self, x, mask=None, *unused, **unused_kw):  # the block's other arguments (cache, flags)
        a = self.attn
        return self.fn(x, a.c_attn.weight, a.c_attn.bias, a.c_proj.weight, a.c_proj.bias, a.n_head, mask)


@scenario
def gpt_logits_with_mha(impl, idx: torch.Tensor, attention_mask: torch.Tensor | None = None, seed: int = 0,
                        **config) -> torch.Tensor:
    """A seeded GPT with your multi_head_attention in every block gives the right logits."""
    model = tiny_gpt(seed, **config)
    for block in model.transformer.h:
        block.attn = FunctionalAttention(block.attn, impl.multi_head_attention)
    with torch.no_grad():
        return model(idx, attention_mask=attention_mask)[0]
