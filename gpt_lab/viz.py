"""Figures and tables for the book and the labs: token tables, attention heat maps, loss curves.

Every function draws from numbers you pass in (a real run's history, a model's attention
weights), returns the matplotlib Figure or Axes it drew on, and never calls `plt.show()`:
a notebook displays the figure by itself.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure


def visible(text: str | bytes) -> str:
    """Text (or one token's bytes) with its whitespace made visible: ' ' -> '␣', '\\n' -> '↵', '\\t' -> '⇥'.

    Bytes that are not valid UTF-8 on their own (a piece of a multi-byte character) show as
    their hex value, e.g. '<0xf0>'.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return "".join(f"<0x{b:02x}>" for b in text)
    return text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def token_labels(tokenizer, ids: Sequence[int]) -> list[str]:
    """Readable label of each token id (tiktoken.Encoding or CompactTokenizer)."""
    return [visible(tokenizer.decode_single_token_bytes(int(i))) for i in ids]


def md_code(text: str) -> str:
    """`text` as inline Markdown code, fenced with enough backticks for any it contains."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table; cells are formatted with str() (floats with 4 significant digits), '|' escaped."""
    def cell(value) -> str:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def show_table(header: Sequence[str], rows: Sequence[Sequence]):
    """Display a table in a notebook (rendered as Markdown, so the book shows a real table)."""
    from IPython.display import Markdown, display

    display(Markdown(markdown_table(header, rows)))


def heatmap(matrix: torch.Tensor | np.ndarray, row_labels: Sequence[str] | None = None,
            col_labels: Sequence[str] | None = None, ax: Axes | None = None, title: str | None = None,
            cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
            annotate: bool = False, colorbar: bool = True) -> Axes:
    """Draw a 2-D matrix (rows x cols) with optional tick labels and cell values."""
    m = matrix.detach().float().cpu().numpy() if isinstance(matrix, torch.Tensor) else np.asarray(matrix, float)
    if m.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D matrix, got shape {m.shape}")
    ax = ax or plt.subplots(figsize=(0.45 * m.shape[1] + 2, 0.45 * m.shape[0] + 1))[1]
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    for labels, set_ticks, set_labels, n in ((row_labels, ax.set_yticks, ax.set_yticklabels, m.shape[0]),
                                             (col_labels, ax.set_xticks, ax.set_xticklabels, m.shape[1])):
        if labels is not None:
            if len(labels) != n:
                raise ValueError(f"{len(labels)} labels for {n} rows/columns")
            set_ticks(range(n))
            set_labels(labels, fontsize=8)
    if col_labels is not None:
        plt.setp(ax.get_xticklabels(), rotation=90)
    if annotate:
        mid = (np.nanmax(m) + np.nanmin(m)) / 2
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, f"{m[i, j]:.2g}", ha="center", va="center", fontsize=7,
                        color="black" if m[i, j] > mid else "white")
    if title:
        ax.set_title(title, fontsize=10)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_attention(weights: torch.Tensor, labels: Sequence[str], ax: Axes | None = None,
                   title: str | None = None, colorbar: bool = True) -> Axes:
    """One attention matrix (T_q, T_k): row i is what query i attends to (rows sum to 1)."""
    if weights.dim() != 2:
        raise ValueError(f"plot_attention needs (T_q, T_k) weights, got shape {tuple(weights.shape)}")
    ax = heatmap(weights, labels, labels, ax=ax, title=title, vmin=0.0, vmax=1.0, colorbar=colorbar)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    return ax


def plot_attention_heads(weights: torch.Tensor, labels: Sequence[str], title: str | None = None,
                         ncols: int = 4) -> Figure:
    """All heads of one layer, `weights` (n_head, T, T), side by side on a shared 0..1 scale."""
    if weights.dim() != 3:
        raise ValueError(f"plot_attention_heads needs (n_head, T, T) weights, got shape {tuple(weights.shape)}")
    n_head, T, _ = weights.shape
    ncols = min(ncols, n_head)
    nrows = -(-n_head // ncols)
    size = 0.22 * T + 1.5
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False,
                             constrained_layout=True)
    for h, ax in enumerate(axes.flat):
        if h >= n_head:
            ax.axis("off")
            continue
        plot_attention(weights[h], labels, ax=ax, title=f"head {h}", colorbar=False)
        if h % ncols:
            ax.set_ylabel("")
            ax.set_yticklabels([])
    fig.colorbar(axes.flat[0].images[0], ax=axes, shrink=0.6, label="attention weight")
    if title:
        fig.suptitle(title)
    return fig


def softmax_saturation(d_values: Sequence[int], n_keys: int = 16, trials: int = 256,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """How the softmax of dot products behaves as the key dimension d grows, scaled or not.

    For each d, draws `trials` queries and `n_keys` keys with independent N(0, 1) entries, so
    a score q.k has variance d. Returns, per d, for unscaled scores q.k and scaled q.k/sqrt(d):
    the mean largest weight (`max_*`, 1 = one-hot) and the mean Frobenius norm of the softmax's
    Jacobian diag(p) - p p^T (`grad_*`, the size of the gradient that flows back to the scores).
    """
    g = torch.Generator().manual_seed(seed)
    out = {key: [] for key in ("max_unscaled", "max_scaled", "grad_unscaled", "grad_scaled")}
    for d in d_values:
        q = torch.randn(trials, 1, d, generator=g, dtype=torch.float64)
        k = torch.randn(trials, n_keys, d, generator=g, dtype=torch.float64)
        scores = (q @ k.transpose(1, 2)).squeeze(1)  # (trials, n_keys)
        for name, s in (("unscaled", scores), ("scaled", scores / d ** 0.5)):
            p = torch.softmax(s, dim=-1)
            jac = torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)
            out[f"max_{name}"].append(p.max(-1).values.mean().item())
            out[f"grad_{name}"].append(torch.linalg.matrix_norm(jac).mean().item())
    return {"d": np.asarray(d_values), **{k: np.asarray(v) for k, v in out.items()}}


def plot_softmax_saturation(d_values: Sequence[int] = (2, 8, 32, 128, 512, 2048), n_keys: int = 16,
                            trials: int = 256, seed: int = 0) -> Figure:
    """Left: mean largest attention weight vs d; right: mean softmax-Jacobian norm vs d."""
    stats = softmax_saturation(d_values, n_keys, trials, seed)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for name, style in (("unscaled", "o-"), ("scaled", "s-")):
        label = r"$q\cdot k$" if name == "unscaled" else r"$q\cdot k/\sqrt{d_k}$"
        left.plot(stats["d"], stats[f"max_{name}"], style, label=label)
        right.plot(stats["d"], stats[f"grad_{name}"], style, label=label)
    left.axhline(1 / n_keys, color="gray", ls=":", lw=1, label=f"uniform (1/{n_keys})")
    left.set(xscale="log", ylim=(0, 1.05), xlabel=r"key dimension $d_k$", ylabel="mean largest weight",
             title="softmax saturates without scaling")
    right.set(xscale="log", xlabel=r"key dimension $d_k$", ylabel=r"mean $\|\partial p/\partial s\|_F$",
              title="and its gradient vanishes")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    return fig


def plot_loss_curves(history, baseline: float | None = None, baseline_label: str = "unigram baseline",
                     ax: Axes | None = None, smooth: int = 10) -> Axes:
    """Train loss per step (moving average over `smooth` steps), validation loss per evaluation,
    and an optional horizontal baseline. `history` is a `gpt_lab.train.History`."""
    ax = ax or plt.subplots(figsize=(7, 3.6))[1]
    steps, loss = np.asarray(history.step), np.asarray(history.train_loss, dtype=float)
    ax.plot(steps, loss, color="C0", alpha=0.25, lw=0.8)
    if smooth > 1 and len(loss) >= smooth:
        kernel = np.ones(smooth) / smooth
        ax.plot(steps[smooth - 1:], np.convolve(loss, kernel, mode="valid"), color="C0",
                label=f"train (mean of {smooth} steps)")
    else:
        ax.lines[-1].set_alpha(1.0)
        ax.lines[-1].set_label("train")
    if history.val_step:
        ax.plot(history.val_step, history.val_loss, "o-", color="C1", label="validation")
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", lw=1, label=baseline_label)
    ax.set(xlabel="optimizer step", ylabel="loss (nats / token)")
    ax.legend(fontsize=8)
    return ax


def plot_token_losses(labels: Sequence[str], losses: Sequence[float] | torch.Tensor, ax: Axes | None = None,
                      title: str | None = None) -> Axes:
    """Bar chart of -log p(next token) at each position; `labels[i]` names the target token."""
    values = losses.detach().float().cpu().numpy() if isinstance(losses, torch.Tensor) else np.asarray(losses, float)
    if len(labels) != len(values):
        raise ValueError(f"{len(labels)} labels for {len(values)} losses")
    ax = ax or plt.subplots(figsize=(0.45 * len(values) + 2, 3))[1]
    ax.bar(range(len(values)), values, color="C2")
    ax.axhline(values.mean(), color="gray", ls="--", lw=1, label=f"mean {values.mean():.2f}")
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(labels, rotation=90, fontsize=8)
    ax.set(xlabel="target token", ylabel=r"$-\log p$ (nats)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return ax


# ----------------------------------------------------------------------------- decoding and the KV cache (book part 2)

def plot_top_tokens(probs: torch.Tensor, tokenizer, top: int = 12, ax: Axes | None = None,
                    adjusted: torch.Tensor | None = None, title: str | None = None) -> Axes:
    """Horizontal bars of the `top` most probable tokens of `probs` (V,), labelled with their text.

    `adjusted` (V,), optional: the distribution after a decoding rule (temperature, top-k, ...),
    drawn under the model's bars; tokens the rule removed (probability 0) get grey labels.
    """
    ax = ax or plt.subplots(figsize=(5, 0.3 * top + 1))[1]
    probs = probs.detach().float().cpu().numpy()
    order = probs.argsort()[::-1][:top].tolist()
    labels = [label.replace("$", r"\$") for label in token_labels(tokenizer, order)]
    y = np.arange(len(order))
    if adjusted is None:
        ax.barh(y, probs[order], color="C0")
    else:
        adjusted = adjusted.detach().float().cpu().numpy()
        ax.barh(y - 0.2, probs[order], height=0.4, color="C0", alpha=0.5, label="model")
        ax.barh(y + 0.2, adjusted[order], height=0.4, color="C1", label="after the rule")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_yticks(y)
    ax.set_yticklabels(labels, family="monospace", fontsize=9)
    if adjusted is not None:
        for label, i in zip(ax.get_yticklabels(), order):
            if adjusted[i] == 0:
                label.set_color("0.6")
    ax.invert_yaxis()
    ax.set_xlabel("probability")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_sorted_distribution(dists: dict[str, torch.Tensor], ax: Axes | None = None, top: int | None = None) -> Axes:
    """Each next-token distribution (V,) sorted by decreasing probability against its rank, on
    log-log axes (the first `top` ranks, or all): how many tokens 'fit' each context."""
    ax = ax or plt.subplots(figsize=(6, 3.6))[1]
    for label, probs in dists.items():
        sorted_probs = probs.detach().float().cpu().sort(descending=True).values[:top]
        ax.plot(np.arange(1, len(sorted_probs) + 1), sorted_probs.numpy(), label=label)
    ax.set(xscale="log", yscale="log", xlabel="rank", ylabel="probability")
    ax.legend(fontsize=8)
    return ax


def plot_time_per_token(result: dict, ax: Axes | None = None) -> Axes:
    """Milliseconds per generated token against its position, with and without the KV cache.

    `result` is `gpt_lab.decoding.measure_generation`'s dict; the first token (which also pays
    for the prompt) is left out.
    """
    ax = ax or plt.subplots(figsize=(7, 3.6))[1]
    names = {"no_cache": "without cache (whole sequence each step)", "cache": "with KV cache (one position each step)"}
    for name, label in names.items():
        ms = 1000 * np.asarray(result["seconds_per_token"][name])
        ax.plot(result["positions"][1:], ms[1:], label=label)
    ax.set(xlabel="position of the generated token", ylabel="ms per token", ylim=(0, None))
    ax.legend(fontsize=8)
    return ax


def claim(what: str, value: float, low: float, high: float) -> None:
    """Check a number the book's prose states: `low <= value <= high`, or the build fails.

    The text says what the shipped course model does (for example "above 90%"); this cell makes
    sure it still does. Under GPT_LAB_FAST=1 the chapters run on a tiny model for which the prose
    does not hold, so nothing is checked there.
    """
    from gpt_lab.presets import fast_mode

    if not fast_mode() and not low <= value <= high:
        raise AssertionError(f"the text says {what} lies in [{low}, {high}], but this build measured {value}: "
                             "the model or the code changed, so fix the text and this range together")
