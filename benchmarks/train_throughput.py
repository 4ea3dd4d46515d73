"""Training throughput and model FLOP utilisation (MFU) of the course presets.

MFU = achieved model FLOP/s / peak FLOP/s, where the model does 6 N + 12 L C T FLOPs per token
(forward + backward of N matmul parameters, plus attention over T positions) and the peak is
the matmul FLOP/s measured on this machine in the same precision (fp32 on CPU, plus bf16 where
the CPU has it natively and the preset trains with it; bf16 on CUDA).

    python benchmarks/train_throughput.py                  # tiny and course on the best device
    python benchmarks/train_throughput.py --presets course gpu --device cuda
    python benchmarks/train_throughput.py --vs-nanogpt     # gpt_lab's step against nanoGPT's model.py

`--vs-nanogpt` times one training step (forward, backward, optimizer) on nanoGPT's own benchmark-size
config (4 layers, 128 channels, 4 heads, vocab 50,304, context 128, batch 16): nanoGPT's `model.py`
with its `configure_optimizers` in fp32, gpt_lab's model in fp32 with the same optimizer (the same
work, so the same speed is expected), and gpt_lab's step as the course trains: bf16 autocast where
the CPU has native bf16 (or on CUDA) and fused AdamW, then the same with `torch.compile`. The rows take
turns in `--rounds` rounds of `--steps` steps; each prints its median round (see `vs_nanogpt`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from gpt_lab.attention import scaled_dot_product_attention
from gpt_lab.device import autocast, compute_dtype, cpu_has_bf16, get_device
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


def step_seconds(model, optimizer, x: torch.Tensor, y: torch.Tensor, device: torch.device, cpu_bf16: bool,
                 steps: int, warmup: int = 2) -> float:
    """Mean wall time of one training step (forward, backward, optimizer) after `warmup` untimed ones."""
    def step():
        with autocast(device, cpu_bf16):
            _, loss = model(x, targets=y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t) / steps


def train_throughput(preset: str, device: torch.device, written_out: bool, vocab_size: int, steps: int = 5,
                     cpu_bf16: bool = False) -> dict:
    spec = PRESETS[preset]
    config = spec.model_config(vocab_size)
    model = GPT(config, attention_fn=scaled_dot_product_attention if written_out else None).to(device)
    optimizer = configure_optimizer(model, 1e-3)
    x = torch.randint(0, vocab_size, (spec.batch_size, spec.block_size), device=device)
    seconds = step_seconds(model, optimizer, x, x, device, cpu_bf16, steps)
    tokens_per_s = x.numel() / seconds
    flops_per_token = 6 * model.num_params() + 12 * config.n_layer * config.n_embd * config.block_size
    return {"preset": preset, "device": device.type, "attention": "written-out" if written_out else "fused",
            "precision": PRECISION[compute_dtype(device, cpu_bf16)],
            "params_M": model.num_params() / 1e6, "tokens_per_s": tokens_per_s,
            "model_flops": flops_per_token * tokens_per_s}


def vs_nanogpt(device: torch.device, steps: int, compile_too: bool = True, rounds: int = 5) -> list[dict]:
    """Tokens/s of a training step: nanoGPT's model.py vs gpt_lab's, on one config (see the docstring).

    The rows are timed in `rounds` interleaved rounds of `steps` steps each; each row reports its median
    round, and its speed-up is the median over rounds of the speed-up within the round: a host whose speed
    drifts (a shared 2-core VM moved the nanoGPT row by 12% between two runs) then slows every row alike
    instead of whichever ran during the slow spell."""
    if steps < 1 or rounds < 1:
        raise ValueError(f"need at least one step and one round, got steps={steps}, rounds={rounds}")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "nanogpt"))
    import model as nanogpt  # noqa: E402  (benchmarks/nanogpt/model.py)

    from gpt_lab.model import GPTConfig

    shape = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, vocab_size=50304, dropout=0.0, bias=True)
    batch = 16
    x = torch.randint(0, shape["vocab_size"], (batch, shape["block_size"]), device=device)
    y = torch.roll(x, -1, dims=1)
    torch.manual_seed(0)
    theirs = nanogpt.GPT(nanogpt.GPTConfig(**shape)).to(device)
    torch.manual_seed(0)
    ours = GPT(GPTConfig(**shape)).to(device)
    runs = [("nanoGPT model.py, its AdamW", theirs, theirs.configure_optimizers(0.1, 1e-3, (0.9, 0.95), device.type),
             False),
            ("gpt_lab, AdamW (foreach)", ours, configure_optimizer(ours, 1e-3, fused=False), False),
            ("gpt_lab, fused AdamW, autocast", ours, configure_optimizer(ours, 1e-3), True)]
    if compile_too:
        runs.append(("gpt_lab, fused AdamW, autocast, torch.compile", torch.compile(ours),
                     configure_optimizer(ours, 1e-3), True))
    for _, net, optimizer, cpu_bf16 in runs:  # warm-up (and compilation) before any timing
        step_seconds(net, optimizer, x, y, device, cpu_bf16, steps=1, warmup=2)
    times = {name: [] for name, *_ in runs}
    for _ in range(rounds):
        for name, net, optimizer, cpu_bf16 in runs:
            times[name].append(step_seconds(net, optimizer, x, y, device, cpu_bf16, steps, warmup=0))
    rows, base = [], runs[0][0]
    for name, _, _, cpu_bf16 in runs:
        rows.append({"model": name, "precision": PRECISION[compute_dtype(device, cpu_bf16)],
                     "tokens_per_s": x.numel() / statistics.median(times[name]),
                     # the speed-up within each round, then the median: a drift between rounds cancels out
                     "vs_nanogpt": statistics.median(b / t for b, t in zip(times[base], times[name])),
                     "rounds": rounds, "steps_per_round": steps, "round_seconds_per_step": times[name]})
        print(f"{name:<46} {rows[-1]['precision']:<6} {rows[-1]['tokens_per_s']:>10.0f}", flush=True)
    print("speed-up over nanoGPT: " + ", ".join(f"{r['model']}: {r['vs_nanogpt']:.2f}x" for r in rows[1:]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "course"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--vs-nanogpt", action="store_true", help="time gpt_lab's step against nanoGPT's model.py")
    parser.add_argument("--no-compile", action="store_true", help="with --vs-nanogpt: skip the torch.compile row")
    parser.add_argument("--rounds", type=int, default=5, help="with --vs-nanogpt: interleaved rounds of --steps steps")
    args = parser.parse_args()
    device = get_device(args.device)
    if args.vs_nanogpt:
        print(f"device {device}, threads {torch.get_num_threads()}, native cpu bf16 {cpu_has_bf16()}")
        rows = vs_nanogpt(device, args.steps, not args.no_compile, args.rounds)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=2)
        return
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
