"""Named model sizes with their training recipes, and the course model that ships with the package.

`pretrained()` returns the course model: a 4-layer GPT trained once on the Python standard
library with `gpt-lab pretrain --preset course` and shipped as package data (safetensors weights
plus a JSON card that records how it was made and what it scores). Loading takes a second and
checks the file's hash; nothing is trained. Other presets are trained on first use and cached
($GPT_LAB_CACHE). With GPT_LAB_FAST=1 every preset becomes `tiny`, trained in seconds, so CI can
execute every chapter and lab.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from gpt_lab.cache import atomic_write, build_once, cache_dir, fingerprint
from gpt_lab.data import LESSON_TASKS, Repeats, function_lessons, load_corpus
from gpt_lab.device import compute_dtype, get_device, seed_everything
from gpt_lab.model import GPT, GPTConfig
from gpt_lab.tokenizer import CompactTokenizer
from gpt_lab.train import History, TrainConfig, evaluate, lm_batches, load_checkpoint, train

FAST_ENV = "GPT_LAB_FAST"
ASSETS = Path(__file__).parent / "assets"
# The course vocabulary keeps the GPT-2 ids a corpus uses at least this often (on the python
# corpus: about 7,000 ids covering 98.9% of its tokens); rarer tokens are spelled with byte tokens.
# The LM head, the model's most expensive layer, shrinks accordingly.
MIN_COUNT = 20
PROBE_LENGTHS = (20, 50)  # the repeat probe of the card: random tokens of these lengths, then again


def fast_mode() -> bool:
    """True when $GPT_LAB_FAST=1: every training run in the course shrinks to seconds (for CI)."""
    return os.environ.get(FAST_ENV, "0") not in ("", "0", "false", "False")


@dataclass(frozen=True)
class Preset:
    """A model size and its training recipe (vocab_size comes from the corpus).

    `key_shift` turns on smeared keys (see `gpt_lab.attention.MultiHeadAttention`); `repeats`
    rewrites a share of the training rows so that copying from the context pays off
    (`gpt_lab.data.Repeats`). Together they let a small model learn to copy in hours of CPU.
    """

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    batch_size: int
    train: TrainConfig = field(default_factory=TrainConfig)
    key_shift: bool = False
    repeats: Repeats | None = None

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=0.0, key_shift=self.key_shift)


# spans of real code recur up to 128 tokens later: about as far as a function's name lies from the
# answer of the fine-tuning chapter's prompts; and one row in eight is a few-shot lesson (gpt_lab.data.Lessons)
COPYING = Repeats(span_fraction=0.25, max_gap=128, copy_fraction=0.25, lesson_fraction=0.125)

PRESETS: dict[str, Preset] = {
    # seconds: unit tests, and every preset under GPT_LAB_FAST=1
    "tiny": Preset(2, 2, 64, 128, 16, TrainConfig(max_steps=40, lr=3e-3, warmup_steps=5, eval_interval=20,
                                                  eval_steps=4), key_shift=True, repeats=COPYING),
    # the shipped course model: about 40 minutes on 2 CPU cores with native bf16 (33 M tokens). Two heads of
    # 64 dims, not four of 32: on the random-period copy task (4 layers, 600 steps) the wider heads copy the
    # next token right 96% of the time against 85% (benchmarks/induction.py), and copying is the skill the
    # prompting and fine-tuning chapters need
    "course": Preset(4, 2, 128, 256, 8, TrainConfig(max_steps=16000, lr=3e-3, warmup_steps=200, eval_interval=1000,
                                                    eval_steps=16, cpu_bf16=True), key_shift=True, repeats=COPYING),
    # for a GPU: about 25M parameters, a few minutes on one modern GPU
    "gpu": Preset(8, 8, 512, 512, 64, TrainConfig(max_steps=5000, lr=6e-4, warmup_steps=200, eval_interval=500,
                                                  eval_steps=20), key_shift=True, repeats=COPYING),
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


def corpus_batches(corpus: str, preset: Preset, tokenizer: CompactTokenizer, seed: int = 0,
                   device: torch.device | str = "cpu"):
    """The batch function a preset trains on: `corpus` in the tokenizer's ids, 10% held out for validation.

    On the python corpus the preset's lesson rows are lessons about the standard library's
    functions (`gpt_lab.data.function_lessons`); other corpora have none."""
    train_ids, val_ids = (tokenizer.from_gpt2_array(part) for part in load_corpus(corpus).split(0.1))
    lessons = (function_lessons(tokenizer) if corpus == "python" and preset.repeats and preset.repeats.lesson_fraction
               else None)
    return lm_batches(train_ids, val_ids, preset.batch_size, preset.block_size, seed, device, preset.repeats,
                      tokenizer.n_vocab, lessons), train_ids, val_ids


# ----------------------------------------------------------------------------- saving and loading

def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(path: str | os.PathLike, model: GPT, tokenizer: CompactTokenizer, card: dict) -> Path:
    """Write `path` (.safetensors: the weights and the tokenizer's kept ids, no pickle) and its card
    (`path` with .json: `card` plus the model config and the weights' sha256)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    tensors["tokenizer.kept_ids"] = torch.tensor(tokenizer.kept, dtype=torch.int64)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))
    card = {**card, "config": model.config.to_dict(), "file": path.name, "sha256": sha256_file(path)}
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(card, indent=1) + "\n"))
    return path


def load_model(path: str | os.PathLike, device: torch.device | str | None = None) -> Bundle:
    """Load a model written by `save_model`; the file must match the sha256 its card records."""
    from safetensors.torch import load_file

    path, card_path = Path(path), Path(path).with_suffix(".json")
    if not path.is_file() or not card_path.is_file():
        raise FileNotFoundError(f"no model at {path} (needs {path.name} and {card_path.name}): train it with "
                                "`gpt-lab pretrain`, or reinstall gpt_lab for the shipped course model")
    card = json.loads(card_path.read_text())
    digest = sha256_file(path)
    if digest != card.get("sha256"):
        raise RuntimeError(f"{path} does not match its card: sha256 {digest[:12]}... but the card says "
                           f"{str(card.get('sha256'))[:12]}...; the file is damaged or was replaced")
    tensors = load_file(str(path))
    kept = tensors.pop("tokenizer.kept_ids").tolist()
    model = GPT(GPTConfig(**card["config"]))
    model.load_state_dict(tensors, strict=False)  # lm_head.weight is tied to wte and not stored
    missing = set(model.state_dict()) - set(tensors) - {"lm_head.weight"}
    if missing:
        raise RuntimeError(f"{path} lacks weights {sorted(missing)[:5]}")
    history = History(**card.get("history", {}))
    return Bundle(model.to(get_device(str(device) if device else None)).eval(), CompactTokenizer(kept), history,
                  path, card)


def load_bundle(path: str | os.PathLike, device: torch.device | str | None = None) -> Bundle:
    """Rebuild model + tokenizer from a `.safetensors` model (`save_model`) or a training checkpoint
    (`.pt`, written by `gpt_lab.train.save_checkpoint` with the tokenizer in `extra`, as SFT does)."""
    if Path(path).suffix == ".safetensors":
        return load_model(path, device)
    device = get_device(str(device) if device else None)
    ckpt = load_checkpoint(path, map_location="cpu")
    model = GPT(GPTConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    extra = ckpt["extra"]
    if "kept_ids" not in extra:
        raise RuntimeError(f"checkpoint {path} has no tokenizer ('kept_ids' missing from extra)")
    return Bundle(model.to(device).eval(), CompactTokenizer(extra["kept_ids"]), History(**ckpt["history"]),
                  Path(path), extra.get("info", {}))


# ----------------------------------------------------------------------------- training a preset

def hardware(device: torch.device, cpu_bf16: bool = False) -> dict:
    """What a run ran on, for the card (`dtype`: the precision of its matrix products)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"device": str(device), "name": name, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "dtype": str(compute_dtype(device, cpu_bf16)).replace("torch.", ""), "torch": torch.__version__,
            "python": platform.python_version()}


def pretrain(corpus: str = "python", preset: str = "course", out_dir: str | os.PathLike | None = None,
             seed: int = 0, device: torch.device | str | None = None, progress: bool | None = None) -> Bundle:
    """Train `preset` on `corpus` and save it as `{out_dir}/{corpus}-{preset}.safetensors` + card.

    Resumable: a training checkpoint (`.train.pt` in the cache, with the optimizer) is written at
    every evaluation; running again continues from it, and once training is complete only re-exports.
    `out_dir` defaults to the cache. The card records the recipe, the tokens seen, the seed, the
    wall time, the hardware, val loss against the unigram baseline, and the repeat probe.
    """
    from gpt_lab.prompting import repeat_loss

    spec = get_preset(preset)
    cached = _cache_path(corpus, preset, seed)
    path = Path(out_dir or cached.parent) / cached.name
    ckpt = cached.with_suffix(".train.pt")  # in the cache, also when `out_dir` is the package's assets
    seed_everything(seed)
    device = get_device(str(device) if device else None)
    tokenizer = course_tokenizer(corpus)
    batches, train_ids, val_ids = corpus_batches(corpus, spec, tokenizer, seed, device)
    model = GPT(spec.model_config(tokenizer.n_vocab)).to(device)
    config = replace(spec.train, checkpoint_path=str(ckpt), progress=progress)
    history = train(model, batches, config, resume_from=ckpt if ckpt.exists() else None)
    model.eval()
    probes = {str(n): list(repeat_loss(model, tokenizer.n_vocab, n)) for n in PROBE_LENGTHS
              if 2 * n <= spec.block_size}
    card = {
        "name": path.stem, "corpus": corpus, "preset": preset, "seed": seed, "fast": fast_mode(),
        "recipe": {"batch_size": spec.batch_size, "block_size": spec.block_size, "train": asdict(spec.train),
                   "repeats": asdict(spec.repeats) if spec.repeats else None, "min_count": MIN_COUNT,
                   "lesson_tasks": list(LESSON_TASKS)},
        "steps": config.max_steps, "tokens_seen": history.tokens, "wall_seconds": round(history.seconds, 1),
        "hardware": hardware(device, spec.train.cpu_bf16), "vocab_size": tokenizer.n_vocab, "params": model.num_params(),
        "corpus_tokens": len(train_ids) + len(val_ids),
        "val_loss": evaluate(model, batches, config.eval_steps)["loss"],
        "unigram_val_loss": unigram_loss(train_ids, val_ids, tokenizer.n_vocab),
        "repeat_probe": probes,
        "history": {**history.to_dict(), **_binned(history)},
    }
    return load_model(save_model(path, model, tokenizer, card), device)


def _binned(history: History, bins: int = 200) -> dict:
    """Per-step train loss and lr averaged over at most `bins` bins (the card stays small)."""
    n = len(history.step)
    if n <= bins:
        return {}
    edges = np.linspace(0, n, bins + 1).astype(int)
    mean = lambda xs: [float(np.mean(xs[a:b])) for a, b in zip(edges[:-1], edges[1:])]  # noqa: E731
    return {"step": [int(history.step[b - 1]) for b in edges[1:]], "train_loss": mean(history.train_loss),
            "lr": mean(history.lr)}


def _cache_path(corpus: str, preset: str, seed: int) -> Path:
    """Where `pretrained` caches the model of (corpus, preset, seed): named after them and the recipe."""
    spec = get_preset(preset)
    name = f"{Path(load_corpus(corpus).name).name}-{preset}{'-fast' if fast_mode() else ''}"
    return cache_dir() / "models" / fingerprint(corpus, spec, seed, MIN_COUNT, LESSON_TASKS) / f"{name}.safetensors"


# the course model: made with `gpt-lab pretrain --preset course --out gpt_lab/assets`
COURSE_MODEL = ASSETS / "python-course.safetensors"


def pretrained(corpus: str = "python", preset: str = "course", device: torch.device | str | None = None,
               seed: int = 0) -> Bundle:
    """The model of `preset` trained on `corpus`.

    The course model (python, course, seed 0) ships with the package and is only loaded. Other
    combinations are trained on first use with `pretrain` and cached. Under GPT_LAB_FAST=1 every
    preset is the tiny one, trained in seconds.
    """
    get_preset(preset)  # a clear error for an unknown name
    if not fast_mode() and (corpus, preset, seed) == ("python", "course", 0):
        return load_model(COURSE_MODEL, device)
    path = _cache_path(corpus, preset, seed)
    return build_once(path, lambda: pretrain(corpus, preset, path.parent, seed, device),
                      lambda p: load_model(p, device))
