"""Scenarios: small, seeded programs that put a lab's graded functions to work inside gpt_lab.

A scenario is `fn(impl, **kwargs)`, where `impl` holds one implementation of the lab's graded
names (attribute access). The sandbox calls it in the child process with the student's
definitions; a hidden check calls the same function in its own process with the reference
implementations, and compares the two results. So "your attention inside the real GPT" and "a
short training run with your loss" are checked exactly like a single function call.
Scenarios return plain tensors, numbers and containers of those; they run on the CPU.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

import gpt_lab.model
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


# ---------------------------------------------------------------------------------------------
# lab01-attention


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

    def forward(self, x, mask=None, kv_cache=None, layer=0, need_weights=False, is_causal=False):
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


# ---------------------------------------------------------------------------------------------
# lab02-masking


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


# ---------------------------------------------------------------------------------------------
# lab03-teacher-forcing


@scenario
def lm_loss_and_grad(impl, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100):
    """Your lm_loss and its gradient with respect to the logits."""
    logits = logits.clone().requires_grad_(True)
    loss = impl.lm_loss(logits, targets, ignore_index)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise AssertionError(f"lm_loss must return a scalar tensor (shape ()), got "
                             f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__}")
    if not loss.requires_grad:
        raise AssertionError("lm_loss's result does not depend on the logits through autograd (no gradient); "
                             "avoid .item(), .detach() or numpy inside the loss")
    (grad,) = torch.autograd.grad(loss, logits)
    return loss.detach(), grad


def _pattern_batch(step: int, batch_size: int, T: int, vocab_size: int, seed: int, pad_fraction: float = 0.25):
    """A batch of a learnable pattern (token t+1 = token t + 1 mod V) with some right padding ignored.

    Returns x (B, T) and next-token targets y (B, T) with -100 where the target is padding.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + step)
    start = torch.randint(vocab_size, (batch_size, 1), generator=g)
    seq = (start + torch.arange(T + 1)) % vocab_size
    x, y = seq[:, :-1].clone(), seq[:, 1:].clone()
    lengths = torch.randint(max(1, int(T * (1 - pad_fraction))), T + 1, (batch_size,), generator=g)
    pad = torch.arange(T)[None, :] >= lengths[:, None]
    x[pad] = 0
    y[pad | (torch.arange(T)[None, :] >= (lengths[:, None] - 1))] = -100  # no target past the real tokens
    return x, y


@scenario
def train_steps(impl, steps: int = 3, seed: int = 0, lr: float = 1e-2, optimizer: str = "adamw", batch_size: int = 4,
                T: int = 12, **config) -> dict:
    """A few calls of your train_step on a seeded GPT: the losses it returns and the weights after them."""
    model = tiny_gpt(seed, **config).train()
    params = model.parameters()
    opt = torch.optim.AdamW(params, lr=lr) if optimizer == "adamw" else torch.optim.SGD(params, lr=lr)
    losses = []
    for step in range(steps):
        x, y = _pattern_batch(step, batch_size, T, model.config.vocab_size, seed)
        losses.append(impl.train_step(model, opt, x, y))
    return {"losses": losses, "training": model.training,
            "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


@scenario
def short_training(impl, steps: int = 60, seed: int = 0, lr: float = 3e-3, batch_size: int = 8, T: int = 16,
                   **config) -> list[float]:
    """A short training run of a seeded GPT with your train_step: its loss curve."""
    model = tiny_gpt(seed, **config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    return [impl.train_step(model, opt, *_pattern_batch(step, batch_size, T, model.config.vocab_size, seed))
            for step in range(steps)]
