"""Hidden checks of lab 2 (masking), against gpt_lab's references.

Run by `gpt_lab_grader.checks.run_checks("lab02-masking", notebook)`; the student's code is
reached only through the `student` fixture (gpt_lab_grader/labs/adapters.py).
"""
import pytest
import torch

from gpt_lab_grader.labs.adapters import assert_tensor, expect_tuple, expect_value_error, namespace
from gpt_lab.attention import causal_mask, combined_mask, padding_mask
from gpt_lab.data import collate
from gpt_lab_grader.labs.lab02_masking import scenarios

LAB = "lab02-masking"
REFERENCE = namespace(causal_mask=causal_mask, padding_mask=padding_mask, combined_mask=combined_mask,
                      collate=collate)



# --- causal mask


@pytest.mark.points(1)
@pytest.mark.parametrize("T", [1, 5, 16])
def test_causal_mask_square(student, T):
    """causal_mask(T) is the (T, T) bool mask, True strictly above the diagonal"""
    assert_tensor(student.causal_mask(T), causal_mask(T), f"causal_mask({T})")


@pytest.mark.points(1)
@pytest.mark.parametrize("T, T_k", [(1, 7), (3, 8), (6, 6)])
def test_causal_mask_with_cache(student, T, T_k):
    """causal_mask(T, T_k) for T new queries after T_k - T cached positions (the KV-cache case)"""
    assert_tensor(student.causal_mask(T, T_k), causal_mask(T, T_k), f"causal_mask({T}, {T_k})")


@pytest.mark.points(1)
def test_causal_mask_rejects_bad_sizes(student):
    """causal_mask raises ValueError unless 0 < T <= T_k"""
    expect_value_error(lambda: student.causal_mask(4, 2), what="causal_mask(4, 2)")
    expect_value_error(lambda: student.causal_mask(0), what="causal_mask(0)")


# --- padding mask


@pytest.mark.points(1)
@pytest.mark.parametrize("attention_mask", [
    [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]],
    [[0, 1]],
    [[1], [0], [1]],
], ids=["mixed", "one-row", "length-1"])
def test_padding_mask(student, attention_mask):
    """padding_mask turns a (B, T_k) 1/0 mask into a (B, 1, 1, T_k) bool mask, True on padding"""
    am = torch.tensor(attention_mask)
    assert_tensor(student.padding_mask(am), padding_mask(am), "padding_mask")


@pytest.mark.points(1)
def test_padding_mask_rejects_1d(student):
    """padding_mask raises ValueError for an attention mask that is not 2-D"""
    expect_value_error(lambda: student.padding_mask(torch.tensor([1, 1, 0])), what="padding_mask of a (3,) tensor")


# --- combined mask


@pytest.mark.points(1)
@pytest.mark.parametrize("attention_mask, T, T_k", [
    ([[1, 1, 1, 1], [0, 0, 1, 1], [1, 1, 1, 0]], 4, None),
    ([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], 2, 6),
    ([[0], [1]], 1, None),
], ids=["square", "cache", "length-1"])
def test_combined_mask(student, attention_mask, T, T_k):
    """combined_mask(attention_mask, T, T_k) is causal OR padding, (B, 1, T, T_k)"""
    am = torch.tensor(attention_mask)
    assert_tensor(student.combined_mask(am, T, T_k), combined_mask(am, T, T_k), f"combined_mask(..., {T}, {T_k})")


@pytest.mark.points(1)
def test_combined_mask_without_attention_mask(student):
    """combined_mask(None, T, T_k) is the causal (T, T_k) mask"""
    assert_tensor(student.combined_mask(None, 3, 5), causal_mask(3, 5), "combined_mask(None, 3, 5)")


# --- collate

SEQS = [[11, 12, 13], [], [21, 22, 23, 24, 25, 26], [31]]


@pytest.mark.points(1)
@pytest.mark.parametrize("kwargs", [
    dict(pad_id=0),
    dict(pad_id=99, side="left"),
    dict(pad_id=0, max_length=4),
    dict(pad_id=-1, side="left", max_length=2, truncation_side="left"),
    dict(pad_id=5, max_length=50),
], ids=["right", "left", "truncate-right", "left-truncate-left", "max-length-above-longest"])
def test_collate(student, kwargs):
    """collate pads/truncates token lists into (input_ids, attention_mask), both (B, T) torch.long"""
    got = expect_tuple(student.collate(SEQS, **kwargs), 2, "collate")
    want = collate(SEQS, **kwargs)
    assert_tensor(got[0], want[0], "input_ids")
    assert_tensor(got[1], want[1], "attention_mask")


@pytest.mark.points(1)
def test_collate_single_sequence(student):
    """collate of a single sequence of length 1"""
    got = expect_tuple(student.collate([[7]], 0), 2, "collate")
    want = collate([[7]], 0)
    assert_tensor(got[0], want[0], "input_ids")
    assert_tensor(got[1], want[1], "attention_mask")


@pytest.mark.points(1)
def test_collate_rejects_bad_arguments(student):
    """collate raises ValueError for no sequences, an unknown side, or max_length <= 0"""
    expect_value_error(lambda: student.collate([], 0), what="collate([], 0)")
    expect_value_error(lambda: student.collate([[1]], 0, side="middle"), what="collate(..., side='middle')")
    expect_value_error(lambda: student.collate([[1]], 0, truncation_side="up"), what="collate(..., truncation_side='up')")
    expect_value_error(lambda: student.collate([[1]], 0, max_length=0), what="collate(..., max_length=0)")


# --- inside the GPT


@pytest.mark.points(2)
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_inside_gpt(student, side):
    """a batch padded by your collate and masked by your masks gives the GPT's logits of each sequence alone"""
    sequences = [[3, 1, 4, 1, 5, 9, 2], [6], [5, 3, 5, 8], [9, 7, 9, 3, 2, 3]]
    ids, am, logits = expect_tuple(student.scenario("padded_batch_logits", sequences=sequences, side=side, seed=5),
                                   3, "the padded-batch scenario")
    want_ids, want_am, want_logits = scenarios.padded_batch_logits(REFERENCE, sequences=sequences, side=side, seed=5)
    assert_tensor(ids, want_ids, "input_ids")
    assert_tensor(am, want_am, "attention_mask")
    real = want_am.bool()  # padding positions' logits are not meaningful
    assert_tensor(logits, want_logits, "the GPT's logits at real tokens", atol=1e-5, rtol=1e-5, where=real)


@pytest.mark.points(1)
def test_causal_mask_inside_gpt(student):
    """a GPT building its masks with your causal_mask and combined_mask gives the right logits"""
    idx = torch.randint(61, (2, 9), generator=torch.Generator().manual_seed(6))
    got = student.scenario("causal_logits", idx=idx, seed=6)
    want = scenarios.causal_logits(REFERENCE, idx=idx, seed=6)
    assert_tensor(got, want, "the GPT's logits", atol=1e-5, rtol=1e-5)
