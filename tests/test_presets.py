"""Presets, the shipped course model and its card, and `gpt-lab pretrain`."""
import json
import shutil

import numpy as np
import pytest
import torch

from gpt_lab.cli import main
from gpt_lab.presets import (COURSE_MODEL, PRESETS, corpus_batches, course_tokenizer, fast_mode, get_preset,
                             load_bundle, load_model, pretrained, unigram_loss)
from gpt_lab.prompting import repeat_loss
from gpt_lab.train import evaluate


def test_tests_run_in_fast_mode_and_get_the_tiny_model():
    assert fast_mode() and get_preset("course") == PRESETS["tiny"]
    bundle = pretrained()  # under GPT_LAB_FAST=1 the tiny model, trained in seconds, not the shipped one
    assert bundle.model.config.n_layer == PRESETS["tiny"].n_layer and bundle.path != COURSE_MODEL


@pytest.fixture(scope="module")
def course():
    return load_model(COURSE_MODEL)


def test_shipped_course_model_is_safetensors_with_a_complete_card(course):
    card = course.info
    with open(COURSE_MODEL, "rb") as f:  # safetensors: 8-byte header length, then a JSON header (no pickle)
        header = f.read(9)
    assert header[8:9] == b"{"
    assert COURSE_MODEL.stat().st_size < 20e6
    for key in ("config", "recipe", "tokens_seen", "seed", "wall_seconds", "hardware", "val_loss", "unigram_val_loss",
                "repeat_probe", "sha256"):
        assert key in card, key
    assert card["preset"] == "course" and card["config"]["key_shift"] is True and not card["fast"]
    assert course.model.config.n_layer == PRESETS["course"].n_layer
    assert card["val_loss"] < card["unigram_val_loss"] - 1.5


def test_shipped_course_model_scores_what_its_card_says(course):
    """Val loss on 8 of the card's validation batches, and the repeat probe, within tolerance of the
    card (the corpus is this interpreter's standard library, which may differ a little)."""
    tok = course.tokenizer
    batches, _, _ = corpus_batches("python", PRESETS["course"], tok)
    torch.manual_seed(0)
    loss = evaluate(course.model, batches, steps=8)["loss"]
    assert loss == pytest.approx(course.info["val_loss"], abs=0.15)
    for length, (first, repeat) in course.info["repeat_probe"].items():
        measured = repeat_loss(course.model, tok.n_vocab, int(length))
        assert measured == pytest.approx((first, repeat), abs=0.05)
        assert measured[1] < measured[0] / 10, f"the course model does not copy {length} random tokens"


def test_a_damaged_model_file_is_refused(course, tmp_path):
    copy = tmp_path / COURSE_MODEL.name
    shutil.copy(COURSE_MODEL, copy)
    shutil.copy(COURSE_MODEL.with_suffix(".json"), copy.with_suffix(".json"))
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="does not match its card"):
        load_model(copy)
    with pytest.raises(FileNotFoundError, match="no model"):
        load_model(tmp_path / "missing.safetensors")


def test_pretrained_trains_once_then_loads_from_cache():
    first = pretrained("shakespeare", "course")
    info = first.info
    assert info["vocab_size"] == first.tokenizer.n_vocab == first.model.config.vocab_size
    assert info["val_loss"] < first.history.val_loss[0] + 1e-6 or len(first.history.val_loss) == 1
    second = pretrained("shakespeare", "course")
    assert second.path == first.path
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a.cpu(), b.cpu())
    text = "ROMEO: But soft, what light"
    assert second.tokenizer.decode(second.tokenizer.encode(text)) == text


def test_unigram_baseline_is_the_entropy_of_the_frequencies():
    train = np.array([0, 0, 1, 1, 1])
    val = np.array([0, 1])
    # add-one smoothing over the vocab {0, 1, 2}: p = 3/8, 4/8, 1/8
    assert unigram_loss(train, val, 3) == pytest.approx(-(np.log(3 / 8) + np.log(4 / 8)) / 2)


def test_course_tokenizer_keeps_frequent_ids_and_spells_the_rest():
    tok = course_tokenizer("shakespeare", min_count=1000)
    assert 256 < tok.n_vocab < 2000
    text = "Wherefore art thou Romeo? Zounds!"
    assert tok.decode(tok.encode(text)) == text


def test_unknown_preset_and_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_bundle(tmp_path / "missing.pt")


def test_cli_pretrain_resumes_and_writes_a_card(capsys, tmp_path):
    assert main(["pretrain", "--corpus", "shakespeare", "--preset", "course", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    path = out.split("model: ")[1].splitlines()[0]
    assert "unigram_val_loss" in out and "repeat_probe" in out
    card = json.loads((tmp_path / "shakespeare-course-fast.json").read_text())
    assert card["steps"] == PRESETS["tiny"].train.max_steps and card["tokens_seen"] > 0
    # a second run finds the finished training checkpoint and only exports again: same weights
    before = load_model(path).model.state_dict()
    assert main(["pretrain", "--corpus", "shakespeare", "--preset", "course", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    after = load_model(path).model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert main(["generate", "--checkpoint", path, "--prompt", "ROMEO:", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    assert main(["generate", "--checkpoint", str(path) + ".missing"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
