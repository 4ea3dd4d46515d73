"""Files the course computes once and keeps: where they live, how they are named, how they are written.

Everything expensive (token ids of a corpus, the stdlib function table, trained and fine-tuned
models) is built once and reused. Three rules keep that safe with several processes (the book
build, a lab, the tests) running at once: a name that changes with every input that matters
(`fingerprint`), a file that is either complete or absent (`atomic_write`), and one builder at a
time (`build_once`).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def cache_dir() -> Path:
    """Where gpt_lab keeps token caches and checkpoints: $GPT_LAB_CACHE or ~/.cache/gpt_lab."""
    root = os.environ.get("GPT_LAB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpt_lab"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(*parts, length: int = 12) -> str:
    """A short stable hash of JSON-able `parts` (dataclasses and paths are written with `str`)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:length]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it to `path`.

    The rename is atomic, so a crash or a second process never sees half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # readable by everyone, like any file an installer writes
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def build_once(path: str | os.PathLike, build: Callable[[], T], load: Callable[[Path], T], rebuild: bool = False) -> T:
    """`load(path)` if `path` exists, else `build()` (which writes `path`), under a file lock.

    Two processes asking for the same file at once build it once: the second waits, then loads.
    """
    from filelock import FileLock

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if path.exists() and not rebuild:
            return load(path)
        return build()
