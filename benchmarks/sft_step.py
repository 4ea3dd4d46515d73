"""Where a fine-tuning step of the course model spends its time on CPU, and the faster path for each part.

Shapes of the fine-tuning chapter's runs (batches of 32 examples of about 131 tokens; the not-masked run
learns about 4,100 rows a step), bf16 autocast where the CPU has it, forward + backward, best of `--repeat`:

1. the LM head + cross-entropy at the learned rows: autocast's `F.linear` + `F.cross_entropy` against
   `gpt_lab.loss.chunked_lm_loss` for several chunk sizes, with the relative gradient difference;
2. one layer's attention (2 heads of 64, causal): PyTorch's fused kernel against the written-out
   `gpt_lab.attention.scaled_dot_product_attention`, at the fine-tuning shape and at pre-training's
   (8 rows of 256), which is why `gpt_lab.sft.finetune` trains with the written-out one on CPU.

    python benchmarks/sft_step.py [--rows 4104] [--repeat 10]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from gpt_lab.attention import causal_mask, scaled_dot_product_attention
from gpt_lab.device import autocast
from gpt_lab.loss import chunked_lm_loss
from gpt_lab.presets import pretrained

CPU = torch.device("cpu")


def timed(fn, repeat: int) -> float:
    """Best-of-`repeat` seconds of `fn()`, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def head_table(rows: int, repeat: int) -> None:
    torch.manual_seed(0)
    weight = pretrained().model.lm_head.weight.detach().clone().requires_grad_(True)   # (V, C)
    hidden = torch.randn(rows, weight.shape[1], requires_grad=True)                    # (N, C)
    targets = torch.randint(weight.shape[0], (rows,))

    def step(loss_fn):
        def run():
            hidden.grad = weight.grad = None
            with autocast(CPU, cpu_bf16=True):
                loss = loss_fn()
            loss.backward()
            return hidden.grad.clone(), weight.grad.clone()
        return run

    plain = step(lambda: F.cross_entropy(F.linear(hidden, weight).float(), targets))
    reference = plain()
    print(f"LM head + loss: N = {rows}, C = {weight.shape[1]}, V = {weight.shape[0]}")
    print(f"{'path':<26}{'ms':>8}{'grad diff':>11}")
    print(f"{'F.linear + cross_entropy':<26}{1e3 * timed(plain, repeat):>8.1f}{'-':>11}")
    for chunk in (64, 128, 256, 512):
        run = step(lambda: chunked_lm_loss(hidden, weight, targets, chunk))
        diff = max(float((g - r).norm() / r.norm()) for g, r in zip(run(), reference))
        print(f"{f'chunked, {chunk} rows':<26}{1e3 * timed(run, repeat):>8.1f}{diff:>11.4f}")


def attention_table(repeat: int) -> None:
    paths = {"fused (F.scaled_dot_product_attention)": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
             "written out": lambda q, k, v: scaled_dot_product_attention(q, k, v, causal_mask(q.shape[2]))[0]}
    print("\none layer's attention, 2 heads of 64, causal, forward + backward (ms)")
    print(f"{'path':<42}{'32 x 131 (SFT)':>16}{'8 x 256 (pre-training)':>24}")
    for name, attend in paths.items():
        times = []
        for B, T in ((32, 131), (8, 256)):
            torch.manual_seed(0)
            q, k, v = (torch.randn(B, 2, T, 64, requires_grad=True) for _ in range(3))

            def run():
                with autocast(CPU, cpu_bf16=True):
                    out = attend(q, k, v)
                out.float().sum().backward()
            times.append(1e3 * timed(run, repeat))
        print(f"{name:<42}{times[0]:>16.1f}{times[1]:>24.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4104, help="learned rows of the head (not-masked SFT: ~4,100)")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    head_table(args.rows, args.repeat)
    attention_table(args.repeat)


if __name__ == "__main__":
    main()
