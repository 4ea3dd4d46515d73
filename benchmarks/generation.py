"""Generation speed with and without the KV cache, for the course model.

    python benchmarks/generation.py                      # the `course` preset's shape, random weights
    python benchmarks/generation.py --pretrained         # the shipped course model
    python benchmarks/generation.py --json gen.json      # also save every number
    python benchmarks/generation.py --cpu-time           # on a machine shared with other jobs

Speed does not depend on the weights, so by default the model is a GPT with the exact config of
`PRESETS["course"]` and the python corpus's compact vocabulary, with random weights: no training.
Greedy decoding, batch 1, a 1-token prompt. Prints tokens/s at several lengths up to the full
context, and the time per generated token against its position (the KV-cache chapter's plot):
without the cache it grows with the position (the whole sequence runs again), with it it stays flat.
Target: >= 5x faster with the cache at full context on CPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from gpt_lab.decoding import measure_generation
from gpt_lab.device import get_device
from gpt_lab.model import GPT
from gpt_lab.presets import PRESETS, course_tokenizer


def build_model(args: argparse.Namespace) -> GPT:
    if args.pretrained:
        from gpt_lab.presets import pretrained
        return pretrained("python", args.preset, device=args.device).model
    torch.manual_seed(0)
    vocab_size = args.vocab_size or course_tokenizer("python").n_vocab
    model = GPT(PRESETS[args.preset].model_config(vocab_size))
    return model.to(get_device(args.device)).eval()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="course", choices=sorted(PRESETS))
    parser.add_argument("--pretrained", action="store_true", help="time the trained model instead of random weights")
    parser.add_argument("--vocab-size", type=int, default=None,
                        help="default: the course tokenizer's size on the python corpus")
    parser.add_argument("--lengths", type=int, nargs="+", default=None,
                        help="numbers of new tokens (default: 1/8, 1/4, 1/2 and all of the context)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per mode; the fastest time per position is kept")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with this process's CPU time instead of the wall clock, and 1 thread: on a "
                             "machine shared with other jobs this is closer to the wall time of an idle one")
    parser.add_argument("--json", default=None, metavar="PATH", help="save the numbers as JSON")
    args = parser.parse_args(argv)
    if args.cpu_time and args.threads not in (None, 1):
        parser.error("--cpu-time sums the CPU time of all threads: use it with one thread")
    if args.threads or args.cpu_time:
        torch.set_num_threads(args.threads or 1)

    model = build_model(args)
    block = model.config.block_size
    lengths = args.lengths or [block // 8, block // 4, block // 2, block]
    clock = time.process_time if args.cpu_time else time.perf_counter
    result = measure_generation(model, lengths, repeats=args.repeats, clock=clock)
    result.update(config=model.config.to_dict(), threads=torch.get_num_threads(), torch=torch.__version__,
                  machine=platform.processor() or platform.machine(), pretrained=args.pretrained)

    print(f"{args.preset} model ({result['params']:,} parameters, vocab {model.config.vocab_size:,}, "
          f"context {block}) on {result['device']}, {result['threads']} threads, fastest of {args.repeats} runs, "
          f"{'CPU' if args.cpu_time else 'wall'} time")
    print(f"\n{'new tokens':>10} | {'no cache tok/s':>14} | {'cache tok/s':>11} | {'speedup':>7}")
    print(f"{'-' * 10}-+-{'-' * 14}-+-{'-' * 11}-+-{'-' * 7}")
    for n, slow, fast, x in zip(lengths, result["tokens_per_s"]["no_cache"], result["tokens_per_s"]["cache"],
                                result["speedup"]):
        print(f"{n:>10} | {slow:>14.1f} | {fast:>11.1f} | {x:>6.1f}x")

    per_token = result["seconds_per_token"]
    positions = result["positions"]
    step = max(len(positions) // 8, 1)
    print(f"\n{'position':>8} | {'no cache ms/token':>17} | {'cache ms/token':>14} | {'ratio':>6}")
    print(f"{'-' * 8}-+-{'-' * 17}-+-{'-' * 14}-+-{'-' * 6}")
    for i in sorted({0, *range(step - 1, len(positions), step)}):
        slow, fast = per_token["no_cache"][i], per_token["cache"][i]
        print(f"{positions[i]:>8} | {1e3 * slow:>17.2f} | {1e3 * fast:>14.2f} | {slow / fast:>5.1f}x")
    last = slice(-min(8, len(positions)), None)  # the last positions: the context is (nearly) full
    slow, fast = (statistics.median(per_token[mode][last]) for mode in ("no_cache", "cache"))
    result["speedup_at_full_context"] = slow / fast
    print(f"\nper token at positions {positions[last][0]}-{positions[-1]}: {1e3 * slow:.2f} ms without the cache, "
          f"{1e3 * fast:.2f} ms with it: {slow / fast:.1f}x faster (target >= 5x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"\nsaved {args.json}")
    return result


if __name__ == "__main__":
    main()
