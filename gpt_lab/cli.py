"""`gpt-lab`: the course's command line (no server needed).

    gpt-lab pretrain --corpus python --preset small     train (or load) a cached model
    gpt-lab generate --checkpoint PATH --prompt "def "  print a sample
    gpt-lab finetune --task function-name               supervised fine-tuning (cached)
    gpt-lab grade LAB SUBMISSIONS                       grade a folder of submissions
"""
from __future__ import annotations

import argparse
import sys


def cmd_pretrain(args: argparse.Namespace) -> int:
    from gpt_lab.presets import pretrained

    bundle = pretrained(args.corpus, args.preset, device=args.device, seed=args.seed, retrain=args.retrain)
    info = bundle.info
    print(f"checkpoint: {bundle.path}")
    for key in ("corpus", "preset", "tokens", "vocab_size", "params", "unigram_val_loss", "train_loss", "val_loss",
                "seconds"):
        if key in info:
            value = info[key]
            print(f"{key:>17}: {value:.4f}" if isinstance(value, float) else f"{key:>17}: {value}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from gpt_lab.decoding import stream_generate
    from gpt_lab.presets import load_bundle

    bundle = load_bundle(args.checkpoint, device=args.device)
    tok = bundle.tokenizer
    ids = tok.encode(args.prompt)
    tokens = stream_generate(bundle.model, ids, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                             top_k=args.top_k, top_p=args.top_p, frequency_penalty=args.frequency_penalty,
                             presence_penalty=args.presence_penalty, eos_id=tok.eot_token, seed=args.seed)
    sys.stdout.write(args.prompt)  # after the arguments are checked
    for token in tokens:
        sys.stdout.write(tok.decode([token]))
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from gpt_lab.sft import finetuned

    bundle = finetuned(args.task, base_corpus=args.corpus, base_preset=args.preset, mask_prompt=not args.no_mask,
                       device=args.device, seed=args.seed)
    info = bundle.info
    print(f"checkpoint: {bundle.path}")
    print(f"base model: {info['base']}")
    print(f"prompt masked: {info['mask_prompt']}, {info['n_train']} train examples, "
          f"{info['recipe']['steps']} steps in {info['seconds']:.1f} s")
    for task, accuracy in info["accuracy"].items():
        print(f"{task} accuracy (exact match, held-out modules): {accuracy:.1%}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt-lab", description="GPT from scratch: course tools")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="train a preset model on a corpus (cached under $GPT_LAB_CACHE)")
    p.add_argument("--corpus", default="python", help="python, shakespeare, or a text file/folder")
    p.add_argument("--preset", default="small", help="tiny, small or gpu")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--retrain", action="store_true", help="train again even if cached")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("generate", help="print a sample from a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--prompt", default="def ")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--frequency-penalty", type=float, default=1.0, help=">= 1, the lecture's multiplicative form")
    p.add_argument("--presence-penalty", type=float, default=1.0, help=">= 1, the lecture's multiplicative form")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_generate)

    # (more subcommands are registered below this line)
    p = sub.add_parser("finetune", help="supervised fine-tuning of the course model on a code task (cached)")
    p.add_argument("--task", default="function-name", help="function-name, arguments, or all")
    p.add_argument("--no-mask", action="store_true", help="learn the prompt too (no loss mask)")
    p.add_argument("--corpus", default="python", help="corpus of the base model")
    p.add_argument("--preset", default="small", help="preset of the base model")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_finetune)

    from gpt_lab.grading.grade import add_parser as add_grade_parser

    add_grade_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"gpt-lab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
