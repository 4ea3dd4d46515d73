"""The decoding playground (gpt_lab.widgets): the distributions it draws, its static figure, its controls."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gpt_lab import viz  # noqa: E402
from gpt_lab.decoding import generate  # noqa: E402
from gpt_lab.model import GPT, GPTConfig  # noqa: E402
from gpt_lab.presets import Bundle  # noqa: E402
from gpt_lab.tokenizer import CompactTokenizer  # noqa: E402
from gpt_lab.train import History  # noqa: E402
from gpt_lab.widgets import (DecodingPlayground, DecodingSettings, next_token_distributions,  # noqa: E402
                             playground_figure)

PROMPT = "def add(a, b):\n    return"


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    torch.manual_seed(0)
    tok = CompactTokenizer(range(256, 400))
    model = GPT(GPTConfig(vocab_size=tok.n_vocab, block_size=32, n_layer=1, n_head=2, n_embd=16)).eval()
    return Bundle(model, tok, History(), Path("unsaved.pt"), {})


def model_logits(bundle: Bundle, text: str) -> torch.Tensor:
    with torch.no_grad():
        return bundle.model(torch.tensor([bundle.tokenizer.encode(text)]))[0][0, -1]


def test_settings_check_strategy_and_map_to_generate():
    with pytest.raises(ValueError, match="strategy"):
        DecodingSettings(strategy="nucleus")
    assert DecodingSettings(strategy="beam", beam_width=3, top_k=5).generate_kwargs() == {"strategy": "beam",
                                                                                       "beam_width": 3}
    greedy = DecodingSettings(strategy="greedy", temperature=2.0, frequency_penalty=1.3).generate_kwargs()
    assert greedy == {"strategy": "greedy", "frequency_penalty": 1.3, "presence_penalty": 1.0}
    sampled = DecodingSettings(top_p=0.9, seed=4).generate_kwargs()
    assert sampled["top_p"] == 0.9 and sampled["seed"] == 4 and sampled["strategy"] == "sample"
    assert DecodingSettings(top_p=0.9, seed=4).label() == "sample, T=1, top-p 0.9, seed 4"


def test_sampling_distribution_is_the_renormalised_top_k(bundle):
    logits = model_logits(bundle, PROMPT)
    model_probs, used = next_token_distributions(bundle.model, bundle.tokenizer.encode(PROMPT),
                                                 DecodingSettings(top_k=3, temperature=0.5))
    torch.testing.assert_close(model_probs, logits.softmax(-1))
    # independent reference: the 3 largest logits, divided by T, renormalised
    top = logits.topk(3)
    expected = torch.zeros_like(logits)
    expected[top.indices] = (top.values / 0.5).softmax(-1)
    torch.testing.assert_close(used, expected)


def test_greedy_puts_all_mass_on_the_argmax_and_beam_keeps_the_model(bundle):
    logits = model_logits(bundle, PROMPT)
    ids = bundle.tokenizer.encode(PROMPT)
    _, used = next_token_distributions(bundle.model, ids, DecodingSettings(strategy="greedy", temperature=3.0))
    assert used.sum() == 1 and int(used.argmax()) == int(logits.argmax())
    model_probs, used = next_token_distributions(bundle.model, ids, DecodingSettings(strategy="beam"))
    torch.testing.assert_close(used, model_probs)


def test_playground_figure_draws_every_setting(bundle):
    settings = [DecodingSettings(strategy="greedy"), DecodingSettings(top_p=0.5), DecodingSettings(strategy="beam")]
    fig = playground_figure(bundle, PROMPT, settings, max_new_tokens=5)
    assert len(fig.axes) == 2 * len(settings)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [s.label() for s in settings]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    shown_prompt = viz.visible(PROMPT).replace("↵", "↵\n")  # whitespace made visible
    assert all(t.startswith(shown_prompt) for t in texts) and len(texts) == len(settings)
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one"):
        playground_figure(bundle, PROMPT, [])


def test_playground_controls_drive_generation(bundle):
    pg = DecodingPlayground(bundle, prompt=PROMPT, max_new_tokens=6)
    pg.controls["strategy"].value = "greedy"
    assert pg.settings().strategy == "greedy"
    assert pg.controls["temperature"].disabled and not pg.controls["frequency_penalty"].disabled
    expected = generate(bundle.model, bundle.tokenizer.encode(PROMPT), 6, strategy="greedy",
                        eos_id=bundle.tokenizer.eot_token)[0]
    assert pg.text == bundle.tokenizer.decode(expected)
    pg.controls["strategy"].value = "sample"
    pg.controls["top_k"].value = 1          # top-k 1 is greedy, whatever the seed
    pg.controls["seed"].value = 7
    assert pg.settings().top_k == 1 and pg.settings().top_p is None
    assert pg.text == bundle.tokenizer.decode(expected)
    pg.controls["prompt"].value = "x " * 40  # longer than the context: an error message, no exception
    assert pg.text == ""
