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


def shift_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Labels aligned with the input (B, T) -> next-token targets (B, T): targets[:, t] = labels[:, t+1].

    The last position has no next token in the sequence, so its target is `ignore_index`.
    """
    targets = torch.full_like(labels, ignore_index)
    targets[:, :-1] = labels[:, 1:]
    return targets
