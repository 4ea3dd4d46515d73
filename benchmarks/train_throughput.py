"""Training throughput and model FLOP utilisation (MFU) of the course presets.

MFU = achieved model FLOP/s / peak FLOP/s, where the model does 6 N + 12 L C T FLOPs per token
(forward + backward of N matmul parameters, plus attention over T positions) and the peak is
the matmul FLOP/s measured on this machine in the same precision (fp32 on CPU, plus bf16 where
the CPU has it natively and the preset trains with it; bf16 on CUDA).

    python benchmarks/train_throughput.py                  # tiny and small on the best device
    python benchmarks/train_throughput.py --presets small gpu --device cuda
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from gpt_lab.attention import scaled_dot_product_attention
from gpt_lab.device import autocast, compute_dtype, get_device
from gpt_lab.model import GPT
from gpt_lab.presets import PRESETS, course_tokenizer
from gpt_lab.train import configure_optimizer



PRECISION = {torch.float32: "fp32", torch.bfloat16: "bf16"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Best-of-`reps` FLOP/s of an n x n matmul in `dtype`: the machine's practical peak."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def train_throughput(preset: str, device: torch.device, written_out: bool, vocab_size: int, steps: int = 5,
                     cpu_bf16: bool = False) -> dict:
    spec = PRESETS[preset]
    config = spec.model_config(vocab_size)
    model = GPT(config, attention_fn=scaled_dot_product_attention if written_out else None).to(device)
    optimizer = configure_optimizer(model, 1e-3)
    x = torch.randint(0, vocab_size, (spec.batch_size, spec.block_size), device=device)

    def step():
        with autocast(device, cpu_bf16):
            _, loss = model(x, targets=x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - t) / steps
    tokens_per_s = x.numel() / seconds
    flops_per_token = 6 * model.num_params() + 12 * config.n_layer * config.n_embd * config.block_size
    return {"preset": preset, "device": device.type, "attention": "written-out" if written_out else "fused",
            "precision": PRECISION[compute_dtype(device, cpu_bf16)],
            "params_M": model.num_params() / 1e6, "tokens_per_s": tokens_per_s,
            "model_flops": flops_per_token * tokens_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    device = get_device(args.device)
    peaks = {name: matmul_flops(device, dtype) for dtype, name in PRECISION.items()
             if dtype in (compute_dtype(device), compute_dtype(device, cpu_bf16=True))}
    vocab_size = course_tokenizer("python").n_vocab  # the course model's vocabulary
    print(f"device {device}, threads {torch.get_num_threads()}, matmul peak "
          + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()))
    print(f"{'preset':<7} {'attention':<12} {'precision':<10} {'params':>8} {'tokens/s':>10} {'GFLOP/s':>9} {'MFU':>6}")
    rows = []
    for preset in args.presets:
        # (written_out, cpu_bf16): fused and written-out in the default precision, then fused in the
        # precision the preset trains with where that differs (bf16 on a CPU with native bf16)
        runs = [(False, False), (True, False)]
        if compute_dtype(device, PRESETS[preset].train.cpu_bf16) != compute_dtype(device):
            runs.append((False, True))
        for written_out, cpu_bf16 in runs:
            row = train_throughput(preset, device, written_out, vocab_size, args.steps, cpu_bf16=cpu_bf16)
            row["mfu"] = row["model_flops"] / peaks[row["precision"]]
            rows.append(row)
            print(f"{preset:<7} {row['attention']:<12} {row['precision']:<10} {row['params_M']:>7.2f}M "
                  f"{row['tokens_per_s']:>10.0f} {row['model_flops'] / 1e9:>9.1f} {row['mfu']:>6.1%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"peak_flops": peaks, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
