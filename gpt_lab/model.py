"""A GPT-2-style language model in one readable file.

token ids (B, T) -> token + position embeddings -> n_layer transformer blocks -> LayerNorm
-> LM head (tied to the token embedding) -> logits (B, T, vocab_size).

Parameter names follow GPT-2's layout (`transformer.h.0.attn.c_attn.weight`, ...), so weights in
HuggingFace's format load with `load_hf_gpt2_state_dict`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from gpt_lab.attention import AttentionFn, MultiHeadAttention, causal_mask, combined_mask
from gpt_lab.loss import lm_loss


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    block_size: int = 1024      # longest sequence (number of position embeddings)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True           # biases in Linear and LayerNorm layers, as in GPT-2
    norm: str = "pre"           # "pre": x + f(LN(x)) (GPT-2, LLaMA); "post": LN(x + f(x)) (2017 Transformer)
    key_shift: bool = False     # smeared keys: each head mixes a key with the previous position's (off in GPT-2)

    def __post_init__(self):
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', got {self.norm!r}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


class MLP(nn.Module):
    """Position-wise feed-forward network: n_embd -> 4 n_embd -> GELU -> n_embd."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Attention then MLP, each wrapped in a residual connection and a LayerNorm.

    Pre-LN:  y = x + Attn(LN1(x));  z = y + MLP(LN2(y))
    Post-LN: y = LN1(x + Attn(x));  z = LN2(y + MLP(y))
    """

    def __init__(self, config: GPTConfig, attention_fn: AttentionFn | None = None):
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = MultiHeadAttention(config.n_embd, config.n_head, config.dropout, config.bias, attention_fn,
                                       config.key_shift)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, kv_cache=None, layer: int = 0,
                need_weights: bool = False, is_causal: bool = False,
                has_previous: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.pre_norm:
            a, weights = self.attn(self.ln_1(x), mask, kv_cache, layer, need_weights, is_causal, has_previous)
            x = x + a
            x = x + self.mlp(self.ln_2(x))
        else:
            a, weights = self.attn(x, mask, kv_cache, layer, need_weights, is_causal, has_previous)
            x = self.ln_1(x + a)
            x = self.ln_2(x + self.mlp(x))
        return x, weights


class GPT(nn.Module):
    """The course model. `attention_fn` (signature of `gpt_lab.attention.scaled_dot_product_attention`)
    replaces the attention inside every block, so a student's function runs in the real model."""

    def __init__(self, config: GPTConfig, attention_fn: AttentionFn | None = None):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),   # token embeddings (V, C)
            wpe=nn.Embedding(config.block_size, config.n_embd),   # position embeddings (block_size, C)
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, attention_fn) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying: one matrix reads and writes tokens
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 n_layer)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def set_attention(self, attention_fn: AttentionFn | None) -> None:
        """Swap the attention function of every block (None restores the built-in one)."""
        for block in self.transformer.h:
            block.attn.attention_fn = attention_fn

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings excluded by default (the token matrix is the LM head)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def _positions(self, idx: torch.Tensor, attention_mask: torch.Tensor | None, past: int) -> torch.Tensor:
        """Position of each new token: past + t, or, with padding, the count of real tokens before it."""
        T = idx.shape[1]
        if attention_mask is None:
            pos = torch.arange(past, past + T, device=idx.device).unsqueeze(0)
            last = past + T - 1  # known without reading a tensor: no GPU sync, no graph break in torch.compile
        else:
            pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            last = int(pos.max())
        if last >= self.config.block_size:
            raise ValueError(
                f"sequence is longer than block_size {self.config.block_size}: position {last} has no "
                "embedding (truncate the input, or generate fewer tokens)"
            )
        return pos

    def hidden_states(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None, kv_cache=None,
                      need_weights: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the transformer: (B, T) ids -> (B, T, C) final hidden states, and per-layer attention
        weights (B, n_head, T, T_k) when `need_weights`."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be (batch, seq_len) token ids, got shape {tuple(idx.shape)}")
        B, T = idx.shape
        past = kv_cache.length if kv_cache is not None else 0
        T_k = past + T
        if attention_mask is not None and tuple(attention_mask.shape) != (B, T_k):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, T_k)} "
                f"(batch, {'cached + new' if past else 'seq_len'} positions)"
            )
        pos = self._positions(idx, attention_mask, past)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        is_causal = attention_mask is None and past == 0
        mask = causal_mask(T, T_k, idx.device) if attention_mask is None else combined_mask(attention_mask, T, T_k)
        has_previous = None  # key shift: which of the T_k positions has a real token before it
        if self.config.key_shift and attention_mask is not None:
            has_previous = torch.nn.functional.pad(attention_mask[:, :-1].bool(), (1, 0))  # (B, T_k)
        all_weights = []
        for layer, block in enumerate(self.transformer.h):
            x, weights = block(x, mask, kv_cache, layer, need_weights, is_causal, has_previous)
            if need_weights:
                all_weights.append(weights)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.transformer.ln_f(x), all_weights

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None,
                targets: torch.Tensor | None = None, kv_cache=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) token ids; attention_mask: (B, T) 1 = token, 0 = padding (with a cache:
        (B, cached + T)); targets: (B, T) next-token ids, -100 where ignored.
        Returns `(logits (B, T, vocab_size), loss or None)`."""
        x, _ = self.hidden_states(idx, attention_mask, kv_cache)
        logits = self.lm_head(x)
        return logits, (lm_loss(logits, targets) if targets is not None else None)

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Attention weights of every layer, each (B, n_head, T, T): what each position looks at."""
        return self.hidden_states(idx, attention_mask, need_weights=True)[1]


def load_hf_gpt2_state_dict(model: GPT, state_dict: dict[str, torch.Tensor]) -> GPT:
    """Copy HuggingFace-format GPT-2 weights (`GPT2LMHeadModel.state_dict()`) into `model`.

    HF stores the attention and MLP projections as Conv1D, whose weight is (in, out): those are
    transposed into our nn.Linear (out, in). Causal-mask buffers (`attn.bias`, `attn.masked_bias`)
    are skipped; `lm_head.weight` is tied to `transformer.wte.weight`.
    """
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    own = model.state_dict()
    theirs = {k: v for k, v in state_dict.items()
              if not k.endswith((".attn.bias", ".attn.masked_bias")) and k != "lm_head.weight"}
    missing = sorted(set(own) - set(theirs) - {"lm_head.weight"})
    unexpected = sorted(set(theirs) - set(own))
    if missing or unexpected:
        raise ValueError(f"state dict does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for key, value in theirs.items():
            value = value.t() if key.endswith(conv1d) else value
            if own[key].shape != value.shape:
                raise ValueError(f"{key}: model has shape {tuple(own[key].shape)}, state dict {tuple(value.shape)}")
            own[key].copy_(value)
    return model
