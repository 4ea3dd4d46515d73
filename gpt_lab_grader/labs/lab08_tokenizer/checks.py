"""Hidden checks of lab 8 (tokenizer), against tiktoken on GPT-2's shipped ranks and the references of
this lab's scenarios.py.

Run by `gpt_lab_grader.checks.run_checks("lab08-tokenizer", notebook)`; the student's code is reached
only through the `student` fixture (gpt_lab_grader/labs/adapters.py). Points per graded function:
bpe_merge 4, encode 5, decode 1, train_bpe 4. The encode checks run with the reference bpe_merge.
"""
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gpt_lab.tokenizer import get_tokenizer
from gpt_lab_grader.labs.adapters import expect_tuple
from gpt_lab_grader.labs.lab08_tokenizer import scenarios
from gpt_lab_grader.labs.lab08_tokenizer.scenarios import REFERENCE, gpt2_ranks, ranks_to_list

LAB = "lab08-tokenizer"
LECTURE = "def add(a, b):\n    return a + b"
LECTURE_IDS = [4299, 751, 7, 64, 11, 275, 2599, 198, 220, 220, 220, 1441, 257, 1343, 275]
ENC = get_tokenizer()
FEW = settings(max_examples=20, deadline=None, derandomize=True, database=None,
               suppress_health_check=list(HealthCheck))


def short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def expect_ids(got, want, what: str) -> None:
    if type(got) is not list or not all(type(i) is int for i in got):
        raise AssertionError(f"{what} should be a list of Python ints, got {type(got).__name__}"
                             + (f" of {type(got[0]).__name__}" if isinstance(got, (list, tuple)) and got else ""))
    if got != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise AssertionError(f"{what} gives {len(got)} ids where GPT-2 gives {len(want)}; the first difference "
                             f"is at position {first}")


def expect_lists(got, n: int, what: str) -> list:
    return list(expect_tuple(got, n, what))


# --- bpe_merge: 4 points


@pytest.mark.points(1)
def test_bpe_merge_lecture_pieces(student):
    """bpe_merge of the lecture fragment's pre-tokens gives GPT-2's ids"""
    pieces = [p.encode() for p in scenarios.regex.findall(scenarios.GPT2_PATTERN, LECTURE)]
    got = expect_lists(student.scenario("merge_pieces", pieces=[list(p) for p in pieces]), len(pieces), "bpe_merge")
    for piece, ids in zip(pieces, got):
        expect_ids(ids, ENC._encode_single_piece(piece), f"bpe_merge({piece!r})")


WORDS = ["antidisestablishmentarianism", " unbelievable", " Narwhals", "🦄", " 你好世界", " naïve", "\n\n",
         "        ", " 12345678", "!!!?!", "x", " ____init____", "é", "ÿ"]


@pytest.mark.points(2)
def test_bpe_merge_words(student):
    """bpe_merge of long words, multi-byte characters and single bytes gives GPT-2's ids"""
    pieces = [w.encode("utf-8") for w in WORDS] + [bytes([0xf0, 0x9f]), bytes([7])]
    got = expect_lists(student.scenario("merge_pieces", pieces=[list(p) for p in pieces]), len(pieces), "bpe_merge")
    for piece, ids in zip(pieces, got):
        expect_ids(ids, ENC._encode_single_piece(piece), f"bpe_merge({piece!r})")


# a table where the lowest-ranked pair is not the leftmost mergeable one: "abcd" -> a, bc, d -> a, bcd
TOY = {bytes([b]): b for b in range(256)} | {b"bc": 256, b"ab": 257, b"bcd": 258, b"cd": 259, b"abcd": 260}


@pytest.mark.points(1)
def test_bpe_merge_takes_the_lowest_rank_first(student):
    """bpe_merge merges the pair of lowest rank first, wherever it is, not the leftmost mergeable pair"""
    pieces = [b"abcd", b"abc", b"cdcd", b"dcba", b""]
    got = expect_lists(student.scenario("merge_pieces", pieces=[list(p) for p in pieces], ranks=ranks_to_list(TOY)),
                       len(pieces), "bpe_merge")
    for piece, ids in zip(pieces, got):
        want = REFERENCE.bpe_merge(piece, TOY)
        if ids != want:
            raise AssertionError(f"bpe_merge({piece!r}) with a toy rank table gives {ids}; merge the adjacent pair "
                                 "whose concatenation has the lowest rank, then look again")


# --- encode (with the reference bpe_merge): 5 points


@pytest.mark.points(1)
def test_encode_lecture_fragment(student):
    """encode of the lecture's `def add(a, b):\\n    return a + b` gives the lecture's 15 ids"""
    (got,) = expect_lists(student.scenario("encode_texts", texts=[LECTURE]), 1, "encode")
    expect_ids(got, LECTURE_IDS, "encode of the lecture fragment")


WHITESPACE = ["   ", "a  b", "a   b   ", "\n\n\n", "x\n    y", "x \n \n  y", "\t\tif x:\n\t\t\treturn",
              "end   \n", " ", "  \t \n\r\n  z", "a\u3000\u3000b", "\xa0\xa0x", "line\r\n\r\n    next"]


@pytest.mark.points(2)
def test_encode_whitespace_runs(student):
    """encode of runs of spaces, tabs and newlines matches tiktoken (`\\s+(?!\\S)` leaves the last space to the word)"""
    got = expect_lists(student.scenario("encode_texts", texts=WHITESPACE), len(WHITESPACE), "encode")
    for text, ids in zip(WHITESPACE, got):
        expect_ids(ids, ENC.encode_ordinary(text), f"encode({short(text)})")


@pytest.mark.points(1)
@FEW
@given(texts=st.lists(st.text(max_size=50), min_size=1, max_size=6))
def test_encode_arbitrary_unicode(student, texts):
    """encode of arbitrary Unicode text matches tiktoken on GPT-2's ranks"""
    got = expect_lists(student.scenario("encode_texts", texts=texts), len(texts), "encode")
    for text, ids in zip(texts, got):
        expect_ids(ids, ENC.encode_ordinary(text), f"encode({short(text)})")


@pytest.mark.points(1)
def test_encode_with_other_ranks(student):
    """encode works with any rank table (here one learned on a small text), not only GPT-2's"""
    ranks = REFERENCE.train_bpe(CORPUS_A, 40)
    texts = ["def f(x):\n    return x", "the cat sat on the mat", "  indented  twice"]
    got = expect_lists(student.scenario("encode_texts", texts=texts, ranks=ranks_to_list(ranks)), len(texts), "encode")
    for text, ids in zip(texts, got):
        if ids != REFERENCE.encode(text, ranks):
            raise AssertionError(f"encode({short(text)}) with a learned rank table gives other ids than BPE with "
                                 "those ranks (the ranks are an argument: do not use GPT-2's inside encode)")


# --- decode: 1 point


@pytest.mark.points(1)
def test_decode(student):
    """decode maps ids back to the text (exact round trip) and replaces broken UTF-8 like tiktoken does"""
    texts = [LECTURE, "🦄 naïve 你好", "  \n\t x"]
    ids = [ENC.encode_ordinary(t) for t in texts] + [[ENC._encode_single_piece(" 🦄".encode())[0]], [31, 8582, 99]]
    got = expect_lists(student.scenario("decode_ids", ids_lists=ids), len(ids), "decode")
    for row, text in zip(ids, got):
        want = ENC.decode(row)
        if type(text) is not str or text != want:
            raise AssertionError(f"decode of {len(row)} ids should give a str of {len(want)} characters equal to "
                                 "the encoded text (invalid UTF-8 replaced by '\\ufffd')")


# --- train_bpe: 4 points

CORPUS_A = ("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"
            "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\n"
            "    def norm(self):\n        return (self.x ** 2 + self.y ** 2) ** 0.5\n") * 3
CORPUS_B = "the cat sat on the mat. the dog sat on the log. a cat and a dog, and then the cat sat again!\n" * 4


def expect_ranks(got, want: dict, what: str) -> None:
    want = ranks_to_list(want)
    if type(got) is not list:
        raise AssertionError(f"{what}: train_bpe should return a dict of bytes -> rank")
    got = [(list(token), rank) for token, rank in got]
    if len(got) != len(want):
        raise AssertionError(f"{what}: the rank table has {len(got)} entries, expected {len(want)} "
                             "(256 byte tokens + one per merge)")
    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    if first is not None:
        raise AssertionError(f"{what}: rank {first} differs from the reference (rank {first} is "
                             f"{'a single byte' if first < 256 else f'merge {first - 256 + 1}'})")


@pytest.mark.points(1)
def test_train_bpe_starts_from_the_bytes(student):
    """train_bpe with 0 merges gives the 256 single bytes, ranked by byte value"""
    expect_ranks(student.scenario("learned_ranks", text="abc", n_merges=0), REFERENCE.train_bpe("abc", 0),
                 "train_bpe(..., 0)")


@pytest.mark.points(1)
@pytest.mark.parametrize("corpus, n_merges", [(CORPUS_A, 60), (CORPUS_B, 30)], ids=["code", "prose"])
def test_train_bpe_learns_the_reference_merges(student, corpus, n_merges):
    """train_bpe learns the most frequent pair within pre-tokens, ties to the smallest pair, in order"""
    expect_ranks(student.scenario("learned_ranks", text=corpus, n_merges=n_merges),
                 REFERENCE.train_bpe(corpus, n_merges), f"train_bpe on a {len(corpus)}-character corpus")


@pytest.mark.points(1)
def test_train_bpe_stops_when_nothing_is_left(student):
    """train_bpe stops early when every pre-token is a single token"""
    expect_ranks(student.scenario("learned_ranks", text="ab ab ab", n_merges=50), REFERENCE.train_bpe("ab ab ab", 50),
                 "train_bpe('ab ab ab', 50)")
