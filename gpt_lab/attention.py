"""Scaled dot-product attention, written out, with the masks that make it causal and padding-aware.

Mask convention (the lectures'): a boolean mask is True where attention is NOT allowed, e.g.
`causal_mask(T) = triu(ones(T, T), 1)`. Masked scores become -inf before the softmax, so their
weights are exactly 0. (PyTorch's `F.scaled_dot_product_attention` uses the opposite convention
for boolean masks, True = may attend; the fast path below converts.)
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

AttentionFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d_k)) V.

    q: (..., T_q, d_k), k: (..., T_k, d_k), v: (..., T_k, d_v); mask: bool, broadcastable to
    (..., T_q, T_k), True = masked. Returns `(out (..., T_q, d_v), weights (..., T_q, T_k))`.
    The softmax runs over the key axis (the last one): each query's weights sum to 1. A query
    whose keys are all masked gets all-zero weights and a zero output instead of NaN.
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k need the same last dimension d_k, got {tuple(q.shape)} and {tuple(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v need the same number of keys, got {tuple(k.shape)} and {tuple(v.shape)}")
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
        empty = mask.all(dim=-1, keepdim=True)  # queries with nothing to attend to
        if empty.any():  # (a causal mask has none: two passes over the scores saved)
            weights = torch.softmax(scores.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)
            return weights @ v, weights
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def causal_mask(T: int, T_k: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T_k) bool, True above the diagonal: query i may not see keys after it.

    With a KV cache the T queries are the last T of T_k positions, so query i sits at absolute
    position T_k - T + i and may see keys 0..T_k - T + i.
    """
    T_k = T if T_k is None else T_k
    if T <= 0 or T_k < T:
        raise ValueError(f"need 0 < T <= T_k, got T={T}, T_k={T_k}")
    ones = torch.ones(T, T_k, dtype=torch.bool, device=device)
    return torch.triu(ones, diagonal=T_k - T + 1)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T_k) 1/0 attention mask (1 = real token) -> (B, 1, 1, T_k) bool, True on padding keys."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, seq_len), got shape {tuple(attention_mask.shape)}")
    return (attention_mask == 0)[:, None, None, :]


def combined_mask(attention_mask: torch.Tensor | None, T: int, T_k: int | None = None, device=None) -> torch.Tensor:
    """Causal OR padding: (B, 1, T, T_k) bool (or (T, T_k) without an attention mask)."""
    device = attention_mask.device if attention_mask is not None else device
    mask = causal_mask(T, T_k, device=device)
    if attention_mask is None:
        return mask
    return mask | padding_mask(attention_mask)


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention with GPT-2's parameter layout.

    `c_attn` computes Q, K and V for all heads in one matrix (n_embd -> 3 * n_embd), heads are
    split from the channel axis, attended independently, merged, and mixed by `c_proj`.
    `attention_fn` replaces the written-out attention (a student's function plugs in here).
    Without weights requested and without a custom `attention_fn`, the fused PyTorch kernel runs.

    With `key_shift`, every key is mixed with the key of the position before it ("smeared keys",
    Olsson et al. 2022), channel by channel: k'_j = s * k_j + (1 - s) * k_{j-1}, s = sigmoid(key_mix),
    one learned weight per head and channel (n_head, head_dim). A query can then match "the token
    whose previous token is mine", the lookup an induction head needs, in a single layer; with a
    weight per channel, one head can hold the current token in some channels and the previous one
    in others, and so match two tokens at once (the same idea as Primer's depthwise convolution).
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True,
                 attention_fn: AttentionFn | None = None, key_shift: bool = False):
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head})")
        self.n_head, self.n_embd = n_head, n_embd
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        self.dropout = dropout
        self.attention_fn = attention_fn
        # half the channels of every head start mostly on their own key (s = 0.88), half mostly on the
        # previous one (s = 0.12)
        head_dim = n_embd // n_head
        self.key_mix = nn.Parameter(torch.tensor([[2.0 if c < head_dim // 2 else -2.0 for c in range(head_dim)]
                                                  for _ in range(n_head)])) if key_shift else None

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, n_head, T, C // n_head)."""
        B, T, C = x.shape
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)

    def smear_keys(self, k: torch.Tensor, has_previous: torch.Tensor | None = None) -> torch.Tensor:
        """k: (B, n_head, T_k, head_dim) -> s * k_j + (1 - s) * k_{j-1}, s = sigmoid(key_mix) per head and channel.

        `has_previous`: (B or 1, T_k) bool, False where position j has no real token before it
        (j = 0, or position j - 1 is padding); there the previous key counts as zero, so a padded
        row smears exactly as the same row without padding. Default: every position but the first.
        """
        previous = torch.nn.functional.pad(k, (0, 0, 1, 0))[:, :, :-1]   # (B, n_head, T_k, head_dim)
        if has_previous is None:
            has_previous = torch.arange(k.shape[2], device=k.device)[None] > 0
        previous = previous * has_previous[:, None, :, None].to(k.dtype)
        s = torch.sigmoid(self.key_mix).to(k.dtype)[None, :, None, :]  # (1, n_head, 1, head_dim)
        return s * k + (1 - s) * previous

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, kv_cache=None, layer: int = 0,
                need_weights: bool = False, is_causal: bool = False,
                has_previous: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, C); mask: bool, broadcastable to (B, n_head, T, T_k), True = masked.

        `is_causal` tells the fused path that `mask` is exactly the square causal mask, so the
        kernel can skip reading it.
        With `kv_cache`, the new keys/values are appended to the cache's layer `layer` and the
        queries attend over everything cached so far (T_k = cached + T). The cache keeps the keys
        as computed; with `key_shift` they are smeared after reading them back (see `smear_keys`,
        `has_previous` (B or 1, T_k)), so cached and uncached runs see the same keys.
        Returns `(y (B, T, C), weights (B, n_head, T, T_k) or None)`.
        """
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)
        if self.key_mix is not None:
            k = self.smear_keys(k, has_previous)
        if need_weights or self.attention_fn is not None:
            attend = self.attention_fn or scaled_dot_product_attention
            y, weights = attend(q, k, v, mask)
            if self.training and self.dropout > 0:  # dropout on the weights, as in GPT-2
                y = self.attn_dropout(weights) @ v
        else:
            p = self.dropout if self.training else 0.0
            if is_causal:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
            else:
                y = fused_attention(q, k, v, mask, p)
            weights = None
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # merge heads
        return self.resid_dropout(self.c_proj(y)), weights


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                    dropout_p: float = 0.0) -> torch.Tensor:
    """The same attention through `F.scaled_dot_product_attention` (flash / memory-efficient kernels).

    Fully masked queries get a zero output, as in the written-out version.
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    empty = mask.all(dim=-1, keepdim=True)
    allowed = ~mask | empty  # let empty rows see everything (no NaN), then zero them
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
    return out.masked_fill(empty, 0.0)
