"""The language-modelling loss: predict every next token, ignore what there is nothing to learn from.

The ground floor of the course: the model computes its loss with `lm_loss`, the trainer and SFT
build their targets with `shift_labels`. Positions whose target is IGNORE_INDEX (padding, a
masked prompt, the last position of a sequence) contribute nothing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean next-token cross-entropy.

    logits: (B, T, V), the model's scores at each position; targets: (B, T), the token that
    follows each position (already shifted: targets[:, t] = input[:, t + 1]), `ignore_index`
    where there is nothing to learn. Averages -log p(target) over the positions not ignored.
    """
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} disagree: "
                         "expected logits (B, T, V) and targets (B, T)")
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=ignore_index)


def chunked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """Mean cross-entropy of the LM head's logits `hidden @ weight.T` against `targets`, a chunk of rows at a time.

    hidden: (N, C), final hidden states at the learned positions; weight: (V, C), the LM head; targets:
    (N,), none ignored. Equals `lm_loss(F.linear(hidden, weight)[None], targets[None])`, but the (N, V)
    logits, the largest tensor of a step (2,648 x 7,059 for a batch of unmasked SFT), never exist whole:
    each chunk's logits become its loss and, in the same pass, its gradients (softmax - one-hot), and are
    dropped while they are still in the cache. Under autocast the matmuls run in its dtype, the softmax
    in float32, as `lm_loss` does.
    """
    if hidden.shape[:-1] != targets.shape or hidden.dim() != 2 or weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"hidden {tuple(hidden.shape)}, weight {tuple(weight.shape)} and targets "
                         f"{tuple(targets.shape)} disagree: expected (N, C), (V, C) and (N,)")
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _ChunkedLMLoss.apply(hidden, weight, targets, chunk)
    return _chunked_loss(hidden, weight, targets, chunk)[0]


def _chunked_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                  grad_hidden: bool = False, grad_weight: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(mean loss, d loss / d hidden, d loss / d weight), each gradient only when asked for (a frozen
    LM head, as in fine-tuning, skips the (V x C) one: a third of the head's matmuls).

    Under autocast, `hidden` and `weight` are cast to its dtype once, not at every chunk's matmul.
    """
    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    n = hidden.shape[0]
    total = torch.zeros((), device=hidden.device)
    d_hidden = torch.empty_like(hidden) if grad_hidden else None
    d_weight = torch.zeros(weight.shape, device=weight.device) if grad_weight else None  # float32 sums
    with torch.autocast(device, enabled=False):
        w, hs = weight.to(dtype), hidden.to(dtype)
        for i in range(0, n, chunk):
            h, y = hs[i:i + chunk], targets[i:i + chunk]
            logits = (h @ w.T).float()                                     # (c, V)
            top = logits.amax(-1, keepdim=True)
            p = (logits - top).exp_()                                      # softmax numerator, one exp
            norm = p.sum(-1, keepdim=True)
            total += (top + norm.log()).sum() - logits.gather(1, y[:, None]).sum()  # logsumexp - target logit
            if grad_hidden or grad_weight:
                p /= norm                                                  # d(-log p_y) / d logits = p - onehot(y)
                p[torch.arange(len(y), device=y.device), y] -= 1
                d_logits = p.to(dtype)
                if grad_hidden:
                    d_hidden[i:i + chunk] = d_logits @ w
                if grad_weight:
                    d_weight += d_logits.T @ h
    return (total / n, d_hidden / n if grad_hidden else None, d_weight / n if grad_weight else None)


class _ChunkedLMLoss(torch.autograd.Function):
    """`chunked_lm_loss` for autograd: the gradients are made in the forward pass, the backward scales them."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk):
        need_hidden, need_weight = ctx.needs_input_grad[:2]
        loss, grad_hidden, grad_weight = _chunked_loss(hidden, weight, targets, chunk, need_hidden, need_weight)
        ctx.save_for_backward(grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (None if grad_hidden is None else grad_hidden * grad_loss,
                None if grad_weight is None else grad_weight * grad_loss, None, None)


def shift_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Labels aligned with the input (B, T) -> next-token targets (B, T): targets[:, t] = labels[:, t+1].

    The last position has no next token in the sequence, so its target is `ignore_index`.
    """
    targets = torch.full_like(labels, ignore_index)
    targets[:, :-1] = labels[:, 1:]
    return targets
