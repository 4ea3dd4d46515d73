"""`gpt-lab`: the course's command line (no server needed).

    gpt-lab pretrain --preset course --out DIR          train a preset (resumable) and save it with its card
    gpt-lab generate --checkpoint PATH --prompt "def "  print a sample
    gpt-lab finetune --task function-name               supervised fine-tuning (cached)
    gpt-lab check labs/lab01-attention/lab01-attention.ipynb   run a lab's visible tests, one line each
"""
from __future__ import annotations

import argparse
import sys


def cmd_pretrain(args: argparse.Namespace) -> int:
    from gpt_lab.presets import pretrain

    bundle = pretrain(args.corpus, args.preset, args.out, seed=args.seed, device=args.device)
    card = bundle.info
    print(f"model: {bundle.path}")
    print(f"card:  {bundle.path.with_suffix('.json')}")
    for key in ("corpus", "preset", "steps", "tokens_seen", "vocab_size", "params", "unigram_val_loss", "val_loss",
                "repeat_probe", "wall_seconds"):
        value = card[key]
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
                       device=args.device, seed=args.seed, train_embeddings=args.train_embeddings)
    info = bundle.info
    print(f"checkpoint: {bundle.path}")
    print(f"base model: {info['base']}")
    print(f"prompt masked: {info['mask_prompt']}, embeddings trained: {info['train_embeddings']}, "
          f"{info['n_train']} train examples, "
          f"{info['recipe']['steps']} steps in {info['seconds']:.1f} s")
    for task, accuracy in info["accuracy"].items():
        print(f"{task} accuracy (exact match, held-out modules): {accuracy:.1%}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from gpt_lab.selfcheck import check

    return check(args.notebook, timeout_s=args.timeout, kernel_name=args.kernel)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt-lab", description="GPT from scratch: course tools")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="train a preset model on a corpus; resumes where a stopped run left off")
    p.add_argument("--corpus", default="python", help="python, shakespeare, or a text file/folder")
    p.add_argument("--preset", default="course", help="tiny, course or gpu")
    p.add_argument("--out", default=None, help="folder for the model, its card and the resumable checkpoint "
                   "(default: the cache; the shipped course model was made with --out gpt_lab/assets)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--seed", type=int, default=0)
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
    p.add_argument("--train-embeddings", action="store_true",
                   help="train the token embedding too (frozen by default)")
    p.add_argument("--corpus", default="python", help="corpus of the base model")
    p.add_argument("--preset", default="course", help="preset of the base model")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("check", help="run a lab notebook's visible tests in a fresh kernel; exit 1 if any fails")
    p.add_argument("notebook", help="the lab notebook, e.g. labs/lab01-attention/lab01-attention.ipynb")
    p.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    p.add_argument("--kernel", default=None, help="Jupyter kernel (default: the notebook's, else python3)")
    p.set_defaults(func=cmd_check)

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
