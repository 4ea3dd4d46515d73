"""GPT-2's byte-pair encoding, loaded from a file shipped inside the package (never downloaded).

`get_tokenizer()` gives the exact GPT-2 tokenizer as a `tiktoken.Encoding`. `CompactTokenizer`
wraps it with a smaller, dense vocabulary (the ids a corpus actually uses plus the 256 byte
tokens), which makes the course model's output layer several times cheaper while still encoding
any text: a token outside the kept set is spelled with byte tokens instead.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from importlib import resources

import numpy as np
import tiktoken
from tiktoken.load import load_tiktoken_bpe

ENDOFTEXT = "<|endoftext|>"
EOT_ID = 50256
# GPT-2's pre-tokenizer split pattern (contractions, letters, digits, other, whitespace).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> tiktoken.Encoding:
    """GPT-2's BPE (50,257 ids, `<|endoftext|>` = 50256) from `gpt_lab/assets/gpt2.tiktoken`."""
    path = resources.files("gpt_lab") / "assets" / "gpt2.tiktoken"
    with resources.as_file(path) as file:
        ranks = load_tiktoken_bpe(str(file))
    return tiktoken.Encoding(
        name="gpt2-local",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: EOT_ID},
        explicit_n_vocab=50257,
    )


class CompactTokenizer:
    """GPT-2 BPE restricted to a dense vocabulary of kept GPT-2 ids.

    Dense id i stands for GPT-2 id `kept[i]`. The 256 single-byte tokens (GPT-2 ids 0..255) and
    `<|endoftext|>` are always kept, so any text still encodes: a GPT-2 token outside the kept
    set is replaced by the byte tokens that spell it. Decoding maps back and is exact.
    Has the same `encode`/`decode`/`eot_token`/`n_vocab` surface as `tiktoken.Encoding`.
    """

    def __init__(self, kept_ids: Iterable[int]):
        self.base = get_tokenizer()
        kept = sorted(set(int(i) for i in kept_ids) | set(range(256)) | {EOT_ID})
        if kept[-1] >= self.base.n_vocab or kept[0] < 0:
            raise ValueError(f"kept ids must lie in [0, {self.base.n_vocab}), got {kept[0]}..{kept[-1]}")
        self.kept: list[int] = kept
        self.to_dense: dict[int, int] = {g: d for d, g in enumerate(kept)}
        # GPT-2's byte tokens are ranks 0..255 but not in byte order: map each byte to its dense id.
        byte_dense = {self.base.decode_single_token_bytes(i)[0]: self.to_dense[i] for i in range(256)}
        # For every GPT-2 id, the dense ids that spell it: itself if kept, else its bytes.
        spellings = [[self.to_dense[g]] if g in self.to_dense else
                     [byte_dense[b] for b in self.base.decode_single_token_bytes(g)]
                     for g in range(self.base.n_vocab)]
        self._spell_len = np.array([len(s) for s in spellings], dtype=np.int64)
        self._spell_start = np.concatenate([[0], np.cumsum(self._spell_len)[:-1]])
        self._spell_flat = np.array([d for s in spellings for d in s], dtype=np.int64)

    @property
    def n_vocab(self) -> int:
        return len(self.kept)

    @property
    def eot_token(self) -> int:
        return self.to_dense[EOT_ID]

    def from_gpt2_array(self, gpt2_ids: np.ndarray) -> np.ndarray:
        """GPT-2 ids -> dense ids (int64 array), unknown tokens spelled with byte tokens; vectorised."""
        ids = np.asarray(gpt2_ids, dtype=np.int64)
        lengths = self._spell_len[ids]
        ends = np.cumsum(lengths)
        within = np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - lengths, lengths)
        return self._spell_flat[np.repeat(self._spell_start[ids], lengths) + within]

    def from_gpt2(self, gpt2_ids: Sequence[int]) -> list[int]:
        """GPT-2 ids -> dense ids, spelling unknown tokens with byte tokens."""
        return self.from_gpt2_array(np.asarray(gpt2_ids, dtype=np.int64)).tolist()

    def to_gpt2(self, dense_ids: Sequence[int]) -> list[int]:
        return [self.kept[int(d)] for d in dense_ids]

    def encode(self, text: str, allowed_special: str | set[str] = "all") -> list[int]:
        return self.from_gpt2(self.base.encode(text, allowed_special=allowed_special))

    def decode(self, ids: Sequence[int]) -> str:
        return self.base.decode(self.to_gpt2(ids))

    def decode_single_token_bytes(self, token: int) -> bytes:
        return self.base.decode_single_token_bytes(self.kept[int(token)])
