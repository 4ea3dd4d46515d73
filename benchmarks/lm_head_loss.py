"""The LM head + cross-entropy of one unmasked SFT step: autocast's plain path against `chunked_lm_loss`.

Shapes of the fine-tuning chapter's not-masked run on the course model: N learned rows (about 4,100 on
average: 32 examples of about 130 tokens), C = 128, V = the course vocabulary. Forward + backward of the head
and the loss, bf16 autocast where the CPU has it, best of `--repeat` runs. Prints ms per step for each
chunk size and the largest relative gradient difference to the plain path.

    python benchmarks/lm_head_loss.py [--rows 4104] [--repeat 10]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from gpt_lab.device import autocast
from gpt_lab.loss import chunked_lm_loss
from gpt_lab.presets import pretrained


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4104)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    weight = pretrained().model.lm_head.weight.detach().clone().requires_grad_(True)   # (V, C)
    hidden = torch.randn(args.rows, weight.shape[1], requires_grad=True)                # (N, C)
    targets = torch.randint(weight.shape[0], (args.rows,))
    cpu = torch.device("cpu")

    def step(loss_fn):
        def run():
            hidden.grad = weight.grad = None
            with autocast(cpu, cpu_bf16=True):
                loss = loss_fn()
            loss.backward()
            return hidden.grad.clone(), weight.grad.clone()
        return run

    plain = step(lambda: F.cross_entropy(F.linear(hidden, weight).float(), targets))
    ref = plain()
    print(f"N = {args.rows}, C = {weight.shape[1]}, V = {weight.shape[0]}, {torch.get_num_threads()} threads")
    print(f"{'path':<24}{'ms / step':>10}{'grad diff':>11}")
    print(f"{'F.linear + cross_entropy':<24}{1e3 * timed(plain, args.repeat):>10.1f}{'-':>11}")
    for chunk in (64, 128, 256, 512):
        run = step(lambda: chunked_lm_loss(hidden, weight, targets, chunk))
        got = run()
        diff = max(float((g - r).norm() / r.norm()) for g, r in zip(got, ref))
        print(f"{f'chunked, {chunk} rows':<24}{1e3 * timed(run, args.repeat):>10.1f}{diff:>11.4f}")


if __name__ == "__main__":
    main()
