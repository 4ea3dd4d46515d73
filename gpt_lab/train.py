"""Teacher forcing: train a language model to predict every next token of real text at once.

The model reads tokens x_0..x_{T-1} and at each position t predicts x_{t+1}. The loss is the mean
cross-entropy of those T predictions (the "shift"); positions whose target is `ignore_index`
(padding, a prompt we do not want to learn, the last position of a sequence) are left out.

One loop serves every kind of training in the course (pre-training, SFT): it takes a batch
function `batches(split, step) -> (x, y) or (x, y, attention_mask)`.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from gpt_lab.cache import atomic_write
from gpt_lab.data import Lessons, Repeats, get_batch
from gpt_lab.device import autocast

Batch = tuple[torch.Tensor, ...]
BatchFn = Callable[[str, int], Batch]


def batch_generator(seed: int, split: str, step: int) -> torch.Generator:
    """The random generator of batch (split, step): the same batch on every call and in every process."""
    return torch.Generator().manual_seed((seed << 32) ^ (step << 1) ^ (split == "val"))


def lm_batches(train_ids: np.ndarray, val_ids: np.ndarray, batch_size: int, block_size: int, seed: int = 0,
               device: torch.device | str = "cpu", repeats: Repeats | None = None,
               vocab_size: int | None = None, lessons: Lessons | None = None) -> BatchFn:
    """Random-window batches from token arrays; batch (split, step) is the same on every call.

    `repeats` rewrites some training rows so that copying from the context pays (see
    `gpt_lab.data.Repeats`, with `lessons` for its lesson rows); validation batches stay plain
    text, so val loss measures the text.

    Under DDP each rank takes its slice of one global batch of `batch_size * world_size` rows,
    so N processes see exactly the batch one process would see with N times the batch size.
    """
    def batches(split: str, step: int) -> Batch:
        rank, world = distributed_info()
        data = {"train": train_ids, "val": val_ids}[split]
        x, y = get_batch(data, batch_size * world, block_size, generator=batch_generator(seed, split, step),
                         repeats=repeats if split == "train" else None, vocab_size=vocab_size, lessons=lessons)
        rows = slice(rank * batch_size, (rank + 1) * batch_size)
        return x[rows].to(device), y[rows].to(device)

    return batches


def configure_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1,
                        betas: tuple[float, float] = (0.9, 0.95), fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW with two groups: the weights of Linear and Embedding layers decay; everything else
    (biases, LayerNorm gains, the smeared keys' mix) does not.

    `fused` (default: on CPU and CUDA) updates every parameter in one kernel instead of a loop of
    small ones; the arithmetic is the same.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    matrices = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    decay = [p for p in params if id(p) in matrices]
    no_decay = [p for p in params if id(p) not in matrices]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if fused is None:
        fused = bool(params) and params[0].device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


def lr_at(step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Linear warmup to `max_lr`, then cosine decay to `min_lr` at `max_steps`."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


@dataclass
class TrainConfig:
    max_steps: int = 1000
    lr: float = 1e-3
    min_lr: float | None = None          # default lr / 10
    warmup_steps: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0               # max global gradient norm; 0 disables
    grad_accum: int = 1                  # micro-batches per optimizer step
    eval_interval: int = 100             # evaluate every N steps (and at the end); 0 disables
    eval_steps: int = 10                 # validation batches per evaluation
    compile: bool = False                # torch.compile the model
    cpu_bf16: bool = False               # bf16 autocast for training steps on a CPU with native bf16
    checkpoint_path: str | None = None   # save at every evaluation and at the end; "{step}" is filled in
    progress: bool | None = None         # tqdm bar; None: on unless $GPT_LAB_PROGRESS=0


@dataclass
class History:
    """What happened during training, for plots: per-step train loss and lr, per-eval val loss."""

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def distributed_info() -> tuple[int, int]:
    """(rank, world_size): (0, 1) unless running in an initialised torch.distributed group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1). Returns True if distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return True


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)   # torch.compile
    return getattr(model, "module", model)       # DistributedDataParallel


def _forward_loss(model: nn.Module, batch: Batch, device: torch.device, cpu_bf16: bool = False) -> torch.Tensor:
    """Mean loss of one batch `(x, y)` or `(x, y, attention_mask)`."""
    x, y, *rest = batch
    mask = rest[0] if rest else None
    with autocast(device, cpu_bf16):
        _, loss = model(x, attention_mask=mask, targets=y)
    return loss


@torch.no_grad()
def evaluate(model: nn.Module, batches: BatchFn, steps: int = 10, split: str = "val") -> dict[str, float]:
    """Mean loss over `steps` fixed batches of `split`, and its perplexity exp(loss)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses = [_forward_loss(model, batches(split, i), device).item() for i in range(steps)]
    model.train(was_training)
    loss = float(np.mean(losses))
    if distributed_info()[1] > 1:
        t = torch.tensor([loss], device=device)
        dist.all_reduce(t)
        loss = t.item() / distributed_info()[1]
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0))}


def train(model: nn.Module, batches: BatchFn, config: TrainConfig, resume_from: str | os.PathLike | None = None,
          extra: dict | None = None) -> History:
    """Train `model` in place for `config.max_steps` optimizer steps; return the loss history.

    Under `torchrun` the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on CUDA).
    `resume_from` continues a checkpoint written by this function (weights, optimizer, step,
    history). `extra` is stored in every checkpoint (e.g. the tokenizer's kept ids).
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    distributed = init_distributed()
    rank, world = distributed_info()
    optimizer = configure_optimizer(model, config.lr, config.weight_decay, config.betas)
    history, start = History(), 0
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from, map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        history, start = History(**ckpt["history"]), ckpt["step"]
    net = model
    if config.compile:
        net = torch.compile(net)
    if distributed:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    min_lr = config.lr / 10 if config.min_lr is None else config.min_lr
    show = config.progress if config.progress is not None else os.environ.get("GPT_LAB_PROGRESS", "1") != "0"
    bar = tqdm(total=config.max_steps, initial=start, desc="train", disable=not show or rank != 0,
               dynamic_ncols=True)
    net.train()
    t0 = time.perf_counter()
    for step in range(start, config.max_steps):
        lr = lr_at(step, config.lr, min_lr, config.warmup_steps, config.max_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        for micro in range(config.grad_accum):
            batch = batches("train", step * config.grad_accum + micro)
            sync = not distributed or micro == config.grad_accum - 1
            ctx = net.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                loss = _forward_loss(net, batch, device, config.cpu_bf16)
                (loss / config.grad_accum).backward()
            total += loss.item() / config.grad_accum
            history.tokens += batch[0].numel() * world
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if distributed:
            t = torch.tensor([total], device=device)
            dist.all_reduce(t)
            total = t.item() / world
        history.step.append(step + 1)
        history.train_loss.append(total)
        history.lr.append(lr)
        last = step + 1 == config.max_steps
        if config.eval_interval and ((step + 1) % config.eval_interval == 0 or last):
            val = evaluate(model, batches, config.eval_steps)["loss"]
            history.val_step.append(step + 1)
            history.val_loss.append(val)
            bar.set_postfix(loss=f"{total:.3f}", val=f"{val:.3f}")
        else:
            bar.set_postfix(loss=f"{total:.3f}")
        bar.update(1)
        if config.checkpoint_path and rank == 0 and (last or (config.eval_interval and (step + 1) % config.eval_interval == 0)):
            history.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            path = config.checkpoint_path.format(step=step + 1)
            save_checkpoint(path, model, optimizer, step + 1, history, config, extra)
    bar.close()
    history.seconds += time.perf_counter() - t0
    return history


CHECKPOINT_KEYS = ("model", "optimizer", "step", "model_config", "history")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None, step: int,
                    history: History | None = None, train_config: TrainConfig | None = None,
                    extra: dict | None = None) -> Path:
    """Write config + weights + optimizer + step + history atomically (a crash never leaves half a file)."""
    model = _unwrap(model)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": step,
        "model_config": model.config.to_dict(),
        "train_config": asdict(train_config) if train_config is not None else None,
        "history": (history or History()).to_dict(),
        "extra": extra or {},
    }
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike, map_location: torch.device | str | None = "cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`, with a clear error if it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train one first (e.g. `gpt-lab pretrain`) or fix the path")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, ...
        raise RuntimeError(f"checkpoint {path} is corrupt or not a gpt_lab checkpoint ({type(exc).__name__}: {exc}); "
                           "delete it and train again") from exc
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        raise RuntimeError(f"checkpoint {path} is not a gpt_lab checkpoint: expected keys {CHECKPOINT_KEYS}")
    return state
