import pytest
import torch

from gpt_lab.cli import main
from gpt_lab.presets import PRESETS, fast_mode, get_preset, load_bundle, pretrained, unigram_loss


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

    train = np.array([1, 1, 2, 2])
    val = np.array([1, 2])
    # add-one smoothing over the vocab {1, 2}: p = 3/6 each
    assert unigram_loss(train, val, np.array([1, 2])) == pytest.approx(np.log(2))


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
