"""Does the model copy from its context, and what does it take to learn it? (issue 5's blocker)

    python benchmarks/induction.py [--preset small] [--skip-course-model]

Few-shot prompting and the function-name task both need a copy mechanism (an "induction head":
attend to the token after an earlier occurrence of the current token, then copy it), and that
mechanism is built on a "previous-token head". Prints:
1. for the cached course model: the repeat probe (`gpt_lab.prompting.repeat_loss`) and, per
   layer, the largest mean attention any head pays to the previous token on validation text,
   next to what uniform attention would pay;
2. the copy task (`copy_task_batches`: 32 random tokens of 256, then the same again) trained
   from scratch at the course model's width for a few depths, batch sizes and learning rates:
   the validation loss every 100 steps (chance is log 256 = 5.55 on both halves, so a model
   that copies falls to about half of it) and the first step where it falls below 0.75 x chance.
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

V, L = 256, 32
# (layers, batch, lr, steps): the course width (128 dims, 4 heads) throughout
RUNS = [(2, 32, 1e-3, 400), (4, 32, 1e-3, 800), (4, 32, 3e-3, 400), (4, 8, 1e-3, 800), (4, 8, 5e-3, 800)]


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
    T = 200
    g = torch.Generator().manual_seed(0)
    ids = torch.stack([val[s:s + T] for s in torch.randint(0, len(val) - T, (8,), generator=g).tolist()])
    uniform = sum(1 / t for t in range(2, T + 1)) / (T - 1)  # mean weight on t - 1 if every query spread evenly
    print("| layer | max over heads of the mean attention on the previous token |")
    print("|---|---|")
    for layer, a in enumerate(previous_token_attention(model.cpu(), ids)):
        print(f"| {layer} | {a:.3f} |")
    print(f"\nuniform attention would give {uniform:.3f}; a previous-token head gives close to 1.\n")


def copy_task_report() -> None:
    chance = math.log(V)
    print(f"## Copy task from scratch ({L} random tokens of {V}, then the same again; chance {chance:.2f})\n")
    print("| layers | batch | lr | val loss every 100 steps | first step < 0.75 x chance | repeat probe after | s |")
    print("|---|---|---|---|---|---|---|")
    for n_layer, batch, lr, steps in RUNS:
        seed_everything(0)
        model = GPT(GPTConfig(vocab_size=V, block_size=2 * L, n_layer=n_layer, n_head=4, n_embd=128))
        t0 = time.perf_counter()
        history = train(model, copy_task_batches(V, batch, L), TrainConfig(
            max_steps=steps, lr=lr, warmup_steps=30, eval_interval=100, eval_steps=2, progress=False))
        crossed = next((s for s, v in zip(history.val_step, history.val_loss) if v < 0.75 * chance), None)
        _, repeat = repeat_loss(model.eval(), V, length=L, seed=1)
        print(f"| {n_layer} | {batch} | {lr:g} | {' '.join(f'{v:.2f}' for v in history.val_loss)} | "
              f"{crossed if crossed else f'not in {steps}'} | {repeat:.2f} | {time.perf_counter() - t0:.0f} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--skip-course-model", action="store_true")
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}\n")
    if not args.skip_course_model:
        course_model_report(args.preset)
    copy_task_report()


if __name__ == "__main__":
    main()
