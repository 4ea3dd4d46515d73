"""Prompting vs supervised fine-tuning of the course model: exact match on held-out modules.

    python benchmarks/sft_results.py [--preset course | --checkpoint PATH] [--steps N] [--n-eval N]

Defaults: the `full` SFT recipe (gpt_lab.sft.RECIPES).

Prints markdown tables (the numbers the prompting and SFT chapters quote):
1. few-shot accuracy of the base model on the arguments task as chapter 7 writes it (code +
   "# arguments:" comments; K shots of at most (block - 16) // (K + 2) tokens each, so K shots, a
   longer query and 16 new tokens fit the context), for 0, 1, 2, 4 shots with 95% Wilson intervals;
2. exact match per task for the base model (zero-shot, chat template) and after SFT on both
   tasks with and without the prompt loss mask (token embeddings frozen, as `finetune` does by
   default), and masked with the embeddings trained too, with the fine-tuning time (wall clock and CPU),
   and each model's exact match on the held-out names that have a token no training answer has.
Fine-tuning starts from a fresh copy of `pretrained("python", preset)`; nothing is cached.
Timings on a shared machine are inflated by whatever else runs there.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from gpt_lab.presets import load_bundle, pretrained
from gpt_lab.prompting import CODE_ARGUMENTS_FORMAT, accuracy_vs_shots, binomial_interval
from gpt_lab.sft import (TASKS, default_recipe, evaluate_exact_match, example_length, few_shot_split, finetune,
                         function_tasks, predict)


def by_task(examples, n):
    return {t: [e for e in examples if e.task == t][:n] for t in TASKS}


def main() -> None:
    recipe = default_recipe()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="course")
    parser.add_argument("--checkpoint", default=None, help="base model checkpoint (default: pretrained python/preset)")
    parser.add_argument("--steps", type=int, default=recipe.steps)
    parser.add_argument("--lr", type=float, default=recipe.lr)
    parser.add_argument("--batch-size", type=int, default=recipe.batch_size)
    parser.add_argument("--n-eval", type=int, default=recipe.n_eval, help="test examples per task")
    parser.add_argument("--shots", default="0,1,2,4")
    parser.add_argument("--skip-nomask", action="store_true")
    parser.add_argument("--skip-embeddings", action="store_true", help="no run with the embeddings trained")
    args = parser.parse_args()

    base = load_bundle(args.checkpoint) if args.checkpoint else pretrained("python", args.preset)
    tok, block = base.tokenizer, base.model.config.block_size
    print(f"base model: {base.path.name}, val loss {base.info.get('val_loss', float('nan')):.3f}, "
          f"torch threads {torch.get_num_threads()}")
    splits = function_tasks()
    train_set = [e for e in splits.train if example_length(e, tok) <= block]
    test_set = [e for e in splits.test if example_length(e, tok) <= block]
    test = by_task(test_set, args.n_eval)
    print(f"{len(train_set)} train / {len(test_set)} test examples "
          f"({len({e.module.split('.')[0] for e in test_set})} held-out packages); "
          f"scoring {', '.join(f'{len(v)} {k}' for k, v in test.items())}")

    # 1. few-shot prompting of the base model, as chapter 7 does it
    shots = tuple(int(k) for k in args.shots.split(","))
    split = few_shot_split(tok, block, max(shots))
    queries = split.queries[:args.n_eval]
    t0 = time.perf_counter()
    few = accuracy_vs_shots(base.model, tok, queries, shots=shots, shot_examples=split.pool, **CODE_ARGUMENTS_FORMAT)
    print(f"\n## Few-shot prompting, base model ({len(queries)} held-out functions, arguments task, "
          f"{time.perf_counter() - t0:.0f} s)\n")
    print("| shots | " + " | ".join(str(k) for k in shots) + " |")
    print("|---" * (len(shots) + 1) + "|")
    cells = [f"{few[k]:.1%} [{lo:.1%}, {hi:.1%}]" for k in shots
             for lo, hi in [binomial_interval(round(few[k] * len(queries)), len(queries))]]
    print("| exact match [95% interval] | " + " | ".join(cells) + " |")

    # 2. base model zero-shot with the chat template, then SFT with and without the loss mask
    rows = [("base model, zero-shot (chat template)", {t: evaluate_exact_match(base.model, tok, v)
                                                        for t, v in test.items()}, None, None)]
    # names with a token that no training answer has (chapter 8, "Why the token embedding stays frozen")
    answered = {t for e in train_set for t in tok.encode(" " + e.answer)}
    familiar = [all(t in answered for t in tok.encode(" " + e.answer)) for e in test["function-name"]]
    runs = [(True, False)] + [(False, False)] * (not args.skip_nomask) + [(True, True)] * (not args.skip_embeddings)
    for mask, embeddings in runs:
        model = copy.deepcopy(base.model)
        cpu0 = time.process_time()
        history = finetune(model, tok, train_set, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                           mask_prompt=mask, train_embeddings=embeddings)
        cpu = time.process_time() - cpu0
        acc = {t: evaluate_exact_match(model, tok, v) for t, v in test.items()}
        acc["few-shot queries"] = evaluate_exact_match(model, tok, queries)
        right = [p == e.answer for p, e in zip(predict(model, tok, test["function-name"]), test["function-name"])]
        acc["new-token names"] = sum(r for r, f in zip(right, familiar) if not f) / familiar.count(False)
        name = (f"SFT {'masked' if mask else 'unmasked'} prompt{', embeddings trained' if embeddings else ''}, "
                f"{args.steps} steps x {args.batch_size}")
        rows.append((name, acc, history.seconds, cpu))
    print(f"\n## Exact match on held-out modules (up to {args.n_eval} examples per task)\n")
    print(f"| model | function-name | arguments | arguments, the few-shot queries | "
          f"names with a token in no training answer ({familiar.count(False)}) | fine-tuning wall s | CPU s |")
    print("|---|---|---|---|---|---|---|")
    for name, acc, wall, cpu in rows:
        cells = [f"{acc[t]:.1%}" for t in TASKS] + [f"{acc[k]:.1%}" if k in acc else "-"
                                                     for k in ("few-shot queries", "new-token names")]
        cells += [f"{wall:.0f}" if wall is not None else "-", f"{cpu:.0f}" if cpu is not None else "-"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
