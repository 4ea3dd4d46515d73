"""Supervised fine-tuning (SFT): teach a pre-trained code model to answer instructions.

The lecture's recipe: wrap every (instruction, answer) pair in a chat template, then train with
the same teacher-forcing loss as pre-training, learning only the answer tokens. Here:

- `apply_chat_template` writes the Llama-2 template of the lecture;
- `build_sft_example` tokenizes one pair into `(input_ids, labels)`, with the prompt masked out;
- `function_tasks` makes a data set without network from the standard library with `ast`
  ("extract the function name", "list the arguments"), split by module;
- `sft_batches` + `finetune` train with `gpt_lab.train.train` (the one training loop);
- `evaluate_exact_match` decodes greedily and compares with the reference answer;
- `finetuned` is the cached fine-tuned course model the book and labs reuse.
"""
from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch

from gpt_lab.attention import scaled_dot_product_attention
from gpt_lab.cache import build_once, cache_dir, fingerprint
from gpt_lab.data import collate, pad_sequences, split_modules, stdlib_functions
from gpt_lab.presets import Bundle, fast_mode, load_bundle, pretrained
from gpt_lab.prompting import CODE_ARGUMENTS_FORMAT, complete, few_shot_prompt
from gpt_lab.tokenizer import ENDOFTEXT, get_tokenizer
from gpt_lab.loss import IGNORE_INDEX, chunked_lm_loss, shift_labels
from gpt_lab.train import BatchFn, History, TrainConfig, save_checkpoint, train

SYSTEM_PROMPT = "You are a helpful assistant in programming."

# task name -> the instruction the user writes before the code
TASKS: dict[str, str] = {
    "function-name": "Extract the function name from the code.",
    "arguments": "List the arguments of the function.",
}


# ----------------------------------------------------------------------------- chat template

def apply_chat_template(messages: Sequence[Mapping[str, str]]) -> str:
    """Messages -> one string in the Llama-2 chat format of the lecture.

    One exchange reads (`<|endoftext|>` plays Llama's `</s>`, GPT-2 has no other special token):

        [INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer}<|endoftext|>

    Roles: an optional leading "system" (default `SYSTEM_PROMPT`; empty content drops the
    `<<SYS>>` block), then "user" and "assistant" alternating, starting with "user". Later turns
    are `[INST] {user} [/INST] {answer}<|endoftext|>` appended directly. When the last message is
    from the user the text ends right after `[/INST]`, ready for the model to write " {answer}".
    """
    messages = list(messages)
    for m in messages:
        if not isinstance(m, Mapping) or set(m) != {"role", "content"}:
            raise ValueError(f"each message must be a dict with keys 'role' and 'content', got {m!r}")
    system = SYSTEM_PROMPT
    if messages and messages[0]["role"] == "system":
        system = messages.pop(0)["content"]
    if not messages:
        raise ValueError("messages must contain at least one 'user' message")
    text = ""
    for i, m in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise ValueError(f"message {i} has role {m['role']!r}, expected {expected!r} "
                             "(an optional 'system' first, then 'user' and 'assistant' alternating)")
        if expected == "user":
            sys_block = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if i == 0 and system else ""
            text += f"[INST] {sys_block}{m['content']} [/INST]"
        else:
            text += f" {m['content']}{ENDOFTEXT}"
    return text


def build_sft_example(system: str | None, user: str, answer: str, tokenizer,
                      mask_prompt: bool = True) -> tuple[list[int], list[int]]:
    """Tokenize one exchange -> `(input_ids, labels)`, both of length T, labels aligned with inputs.

    input_ids = prompt (template up to `[/INST]`) + " {answer}" + end token. With `mask_prompt`,
    labels are IGNORE_INDEX at every prompt position, so only the answer and the end token are
    learned; without it labels = input_ids (the prompt is learned too). Training shifts the labels
    (`gpt_lab.loss.shift_labels`): the prediction made at the last prompt token is the first
    answer token. The prompt is tokenized alone, exactly as it is at generation time.
    """
    if not answer.strip():
        raise ValueError("answer must be a non-empty string")
    sys_msg = [] if system is None else [{"role": "system", "content": system}]
    prompt_ids = tokenizer.encode(apply_chat_template(sys_msg + [{"role": "user", "content": user}]))
    answer_ids = tokenizer.encode(f" {answer}") + [tokenizer.eot_token]
    input_ids = prompt_ids + answer_ids
    labels = ([IGNORE_INDEX] * len(prompt_ids) if mask_prompt else list(prompt_ids)) + answer_ids
    return input_ids, labels


# ----------------------------------------------------------------------------- data set

@dataclass(frozen=True)
class SFTExample:
    """One instruction/answer pair; `module` is the standard-library module its code comes from."""

    system: str
    user: str
    answer: str
    task: str
    module: str
    code: str = ""

    def messages(self, with_answer: bool = True) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]
        return out + ([{"role": "assistant", "content": self.answer}] if with_answer else [])


@dataclass
class SFTSplits:
    """Train and test examples; no module (top-level package) appears in both."""

    train: list[SFTExample] = field(default_factory=list)
    test: list[SFTExample] = field(default_factory=list)


def function_tasks(tasks: Sequence[str] = ("function-name", "arguments"), seed: int = 0,
                   max_code_tokens: int | None = None, max_answer_tokens: int = 12,
                   test_fraction: float = 0.2) -> SFTSplits:
    """Instruction data from real standard-library functions, split by top-level package.

    Each function gives one example per task: the user message is the task's instruction, a
    blank line, then the code. Functions longer than `max_code_tokens` GPT-2 tokens (default
    128; 16 under GPT_LAB_FAST so examples fit the tiny model's 64-token context) or with an
    answer longer than `max_answer_tokens` are left out, and "arguments" skips functions whose
    only argument is self or cls. Test examples come only from packages
    never seen in training. Both splits are shuffled (seeded).
    """
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown task(s) {unknown or list(tasks)}: choose from {', '.join(TASKS)}")
    if max_code_tokens is None:
        max_code_tokens = 16 if fast_mode() else 128
    records = stdlib_functions()
    test_groups = split_modules([r["module"] for r in records], test_fraction, seed)
    enc = get_tokenizer()
    splits = SFTSplits()
    for r in records:
        if r["code_tokens"] > max_code_tokens:
            continue
        for task in tasks:
            answer = r["name"] if task == "function-name" else r["arguments"]
            if answer in ("", "self", "cls") or len(enc.encode(" " + answer)) > max_answer_tokens:
                continue  # no argument to list, or only self/cls (a third of all methods: too easy to guess)
            example = SFTExample(SYSTEM_PROMPT, f"{TASKS[task]}\n\n{r['code']}", answer, task, r["module"], r["code"])
            (splits.test if r["module"].split(".")[0] in test_groups else splits.train).append(example)
    rng = random.Random(seed)
    rng.shuffle(splits.train)
    rng.shuffle(splits.test)
    return splits


@dataclass
class FewShotSplit:
    """The arguments task as few-shot prompting asks it: shots to show and held-out queries, with their budgets."""

    pool: list[SFTExample]      # functions of the training packages, each at most shot_budget tokens as a shot
    queries: list[SFTExample]   # functions of held-out packages, each at most query_budget tokens
    shot_budget: int
    query_budget: int


def few_shot_split(tokenizer, block_size: int, max_shots: int, new_tokens: int = 16) -> FewShotSplit:
    """Functions for few-shot prompts of the arguments task (code, then "# arguments: ..."), so that `max_shots`
    shots, a query (up to twice a shot's length) and `new_tokens` new tokens always fit `block_size`."""
    shot_budget = (block_size - new_tokens) // (max_shots + 2)       # tokens per shot
    query_budget = block_size - new_tokens - max_shots * shot_budget  # the rest: at least two shots' worth
    tasks = function_tasks(("arguments",), max_code_tokens=query_budget)

    def n_tokens(example: SFTExample) -> int:
        return len(tokenizer.encode(few_shot_prompt([(example.code, example.answer)], "", **CODE_ARGUMENTS_FORMAT)))

    return FewShotSplit([e for e in tasks.train if n_tokens(e) <= shot_budget],
                        [e for e in tasks.test if n_tokens(e) <= query_budget], shot_budget, query_budget)


def example_length(example: SFTExample, tokenizer) -> int:
    """Tokens of the whole templated example (prompt + answer + end token)."""
    return len(build_sft_example(example.system, example.user, example.answer, tokenizer)[0])


# ----------------------------------------------------------------------------- training

def sft_batches(examples: Sequence[SFTExample] | Mapping[str, Sequence[SFTExample]], tokenizer, batch_size: int,
                block_size: int, mask_prompt: bool = True, seed: int = 0,
                device: torch.device | str = "cpu") -> BatchFn:
    """A batch function `(split, step) -> (x, y, attention_mask)`, all (B, T), for `gpt_lab.train`.

    `examples` is the train list, or a mapping {"train": [...], "val": [...]}. Each split is
    read in epochs of a seeded permutation, grouped by length (`_by_length`: less padding), so batch
    (split, step) is always the same. Rows are right-padded with the end token to the longest row of
    the batch; y = shift_labels(labels) with IGNORE_INDEX on padding (and on the prompt when `mask_prompt`).
    """
    by_split = dict(examples) if isinstance(examples, Mapping) else {"train": examples}
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    encoded: dict[str, list[tuple[list[int], list[int]]]] = {}
    for split, exs in by_split.items():
        if len(exs) == 0:
            raise ValueError(f"no examples for split {split!r}")
        encoded[split] = [build_sft_example(e.system, e.user, e.answer, tokenizer, mask_prompt) for e in exs]
        longest = max(len(ids) for ids, _ in encoded[split])
        if longest > block_size:
            raise ValueError(f"an example of split {split!r} has {longest} tokens, more than block_size {block_size}: "
                             "filter the examples (e.g. function_tasks(max_code_tokens=...))")
    orders: dict[tuple[str, int], list[int]] = {}

    def batches(split: str, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if split not in encoded:
            raise ValueError(f"no {split!r} examples were given to sft_batches (have: {', '.join(encoded)})")
        rows = encoded[split]
        picked = []
        for i in range(step * batch_size, (step + 1) * batch_size):
            epoch, pos = divmod(i, len(rows))
            if (split, epoch) not in orders:
                g = torch.Generator().manual_seed((seed << 20) ^ (epoch << 1) ^ (split == "val"))
                orders[(split, epoch)] = _by_length(torch.randperm(len(rows), generator=g).tolist(),
                                                   [len(ids) for ids, _ in rows], batch_size, g)
            picked.append(rows[orders[(split, epoch)][pos]])
        x, mask = collate([ids for ids, _ in picked], tokenizer.eot_token, side="right")
        labels = pad_sequences([lab for _, lab in picked], IGNORE_INDEX, side="right")
        return x.to(device), shift_labels(labels).to(device), mask.to(device)

    return batches


def _by_length(order: list[int], lengths: Sequence[int], batch_size: int, generator: torch.Generator,
               pool_batches: int = 16) -> list[int]:
    """`order` (a permutation) regrouped so that each batch holds rows of similar length: every run of
    `pool_batches` batches is sorted by length, cut into batches, and the batches are shuffled. Still
    a permutation, so an epoch still shows every row once; a batch pads less, and training is faster
    (on the fine-tuning set of the SFT chapter, batches of 32: 34% padding in random batches, 4% here)."""
    pool = batch_size * pool_batches
    chunks = []
    for start in range(0, len(order), pool):
        ranked = sorted(order[start:start + pool], key=lambda i: lengths[i])
        chunks += [ranked[j:j + batch_size] for j in range(0, len(ranked), batch_size)]
    return [i for k in torch.randperm(len(chunks), generator=generator).tolist() for i in chunks[k]]


class AnswerLoss(torch.nn.Module):
    """`model` for training, with the output layer run only at the positions that are learned.

    Returns (None, the same loss as `model(idx, attention_mask, targets)`): the mean cross-entropy
    over the targets that are not IGNORE_INDEX. With a masked prompt only the few answer positions
    of each row pay for the (C x vocab) LM head, the most expensive layer of the course model;
    without the mask, `chunked_lm_loss` keeps the (positions x vocab) logits from ever existing
    whole. Rows padded on the right only (as `sft_batches` pads them) run without the attention mask:
    the padding comes after every real token, so causal attention never shows it to a real position,
    and the positions and smeared keys of real tokens are those of the unpadded row; the plain causal
    mask costs less than the per-row one. Parameters are the model's own: training the wrapper trains
    the model.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> tuple[None, torch.Tensor]:
        if targets is None:
            raise ValueError("AnswerLoss needs targets: it computes the loss only where targets are learned")
        if attention_mask is not None and self._padding_is_invisible(idx, attention_mask, targets):
            attention_mask = None
        hidden, _ = self.model.hidden_states(idx, attention_mask)          # (B, T, C)
        keep = targets != IGNORE_INDEX                                     # (B, T)
        return None, chunked_lm_loss(hidden[keep], self.model.lm_head.weight, targets[keep])  # N learned rows

    def _padding_is_invisible(self, idx: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor) -> bool:
        """True when dropping the (B, T) attention mask changes no learned position: a well-formed mask, padding
        only at the end of each row, no target learned on padding, and rows that fit the context unpadded too."""
        return (attention_mask.shape == idx.shape == targets.shape and idx.shape[1] <= self.model.config.block_size
                and bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())
                and bool((targets[attention_mask == 0] == IGNORE_INDEX).all()))


@dataclass(frozen=True)
class SFTRecipe:
    """Fine-tuning hyper-parameters (the defaults of `finetune` and `finetuned`)."""

    steps: int
    lr: float
    batch_size: int
    warmup_steps: int
    n_eval: int  # test examples per task scored by `finetuned`


# chosen on the shipped course model (benchmarks/sft_results.py), embeddings frozen: 360 steps of 32 examples
# (1.2 epochs of the training split) give 92% of the names and 83% of the arguments, and take 65-80 s masked,
# 100-135 s not masked on 2 CPU cores with bf16 autocast (the larger figures on a CPU without AMX); 300 steps
# give 90% of the names, 400 steps 93%, 600 steps 94%; lr 2e-3 89%; batches of 24 for 400 steps 90%
RECIPES = {"full": SFTRecipe(steps=360, lr=1e-3, batch_size=32, warmup_steps=20, n_eval=300),
           "fast": SFTRecipe(steps=12, lr=1e-3, batch_size=8, warmup_steps=2, n_eval=16)}


def default_recipe() -> SFTRecipe:
    return RECIPES["fast" if fast_mode() else "full"]


def finetune(model: torch.nn.Module, tokenizer, train_examples: Sequence[SFTExample],
             val_examples: Sequence[SFTExample] | None = None, steps: int | None = None, lr: float | None = None,
             batch_size: int | None = None, mask_prompt: bool = True, seed: int = 0,
             warmup_steps: int | None = None, progress: bool | None = None,
             train_embeddings: bool = False) -> History:
    """Fine-tune `model` in place on the examples with `gpt_lab.train.train`; return its History.

    The loop runs on `AnswerLoss(model)` (same loss, output layer only at learned positions), on CPU
    with the written-out attention (faster there for rows this short). The token embedding, which is
    also the output layer, stays frozen unless `train_embeddings`: fine-tuning moves the rows of the
    tokens its answers use and leaves the others, so the model learns to answer with the tokens it
    was fine-tuned on instead of copying unseen ones from the prompt (chapter 8 measures it).
    Defaults come from `default_recipe()`; with `val_examples` the validation loss (on the same
    loss mask) is recorded every steps // 5 steps. The model is left in eval mode.
    """
    recipe = default_recipe()
    steps = recipe.steps if steps is None else steps
    data = {"train": train_examples} | ({"val": val_examples} if val_examples else {})
    device = next(model.parameters()).device
    batches = sft_batches(data, tokenizer, batch_size or recipe.batch_size, model.config.block_size, mask_prompt,
                          seed, device)
    config = TrainConfig(max_steps=steps, lr=lr or recipe.lr,
                         warmup_steps=min(recipe.warmup_steps if warmup_steps is None else warmup_steps, steps),
                         eval_interval=max(1, steps // 5) if val_examples else 0, eval_steps=4, cpu_bf16=True,
                         progress=progress)
    # On CPU the written-out attention trains faster than PyTorch's fused kernel at rows this short
    # (benchmarks/sft_step.py: 32 rows of 131 tokens, about 15 ms against 7 ms a layer, forward and
    # backward); on a GPU the fused kernel wins. Both compute the same attention.
    written_out = device.type == "cpu" and model.transformer.h[0].attn.attention_fn is None
    if written_out:
        model.set_attention(scaled_dot_product_attention)
    embeddings = model.transformer.wte.weight                              # (vocab, C), tied to the LM head
    frozen = not train_embeddings and embeddings.requires_grad
    if frozen:
        embeddings.requires_grad_(False)
    try:
        history = train(AnswerLoss(model), batches, config)
    finally:
        if written_out:
            model.set_attention(None)
        if frozen:
            embeddings.requires_grad_(True)
    model.eval()
    return history


# ----------------------------------------------------------------------------- evaluation

def predict(model: torch.nn.Module, tokenizer, examples: Sequence[SFTExample], max_new_tokens: int = 24,
            batch_size: int = 32) -> list[str]:
    """The model's greedy answer to each example's prompt (the template up to `[/INST]`)."""
    prompts = [apply_chat_template(e.messages(with_answer=False)) for e in examples]
    return complete(model, tokenizer, prompts, max_new_tokens, batch_size)


def evaluate_exact_match(model: torch.nn.Module, tokenizer, examples: Sequence[SFTExample], max_new_tokens: int = 24,
                         batch_size: int = 32) -> float:
    """Fraction of examples whose greedy answer equals the reference answer exactly (both stripped)."""
    if len(examples) == 0:
        raise ValueError("no examples to evaluate")
    predictions = predict(model, tokenizer, examples, max_new_tokens, batch_size)
    return sum(p == e.answer.strip() for p, e in zip(predictions, examples)) / len(examples)


# ----------------------------------------------------------------------------- cached course model

def finetuned(task: str = "function-name", base_corpus: str = "python", base_preset: str = "course",
              mask_prompt: bool = True, device: torch.device | str | None = None, seed: int = 0,
              train_embeddings: bool = False) -> Bundle:
    """The course model fine-tuned on `task` ("function-name", "arguments" or "all"): cached.

    Trained on first use from `gpt_lab.presets.pretrained(base_corpus, base_preset)` with
    `default_recipe()` (`mask_prompt` and `train_embeddings` as in `finetune`), then scored on
    held-out modules; `info["accuracy"]` maps each task to its exact-match accuracy on (up to
    `n_eval`) test examples, `info["seconds"]` is the time.
    """
    tasks = tuple(TASKS) if task == "all" else (task,)
    if task != "all" and task not in TASKS:
        raise ValueError(f"unknown task {task!r}: choose from {', '.join(TASKS)} or 'all'")
    base = pretrained(base_corpus, base_preset, device=device)
    recipe = default_recipe()
    variant = ("" if mask_prompt else "-nomask") + ("-embeddings" if train_embeddings else "")
    key = fingerprint(tasks, mask_prompt, train_embeddings, asdict(recipe), seed, base.info.get("sha256"))
    path = cache_dir() / "checkpoints" / f"sft-{task}{variant}-{base.path.stem}-{key}.pt"

    def build() -> Bundle:
        model, tok = copy.deepcopy(base.model), base.tokenizer
        block = model.config.block_size
        splits = function_tasks(tasks, seed=seed)
        train_set = [e for e in splits.train if example_length(e, tok) <= block]
        test_set = [e for e in splits.test if example_length(e, tok) <= block]
        history = finetune(model, tok, train_set, steps=recipe.steps, lr=recipe.lr, batch_size=recipe.batch_size,
                           mask_prompt=mask_prompt, seed=seed, train_embeddings=train_embeddings)
        accuracy = {t: evaluate_exact_match(model, tok, [e for e in test_set if e.task == t][:recipe.n_eval])
                    for t in tasks}
        info = {"base": str(base.path), "task": task, "tasks": list(tasks), "mask_prompt": mask_prompt,
                "train_embeddings": train_embeddings,
                "recipe": asdict(recipe), "n_train": len(train_set), "n_test": len(test_set),
                "accuracy": accuracy, "seconds": history.seconds, "fast": fast_mode()}
        save_checkpoint(path, model, None, recipe.steps, history, extra={"kept_ids": tok.kept, "info": info})
        return Bundle(model, tok, history, path, info)

    return build_once(path, build, lambda p: load_bundle(p, device))
