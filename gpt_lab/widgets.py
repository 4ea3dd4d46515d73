"""A decoding playground: every knob of the decoding chapter on one panel.

`decoding_playground(bundle)` is live in Jupyter (ipywidgets): change the prompt, the strategy,
temperature, top-k, top-p, the penalties, the beam width, the length or the seed, and it redraws the
next-token distribution after those rules together with the generated text. `playground_figure`
draws the same panels for a list of settings as one static matplotlib figure, for pages read
without a kernel (the HTML book).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from gpt_lab import viz
from gpt_lab.decoding import STRATEGIES, generate, next_token_logits, process_logits
from gpt_lab.presets import Bundle


@dataclass(frozen=True)
class DecodingSettings:
    """One choice of decoding rule; the fields mean what they mean in `gpt_lab.decoding.generate`.

    top_k / top_p None means no filter; penalties 1.0 mean none. Sampling settings are ignored by
    greedy decoding (except the penalties) and everything but `beam_width` by beam search.
    """

    strategy: str = "sample"
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    frequency_penalty: float = 1.0
    presence_penalty: float = 1.0
    beam_width: int = 2
    seed: int = 0

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")

    def generate_kwargs(self) -> dict:
        """The arguments of `generate` that this strategy uses."""
        if self.strategy == "beam":
            return {"strategy": "beam", "beam_width": self.beam_width}
        kwargs = {"strategy": self.strategy, "frequency_penalty": self.frequency_penalty,
                  "presence_penalty": self.presence_penalty}
        if self.strategy == "sample":
            kwargs.update(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, seed=self.seed)
        return kwargs

    def label(self) -> str:
        """A short title, e.g. 'sample, T=1.5, top-p 0.9, seed 0'."""
        if self.strategy == "beam":
            return f"beam search, k={self.beam_width}"
        parts = [self.strategy]
        if self.strategy == "sample":
            parts += [f"T={self.temperature:g}"] + ([f"top-k {self.top_k}"] if self.top_k else []) \
                + ([f"top-p {self.top_p:g}"] if self.top_p is not None and self.top_p < 1 else [])
        if self.frequency_penalty != 1 or self.presence_penalty != 1:
            parts.append(f"penalties {self.frequency_penalty:g}/{self.presence_penalty:g}")
        if self.strategy == "sample":
            parts.append(f"seed {self.seed}")
        return ", ".join(parts)


def next_token_distributions(model: torch.nn.Module, prompt_ids: Sequence[int],
                             settings: DecodingSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's next-token probabilities after `prompt_ids` and the distribution the first
    token is actually chosen from under `settings`, both (V,) on the CPU.

    Sampling: softmax of `process_logits` (penalties, temperature, top-k, top-p). Greedy: all mass
    on the argmax after the penalties. Beam search ranks by the model's own probabilities.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = next_token_logits(model, torch.tensor([list(prompt_ids)], device=device))[0].cpu()
    model.train(was_training)
    probs = logits.softmax(-1)
    if settings.strategy == "beam":
        return probs, probs
    if settings.strategy == "greedy":
        scores = process_logits(logits, list(prompt_ids), 1.0, None, None, settings.frequency_penalty,
                                settings.presence_penalty)
        return probs, torch.nn.functional.one_hot(scores.argmax(), len(probs)).float()
    scores = process_logits(logits, list(prompt_ids), settings.temperature, settings.top_k, settings.top_p,
                            settings.frequency_penalty, settings.presence_penalty)
    return probs, scores.softmax(-1)


def continue_text(bundle: Bundle, prompt: str, settings: DecodingSettings, max_new_tokens: int) -> str:
    """The text `settings` generates after `prompt`: at most `max_new_tokens` (fewer when the
    context is full), stopping at the end-of-text token."""
    tok = bundle.tokenizer
    ids = tok.encode(prompt)
    room = bundle.model.config.block_size - len(ids) + 1  # positions left in the context
    new = generate(bundle.model, ids, max(0, min(max_new_tokens, room)), eos_id=tok.eot_token,
                   **settings.generate_kwargs())
    return tok.decode(new[0])


def draw_panel(bundle: Bundle, prompt: str, settings: DecodingSettings, max_new_tokens: int, bars_ax: plt.Axes,
               text_ax: plt.Axes, top: int = 12, max_lines: int = 10) -> str:
    """Draw one playground panel: the next-token distribution before and after the rules on
    `bars_ax`, the prompt and its continuation on `text_ax`. Returns the continuation."""
    prompt_ids = bundle.tokenizer.encode(prompt)
    if not prompt_ids:
        raise ValueError("the prompt is empty: write at least one character")
    if len(prompt_ids) > bundle.model.config.block_size:
        raise ValueError(f"the prompt has {len(prompt_ids)} tokens, more than the model's context "
                         f"({bundle.model.config.block_size})")
    model_probs, used = next_token_distributions(bundle.model, prompt_ids, settings)
    viz.plot_top_tokens(model_probs, bundle.tokenizer, top=top, ax=bars_ax, adjusted=used, title=settings.label())
    text = continue_text(bundle, prompt, settings, max_new_tokens)
    lines = viz.visible(prompt + text).replace("↵", "↵\n").splitlines() or [""]  # runs of spaces show
    shown = "\n".join(line[:60] for line in lines[:max_lines]) + ("\n..." if len(lines) > max_lines else "")
    text_ax.axis("off")
    text_ax.text(0.0, 1.0, shown, family="monospace", fontsize=9, va="top", ha="left", parse_math=False,
                 transform=text_ax.transAxes)
    return text


def playground_figure(bundle: Bundle, prompt: str, settings: Sequence[DecodingSettings], max_new_tokens: int = 40,
                      top: int = 10) -> plt.Figure:
    """The playground's panel for several settings, one row each, as one static figure."""
    if not settings:
        raise ValueError("give at least one DecodingSettings")
    fig = plt.figure(figsize=(9, 2.9 * len(settings)), layout="constrained")
    grid = fig.add_gridspec(len(settings), 2, width_ratios=[1, 1.25])
    for row, s in enumerate(settings):
        draw_panel(bundle, prompt, s, max_new_tokens, fig.add_subplot(grid[row, 0]), fig.add_subplot(grid[row, 1]),
                   top=top)
    return fig


class DecodingPlayground:
    """The live playground (ipywidgets): `controls` (name -> widget), `output` (the drawing), and
    `text` (the last continuation). Displaying the object displays its widget."""

    def __init__(self, bundle: Bundle, prompt: str = "def ", max_new_tokens: int = 60, top: int = 12):
        import ipywidgets as w

        self.bundle, self.top, self.text = bundle, top, ""
        block = bundle.model.config.block_size
        style = {"description_width": "110px"}
        slider = dict(continuous_update=False, style=style)
        self.controls = {
            "prompt": w.Textarea(value=prompt, description="prompt", rows=3, continuous_update=False, style=style,
                                 layout=w.Layout(width="95%")),
            "strategy": w.ToggleButtons(options=list(STRATEGIES), value="sample", description="strategy", style=style),
            "temperature": w.FloatSlider(value=1.0, min=0.1, max=2.0, step=0.05, description="temperature", **slider),
            "top_k": w.IntSlider(value=0, min=0, max=100, description="top-k (0: off)", **slider),
            "top_p": w.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.05, description="top-p (1: off)", **slider),
            "frequency_penalty": w.FloatSlider(value=1.0, min=1.0, max=2.0, step=0.05, description="frequency",
                                               **slider),
            "presence_penalty": w.FloatSlider(value=1.0, min=1.0, max=2.0, step=0.05, description="presence",
                                              **slider),
            "beam_width": w.IntSlider(value=2, min=1, max=8, description="beam width", **slider),
            "max_new_tokens": w.IntSlider(value=min(max_new_tokens, block - 1), min=1, max=block - 1,
                                          description="new tokens", **slider),
            "seed": w.IntText(value=0, description="seed", style=style),
        }
        self.output = w.Output()
        for control in self.controls.values():
            control.observe(self.refresh, names="value")
        names = list(self.controls)
        self.widget = w.VBox([self.controls["prompt"], self.controls["strategy"],
                              w.HBox([w.VBox([self.controls[n] for n in names[2:6]]),
                                      w.VBox([self.controls[n] for n in names[6:]])]),
                              self.output])
        self.refresh()

    def settings(self) -> DecodingSettings:
        c = {name: control.value for name, control in self.controls.items()}
        return DecodingSettings(strategy=c["strategy"], temperature=c["temperature"], top_k=c["top_k"] or None,
                                top_p=c["top_p"] if c["top_p"] < 1 else None,
                                frequency_penalty=c["frequency_penalty"], presence_penalty=c["presence_penalty"],
                                beam_width=c["beam_width"], seed=c["seed"])

    def refresh(self, *_) -> None:
        """Redraw for the current controls; a bad input (e.g. a prompt too long) shows its error."""
        from IPython.display import clear_output, display

        settings = self.settings()
        sampling = settings.strategy == "sample"
        for name in ("temperature", "top_k", "top_p", "seed"):
            self.controls[name].disabled = not sampling
        for name in ("frequency_penalty", "presence_penalty"):
            self.controls[name].disabled = settings.strategy == "beam"
        self.controls["beam_width"].disabled = settings.strategy != "beam"
        prompt = self.controls["prompt"].value
        with self.output:
            clear_output(wait=True)
            fig = plt.figure(figsize=(11, 4.2))
            grid = fig.add_gridspec(1, 2, width_ratios=[1, 1.3], wspace=0.3)
            try:
                self.text = draw_panel(self.bundle, prompt, settings, self.controls["max_new_tokens"].value,
                                       fig.add_subplot(grid[0]), fig.add_subplot(grid[1]), top=self.top, max_lines=16)
                display(fig)
            except ValueError as exc:
                self.text = ""
                print(f"cannot generate: {exc}")
            plt.close(fig)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def decoding_playground(bundle: Bundle, prompt: str = "def ", max_new_tokens: int = 60, top: int = 12) -> DecodingPlayground:
    """A live decoding playground for `bundle` (e.g. `gpt_lab.presets.pretrained()`); display it in Jupyter."""
    return DecodingPlayground(bundle, prompt, max_new_tokens, top)
