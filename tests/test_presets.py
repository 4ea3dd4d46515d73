import pytest
import torch

from gpt_lab.cli import main
from gpt_lab.presets import PRESETS, course_tokenizer, fast_mode, get_preset, load_bundle, pretrained, unigram_loss


def test_tests_run_in_fast_mode():
    assert fast_mode() and get_preset("small") == PRESETS["tiny"]


def test_pretrained_trains_once_then_loads_from_cache():
    first = pretrained("shakespeare", "small")
    info = first.info
    assert info["vocab_size"] == first.tokenizer.n_vocab == first.model.config.vocab_size
    assert info["val_loss"] < first.history.val_loss[0] + 1e-6 or len(first.history.val_loss) == 1
    second = pretrained("shakespeare", "small")
    assert second.path == first.path
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a.cpu(), b.cpu())
    text = "ROMEO: But soft, what light"
    assert second.tokenizer.decode(second.tokenizer.encode(text)) == text


def test_unigram_baseline_is_the_entropy_of_the_frequencies():
    import numpy as np

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


def test_cli_pretrain_and_generate(capsys):
    assert main(["pretrain", "--corpus", "shakespeare", "--preset", "small"]) == 0
    out = capsys.readouterr().out
    path = out.split("checkpoint: ")[1].splitlines()[0]
    assert "unigram_val_loss" in out and "val_loss" in out
    assert main(["generate", "--checkpoint", path, "--prompt", "ROMEO:", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    assert main(["generate", "--checkpoint", str(path) + ".missing"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
