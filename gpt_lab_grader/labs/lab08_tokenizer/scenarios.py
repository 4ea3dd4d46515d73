"""Scenarios of lab08-tokenizer: the student's BPE on GPT-2's ranks (shipped in gpt_lab/assets).

See `gpt_lab_grader.labs.scenarios` for the contract (`fn(impl, **kwargs)`, plain results, CPU, seconds).
Bytes and rank tables do not cross the sandbox's pipe: pieces travel as lists of byte values, a rank
table as a list of `(token byte values, rank)` pairs, and the GPT-2 table is loaded here, on both sides.

The reference implementations live here too (`reference_*`): the checks compare with them, and the
encode checks run the student's `encode` with the reference `bpe_merge` in its namespace
(`reference_parts`), so a wrong `bpe_merge` costs its own points once, not encode's again.
"""
from __future__ import annotations

import functools
import types
from collections import Counter
from importlib import resources

import regex
from tiktoken.load import load_tiktoken_bpe

from gpt_lab.tokenizer import GPT2_PATTERN
from gpt_lab_grader.labs.scenarios import reference_parts, scenario


@functools.lru_cache(maxsize=1)
def gpt2_ranks() -> dict[bytes, int]:
    """GPT-2's 50,000 merges + 256 bytes: token bytes -> rank (= token id), as gpt_lab.tokenizer loads them."""
    with resources.as_file(resources.files("gpt_lab") / "assets" / "gpt2.tiktoken") as path:
        return load_tiktoken_bpe(str(path))


gpt2_ranks()  # loaded before any student code runs (the sandbox imports this module first)


def ranks_from_list(pairs) -> dict[bytes, int]:
    return {bytes(token): int(rank) for token, rank in pairs}


def ranks_to_list(ranks: dict[bytes, int]) -> list[tuple[list[int], int]]:
    return [(list(token), rank) for token, rank in sorted(ranks.items(), key=lambda item: item[1])]


# ---------------------------------------------------------------------------------------------
# The references (what solutions/lab08-tokenizer writes, stated in the notebook).


def reference_bpe_merge(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Start from single bytes; merge the adjacent pair whose concatenation has the lowest rank until none has one."""
    parts = [bytes([b]) for b in piece]
    while len(parts) > 1:
        best, best_rank = None, None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = i, rank
        if best is None:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return [ranks[p] for p in parts]


def reference_encode(text: str, ranks: dict[bytes, int], pattern: str = GPT2_PATTERN) -> list[int]:
    return [i for piece in regex.findall(pattern, text) for i in reference_bpe_merge(piece.encode("utf-8"), ranks)]


def reference_decode(ids, ranks: dict[bytes, int]) -> str:
    inverse = {rank: token for token, rank in ranks.items()}
    return b"".join(inverse[i] for i in ids).decode("utf-8", errors="replace")


def reference_train_bpe(text: str, n_merges: int, pattern: str = GPT2_PATTERN) -> dict[bytes, int]:
    """256 byte tokens (rank = byte value), then merge the most frequent adjacent pair within pre-tokens,
    ties to the smallest pair `(left bytes, right bytes)`, `n_merges` times (fewer if no pair is left)."""
    ranks = {bytes([b]): b for b in range(256)}
    words = [([bytes([b]) for b in w], n)
             for w, n in Counter(p.encode("utf-8") for p in regex.findall(pattern, text)).items()]
    for _ in range(n_merges):
        counts: Counter = Counter()
        for parts, n in words:
            for pair in zip(parts, parts[1:]):
                counts[pair] += n
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merged = pair[0] + pair[1]
        ranks[merged] = len(ranks)
        for parts, _ in words:
            i = 0
            while i < len(parts) - 1:
                if parts[i] == pair[0] and parts[i + 1] == pair[1]:
                    parts[i:i + 2] = [merged]
                i += 1
    return ranks


REFERENCE = types.SimpleNamespace(bpe_merge=reference_bpe_merge, encode=reference_encode, decode=reference_decode,
                                  train_bpe=reference_train_bpe)


# ---------------------------------------------------------------------------------------------
# Scenarios


@scenario
def merge_pieces(impl, pieces, ranks=None) -> list:
    """Your bpe_merge on pre-tokens, with GPT-2's ranks (or the given rank table)."""
    table = gpt2_ranks() if ranks is None else ranks_from_list(ranks)
    return [impl.bpe_merge(bytes(piece), table) for piece in pieces]


@scenario
def encode_texts(impl, texts, ranks=None) -> list:
    """Your encode on texts, with GPT-2's ranks (or the given rank table) and the reference bpe_merge."""
    table = gpt2_ranks() if ranks is None else ranks_from_list(ranks)
    with reference_parts(impl, bpe_merge=reference_bpe_merge):
        return [impl.encode(text, table) for text in texts]


@scenario
def decode_ids(impl, ids_lists, ranks=None) -> list:
    """Your decode of token ids, with GPT-2's ranks (or the given rank table)."""
    table = gpt2_ranks() if ranks is None else ranks_from_list(ranks)
    return [impl.decode(list(ids), table) for ids in ids_lists]


@scenario
def learned_ranks(impl, text: str, n_merges: int):
    """Your train_bpe on a small corpus: its rank table as (token byte values, rank) pairs, by rank."""
    ranks = impl.train_bpe(text, n_merges)
    if not isinstance(ranks, dict) or not all(type(k) is bytes and type(v) is int for k, v in ranks.items()):
        raise TypeError("train_bpe must return a dict that maps bytes to int ranks")
    return ranks_to_list(ranks)
