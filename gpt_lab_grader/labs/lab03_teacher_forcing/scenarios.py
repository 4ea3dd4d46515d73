"""Scenarios of lab03-teacher-forcing: the student's loss and train_step in short training runs.

See `gpt_lab_grader.labs.scenarios` for the contract (`fn(impl, **kwargs)`, plain results, CPU, seconds).
"""
from __future__ import annotations

import torch

from gpt_lab_grader.labs.scenarios import scenario, tiny_gpt


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
