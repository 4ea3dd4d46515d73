"""Named model + training sizes, and the cached course models the book and labs reuse.

`pretrained("python", "small")` returns the course model: trained on first use (minutes on a
laptop CPU), then loaded from the cache ($GPT_LAB_CACHE). With GPT_LAB_FAST=1 every preset
shrinks to a few seconds of training so CI can execute every chapter and lab.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from gpt_lab.data import cache_dir, load_corpus
from gpt_lab.device import get_device, seed_everything
from gpt_lab.model import GPT, GPTConfig
from gpt_lab.tokenizer import CompactTokenizer
from gpt_lab.train import History, TrainConfig, evaluate, lm_batches, load_checkpoint, train

FAST_ENV = "GPT_LAB_FAST"
# The course vocabulary keeps the GPT-2 ids a corpus uses at least this often (on the python
# corpus: 6,906 ids covering 98.9% of its tokens); rarer tokens are spelled with byte tokens.
# The LM head, the model's most expensive layer, shrinks accordingly.
MIN_COUNT = 20


def fast_mode() -> bool:
    """True when $GPT_LAB_FAST=1: every training run in the course shrinks to seconds (for CI)."""
    return os.environ.get(FAST_ENV, "0") not in ("", "0", "false", "False")


@dataclass(frozen=True)
class Preset:
    """A model size and its training recipe (vocab_size comes from the corpus)."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch_size: int
    train: TrainConfig = field(default_factory=TrainConfig)

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=0.0)


PRESETS: dict[str, Preset] = {
    # seconds: unit tests, and every preset under GPT_LAB_FAST=1
    "tiny": Preset(2, 2, 64, 128, 16, TrainConfig(max_steps=40, lr=3e-3, warmup_steps=5, eval_interval=20, eval_steps=4)),
    # the course model: <= 5 minutes on 2 CPU cores with native bf16 (2 M of the 5.9 M tokens, seen once)
    "small": Preset(4, 4, 128, 256, 8, TrainConfig(max_steps=1000, lr=5e-3, warmup_steps=30, eval_interval=200,
                                                     eval_steps=16, cpu_bf16=True)),
    # for a GPU: about 25M parameters, a few minutes on one modern GPU
    "gpu": Preset(8, 8, 512, 512, 64, TrainConfig(max_steps=5000, lr=6e-4, warmup_steps=200, eval_interval=500,
                                                   eval_steps=20)),
}


def get_preset(name: str) -> Preset:
    """The preset `name`, or `tiny` for every name when GPT_LAB_FAST=1."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS["tiny"] if fast_mode() else PRESETS[name]


@dataclass
class Bundle:
    """A trained model with what it needs to be used: tokenizer, history, and facts about its run."""

    model: GPT
    tokenizer: CompactTokenizer
    history: History
    path: Path
    info: dict


def unigram_loss(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int) -> float:
    """Validation loss (nats/token) of the best context-free model: add-one smoothed train frequencies."""
    counts = np.bincount(train_ids, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(val_ids, dtype=np.int64)].mean())


def course_tokenizer(corpus: str = "python", min_count: int = MIN_COUNT) -> CompactTokenizer:
    """The compact tokenizer of a corpus: GPT-2 ids seen at least `min_count` times, plus bytes."""
    counts = np.bincount(load_corpus(corpus).ids, minlength=50257)
    return CompactTokenizer(np.flatnonzero(counts >= min_count).tolist())


def load_bundle(path: str | os.PathLike, device: torch.device | str | None = None) -> Bundle:
    """Rebuild model + tokenizer from a checkpoint written by `pretrained` or `gpt_lab.sft`."""
    device = get_device(str(device) if device else None)
    ckpt = load_checkpoint(path, map_location="cpu")
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    extra = ckpt["extra"]
    if "kept_ids" not in extra:
        raise RuntimeError(f"checkpoint {path} has no tokenizer ('kept_ids' missing from extra)")
    return Bundle(model.to(device).eval(), CompactTokenizer(extra["kept_ids"]), History(**ckpt["history"]),
                  Path(path), extra.get("info", {}))


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def pretrained(corpus: str = "python", preset: str = "small", device: torch.device | str | None = None,
               seed: int = 0, retrain: bool = False) -> Bundle:
    """The model of `preset` trained on `corpus`: from the cache, or trained now and cached.

    The vocabulary is compacted to the ids the corpus uses often (see `course_tokenizer`).
    """
    from filelock import FileLock

    spec = get_preset(preset)
    data = load_corpus(corpus)
    path = cache_dir() / "checkpoints" / f"{Path(data.name).name}-{preset}{'-fast' if fast_mode() else ''}-" \
        f"{_key(data.name, len(data), spec, seed, MIN_COUNT)}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if path.exists() and not retrain:
            return load_bundle(path, device)
        seed_everything(seed)
        device = get_device(str(device) if device else None)
        tokenizer = course_tokenizer(corpus)
        train_ids, val_ids = (tokenizer.from_gpt2_array(part) for part in data.split(0.1))
        model = GPT(spec.model_config(tokenizer.n_vocab)).to(device)
        batches = lm_batches(train_ids, val_ids, spec.batch_size, spec.block_size, seed, device)
        info = {"corpus": data.name, "preset": preset, "fast": fast_mode(), "tokens": len(train_ids) + len(val_ids),
                "vocab_size": tokenizer.n_vocab, "params": model.num_params(),
                "unigram_val_loss": unigram_loss(train_ids, val_ids, tokenizer.n_vocab)}
        config = replace(spec.train, checkpoint_path=None)
        history = train(model, batches, config)
        info.update(train_loss=float(np.mean(history.train_loss[-10:])),
                    val_loss=evaluate(model, batches, config.eval_steps)["loss"], seconds=history.seconds)
        from gpt_lab.train import save_checkpoint
        save_checkpoint(path, model, None, config.max_steps, history, config,
                        extra={"kept_ids": tokenizer.kept, "info": info})
        return Bundle(model.eval(), tokenizer, history, path, info)
