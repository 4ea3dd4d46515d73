"""The KV cache: keys and values of past positions, kept so each new token costs one position.

Without a cache, generating token t re-runs the model over all t previous tokens, although their
keys and values never change (a causal model cannot look ahead). The cache stores them per
layer, preallocated to a maximum length; each step appends the new token's keys and values.
"""
from __future__ import annotations

import torch


class KVCache:
    """Per-layer keys and values, `k`/`v`: (n_layer, B, n_head, max_length, head_dim).

    `length` positions are filled. A forward pass calls `update(layer, k_new, v_new)` once per
    layer, then `advance(T)` once, when all layers have appended their T new positions.
    """

    def __init__(self, n_layer: int, batch_size: int, n_head: int, head_dim: int, max_length: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        shape = (n_layer, batch_size, n_head, max_length, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_length = max_length
        self.length = 0

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int, max_length: int | None = None) -> "KVCache":
        """An empty cache shaped for `model` (a `gpt_lab.model.GPT`), on its device and dtype."""
        cfg = model.config
        param = next(model.parameters())
        return cls(cfg.n_layer, batch_size, cfg.n_head, cfg.n_embd // cfg.n_head,
                   max_length or cfg.block_size, param.device, param.dtype)

    def update(self, layer: int, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, n_head, T, head_dim) new keys/values after the filled part of `layer`;
        return that layer's keys and values for all `length + T` positions."""
        T = k_new.shape[-2]
        end = self.length + T
        if end > self.max_length:
            raise RuntimeError(
                f"KV cache is full: {self.length} cached + {T} new positions > max_length {self.max_length} "
                "(the model's context is used up; start a new cache with a shorter prompt or fewer new tokens)"
            )
        self.k[layer, :, :, self.length:end] = k_new
        self.v[layer, :, :, self.length:end] = v_new
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, T: int) -> None:
        self.length += T

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (B',), in that order: beam search follows its surviving beams."""
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)
