"""Does the model copy from its context, and what does it take to learn it? (issue 5's blocker)

    python benchmarks/induction.py [--preset course] [--skip-course-model] [--head-width-only]

Few-shot prompting and the function-name task both need a copy mechanism (an "induction head":
attend to the token after an earlier occurrence of the current token, then copy it), and that
mechanism is built on a "previous-token head". Prints:
1. for the cached course model: the repeat probe (`gpt_lab.prompting.repeat_loss`) and, per
   layer, the largest mean attention any head pays to the previous token on validation text,
   next to what uniform attention would pay;
2. the copy task (`copy_task_batches`, random tokens of 256) trained from scratch at the course
   model's width, in two forms: a fixed period (32 tokens, then the same 32 again), which a model
   can solve by attending a fixed distance back, and random periods (each row repeats its first
   d tokens, d in [8, 32]), which only an induction head solves. For each: the validation loss
   every 100 steps, the first step where it falls below halfway from chance to the loss of a
   perfect copier, and the repeat probe after training at two lengths (32 and 20 tokens): a
   positional copier passes only at 32, an induction head at both;
3. how precisely a model copies against the width of its heads: the random-period copy task over the
   course vocabulary (7,059 ids, rows of 256, periods 8-128), 4 layers x 128 dims with key shift,
   four heads of 32 dims against two of 64, 600 steps each: the share of the last 115 positions
   whose argmax is the right token. The wider heads are why the course preset has two.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from gpt_lab.data import load_corpus
from gpt_lab.device import seed_everything
from gpt_lab.model import GPT, GPTConfig
from gpt_lab.presets import pretrained
from gpt_lab.prompting import copy_task_batches, repeat_loss
from gpt_lab.train import TrainConfig, train

V, L, MIN_PERIOD = 256, 32, 8
# (min_period: None for the fixed period, layers, batch, lr, steps): the course width (128 dims, 4 heads) throughout
RUNS = [(None, 2, 32, 1e-3, 400), (None, 4, 32, 3e-3, 400), (None, 4, 8, 1e-3, 800),
        (MIN_PERIOD, 2, 32, 3e-3, 2000), (MIN_PERIOD, 4, 32, 3e-3, 2000), (MIN_PERIOD, 4, 8, 3e-3, 2000)]


@torch.no_grad()
def previous_token_attention(model: GPT, ids: torch.Tensor) -> list[float]:
    """Per layer, the largest (over heads) mean attention weight from position t to t - 1. ids: (B, T)."""
    return [float(w.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, 2)).max()) for w in model.attention_maps(ids)]


def course_model_report(preset: str) -> None:
    bundle = pretrained("python", preset)
    model, tok = bundle.model, bundle.tokenizer
    first, repeat = repeat_loss(model, tok.n_vocab)
    print(f"## Course model ({bundle.path.name}, val loss {bundle.info.get('val_loss', float('nan')):.3f})\n")
    print(f"repeat probe: {first:.2f} nats on 50 random tokens, {repeat:.2f} on their repeat "
          f"(a copier falls far below the first number)\n")
    val = torch.from_numpy(tok.from_gpt2_array(load_corpus("python").split(0.1)[1]).astype("int64"))
    T = min(200, model.config.block_size)
    g = torch.Generator().manual_seed(0)
    ids = torch.stack([val[s:s + T] for s in torch.randint(0, len(val) - T, (8,), generator=g).tolist()])
    uniform = sum(1 / t for t in range(2, T + 1)) / (T - 1)  # mean weight on t - 1 if every query spread evenly
    print("| layer | max over heads of the mean attention on the previous token |")
    print("|---|---|")
    for layer, a in enumerate(previous_token_attention(model.cpu(), ids)):
        print(f"| {layer} | {a:.3f} |")
    print(f"\nuniform attention would give {uniform:.3f}; a previous-token head gives close to 1.\n")


def perfect_copier_loss(min_period: int | None) -> float:
    """Expected loss of a model that copies every repeat and is at chance elsewhere: in a row of
    period d, the first d - 1 of the 2L - 1 targets are fresh random tokens."""
    periods = [L] if min_period is None else range(min_period, L + 1)
    return sum(d - 1 for d in periods) / len(periods) / (2 * L - 1) * math.log(V)


def copy_task_report() -> None:
    chance = math.log(V)
    print(f"## Copy task from scratch (random tokens of {V}; chance {chance:.2f})\n")
    print("| period | layers | batch | lr | val loss every 100 steps | perfect copier | first step past halfway "
          "| repeat probe at 32 / 20 tokens | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for min_period, n_layer, batch, lr, steps in RUNS:
        floor = perfect_copier_loss(min_period)
        seed_everything(0)
        model = GPT(GPTConfig(vocab_size=V, block_size=2 * L, n_layer=n_layer, n_head=4, n_embd=128))
        t0 = time.perf_counter()
        history = train(model, copy_task_batches(V, batch, L, min_period=min_period), TrainConfig(
            max_steps=steps, lr=lr, warmup_steps=30, eval_interval=100, eval_steps=2, progress=False))
        crossed = next((s for s, v in zip(history.val_step, history.val_loss) if v < (chance + floor) / 2), None)
        probes = [repeat_loss(model.eval(), V, length=n, seed=1)[1] for n in (L, 20)]
        period = f"{L}" if min_period is None else f"{min_period}-{L}"
        print(f"| {period} | {n_layer} | {batch} | {lr:g} | {' '.join(f'{v:.2f}' for v in history.val_loss)} | "
              f"{floor:.2f} | {crossed if crossed else f'not in {steps}'} | {probes[0]:.2f} / {probes[1]:.2f} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)


def head_width_report(vocab_size: int = 7059, steps: int = 600) -> None:
    print(f"## Copy precision against head width (random-period rows over {vocab_size} ids, 4 layers x 128)\n")
    print("| heads x dims | steps | repeat probe, 50 tokens: first / repeat | argmax right, positions 140-254 | s |")
    print("|---|---|---|---|---|")
    for n_head in (4, 2):
        seed_everything(0)
        model = GPT(GPTConfig(vocab_size=vocab_size, block_size=256, n_layer=4, n_head=n_head, n_embd=128,
                              key_shift=True))
        batches = copy_task_batches(vocab_size, 8, 128, min_period=8)
        t0 = time.perf_counter()
        train(model, batches, TrainConfig(max_steps=steps, lr=3e-3, warmup_steps=50, eval_interval=0,
                                          cpu_bf16=True, progress=False))
        model.eval()
        x, y = (torch.cat(parts) for parts in zip(*(batches("val", i) for i in range(4))))  # (32, 255)
        with torch.no_grad():
            right = (model(x)[0].argmax(-1) == y)[:, 140:].float().mean()
        first, repeat = repeat_loss(model, vocab_size, 50)
        print(f"| {n_head} x {128 // n_head} | {steps} | {first:.2f} / {repeat:.2f} | {right:.1%} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="course")
    parser.add_argument("--skip-course-model", action="store_true")
    parser.add_argument("--head-width-only", action="store_true", help="only part 3 (about 4 minutes)")
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}\n")
    if args.head_width_only:
        head_width_report()
        return
    if not args.skip_course_model:
        course_model_report(args.preset)
    copy_task_report()
    head_width_report()


if __name__ == "__main__":
    main()
