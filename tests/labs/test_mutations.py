"""Mutation meta-tests: the hidden checks catch the classic mistakes, not only empty stubs.

Each mutant is the lab's reference answer (solutions/) with one classic mistake written in (a small textual
change of one graded function). Graded by the lab's hidden checks, every mutant must lose points, and the
points it loses are those of the mutated function's checks. `python tests/labs/test_mutations.py` prints the
table variant -> points lost.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from grader import run_checks, solution  # noqa: E402


@dataclass(frozen=True)
class Mutant:
    """One classic mistake: in `function`'s answer cell of `lab`, `old` (found exactly `count` times) -> `new`."""

    lab: str
    function: str
    mistake: str
    old: str
    new: str
    count: int = 1

    @property
    def id(self) -> str:
        return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{self.lab[:5]}-{self.function}-{self.mistake}")


MUTANTS = [
    # lab 1: attention
    Mutant("lab01-attention", "scaled_dot_product_attention", "softmax over the query axis",
           "torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=-2)", count=2),
    Mutant("lab01-attention", "scaled_dot_product_attention", "no 1/sqrt(d_k)", " / math.sqrt(q.shape[-1])", ""),
    Mutant("lab01-attention", "scaled_dot_product_attention", "mask filled with 0",
           'scores.masked_fill(mask, float("-inf"))', "scores.masked_fill(mask, 0.0)"),
    Mutant("lab01-attention", "scaled_dot_product_attention", "fully masked rows left NaN",
           "        weights = weights.masked_fill(empty, 0.0)\n", ""),
    Mutant("lab01-attention", "split_heads", "view without the transpose",
           ".view(B, T, n_head, C // n_head).transpose(1, 2)", ".view(B, n_head, T, C // n_head)"),
    Mutant("lab01-attention", "split_heads", "channels dealt round-robin to the heads",
           ".view(B, T, n_head, C // n_head).transpose(1, 2)", ".view(B, T, C // n_head, n_head).permute(0, 3, 1, 2)"),
    Mutant("lab01-attention", "split_heads", "the last two axes transposed",
           ".view(B, T, n_head, C // n_head).transpose(1, 2)", ".view(B, T, n_head, C // n_head).transpose(-2, -1)"),
    Mutant("lab01-attention", "merge_heads", "reshape without transposing back",
           "x.transpose(1, 2).reshape(B, T, H * hd)", "x.reshape(B, T, H * hd)"),
    Mutant("lab01-attention", "merge_heads", "head_dim-major channels",
           "x.transpose(1, 2).reshape(B, T, H * hd)", "x.permute(0, 2, 3, 1).reshape(B, T, H * hd)"),
    Mutant("lab01-attention", "merge_heads", "shape unpacked as (B, T, H, hd)", "B, H, T, hd = x.shape",
           "B, T, H, hd = x.shape"),
    Mutant("lab01-attention", "multi_head_attention", "q and k swapped", "q, k, v = F.linear(", "k, q, v = F.linear("),
    Mutant("lab01-attention", "multi_head_attention", "output projection without its bias",
           "F.linear(merge_heads(y), c_proj_weight, c_proj_bias)", "F.linear(merge_heads(y), c_proj_weight)"),
    Mutant("lab01-attention", "multi_head_attention", "mask not passed on to the attention",
           "scaled_dot_product_attention(q, k, v, mask)", "scaled_dot_product_attention(q, k, v)"),
    # lab 2: masking
    Mutant("lab02-masking", "causal_mask", "causal mask ignoring T_k - T", "triu(diagonal=T_k - T + 1)",
           "triu(diagonal=1)"),
    Mutant("lab02-masking", "causal_mask", "the diagonal masked too", "triu(diagonal=T_k - T + 1)",
           "triu(diagonal=T_k - T)"),
    Mutant("lab02-masking", "causal_mask", "True on the allowed keys (tril)", "triu(diagonal=T_k - T + 1)",
           "tril(diagonal=T_k - T)"),
    Mutant("lab02-masking", "causal_mask", "T > T_k not rejected", "if T <= 0 or T_k < T:", "if T <= 0:"),
    Mutant("lab02-masking", "padding_mask", "padding mask on the queries", "(attention_mask == 0)[:, None, None, :]",
           "(attention_mask == 0)[:, None, :, None]"),
    Mutant("lab02-masking", "padding_mask", "real tokens masked instead of padding", "(attention_mask == 0)[",
           "(attention_mask == 1)["),
    Mutant("lab02-masking", "padding_mask", "shape (B, 1, T_k): no head axis", "[:, None, None, :]", "[:, None, :]"),
    Mutant("lab02-masking", "combined_mask", "causal AND padding", "| padding_mask(attention_mask)",
           "& padding_mask(attention_mask)"),
    Mutant("lab02-masking", "combined_mask", "T_k dropped (no cached keys)", "causal_mask(T, T_k, device=attention_mask.device)",
           "causal_mask(T, device=attention_mask.device)"),
    Mutant("lab02-masking", "combined_mask", "no attention_mask not handled",
           "    if attention_mask is None:\n        return causal_mask(T, T_k, device=device)\n", ""),
    Mutant("lab02-masking", "collate", "left padding ignored",
           'slice(0, len(s)) if side == "right" else slice(T - len(s), T)', "slice(0, len(s))"),
    Mutant("lab02-masking", "collate", "truncation keeps the wrong end",
           's[:max_length] if truncation_side == "right" else s[-max_length:]', "s[:max_length]"),
    Mutant("lab02-masking", "collate", "padded with 0 instead of pad_id",
           "torch.full((len(seqs), T), pad_id, dtype=torch.long)", "torch.zeros((len(seqs), T), dtype=torch.long)"),
    # lab 3: teacher forcing
    Mutant("lab03-teacher-forcing", "shift_labels", "labels shifted the wrong way",
           "targets[:, :-1] = labels[:, 1:]", "targets[:, 1:] = labels[:, :-1]"),
    Mutant("lab03-teacher-forcing", "shift_labels", "roll: the first label wraps round to the end",
           "targets = torch.full_like(labels, ignore_index)\n    targets[:, :-1] = labels[:, 1:]",
           "targets = labels.roll(-1, dims=1)"),
    Mutant("lab03-teacher-forcing", "shift_labels", "last target 0 instead of ignore_index",
           "torch.full_like(labels, ignore_index)", "torch.zeros_like(labels)"),
    Mutant("lab03-teacher-forcing", "lm_loss", "loss averaged over ignored targets",
           "(nll * keep).sum() / keep.sum()", "(nll * keep).sum() / keep.numel()"),
    Mutant("lab03-teacher-forcing", "lm_loss", "log-softmax over the time axis", "torch.log_softmax(logits.float(), dim=-1)",
           "torch.log_softmax(logits.float(), dim=1)"),
    Mutant("lab03-teacher-forcing", "lm_loss", "summed, not averaged", "(nll * keep).sum() / keep.sum()",
           "(nll * keep).sum()"),
    Mutant("lab03-teacher-forcing", "train_step", "no zero_grad", "    optimizer.zero_grad(set_to_none=True)\n", ""),
    Mutant("lab03-teacher-forcing", "train_step", "step before backward", "    loss.backward()\n    optimizer.step()\n",
           "    optimizer.step()\n    loss.backward()\n"),
    Mutant("lab03-teacher-forcing", "train_step", "gradients zeroed after backward",
           "    optimizer.zero_grad(set_to_none=True)\n    loss.backward()\n",
           "    loss.backward()\n    optimizer.zero_grad(set_to_none=True)\n"),
    # lab 4: decoding
    Mutant("lab04-decoding", "apply_temperature", "logits multiplied by the temperature", "return logits / temperature",
           "return logits * temperature"),
    Mutant("lab04-decoding", "apply_temperature", "temperature 0 accepted", "if not temperature > 0:",
           "if temperature < 0:"),
    Mutant("lab04-decoding", "apply_temperature", "divided in place", "return logits / temperature",
           "logits /= temperature\n    return logits"),
    Mutant("lab04-decoding", "top_k_filter", "the k-th logit dropped", "logits.masked_fill(logits < kth",
           "logits.masked_fill(logits <= kth"),
    Mutant("lab04-decoding", "top_k_filter", "filtered logits set to 0, not -inf",
           'logits.masked_fill(logits < kth, float("-inf"))', "logits.masked_fill(logits < kth, 0.0)"),
    Mutant("lab04-decoding", "top_k_filter", "ties broken by topk's indices",
           'return logits.masked_fill(logits < kth, float("-inf"))',
           'keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, torch.topk(logits, int(k), dim=-1).indices, True)\n'
           '    return logits.masked_fill(~keep, float("-inf"))'),
    Mutant("lab04-decoding", "top_p_filter", "top-p keeping one token too few",
           "n_keep = (mass_above < p).sum(dim=-1, keepdim=True)",
           "n_keep = ((mass_above < p).sum(dim=-1, keepdim=True) - 1).clamp(min=1)"),
    Mutant("lab04-decoding", "top_p_filter", "sorted ascending", "probs.sort(dim=-1, descending=True)",
           "probs.sort(dim=-1)"),
    Mutant("lab04-decoding", "top_p_filter", "the token that crosses p dropped",
           "mass_above = sorted_probs.cumsum(dim=-1) - sorted_probs", "mass_above = sorted_probs.cumsum(dim=-1)"),
    Mutant("lab04-decoding", "top_p_filter", "ties with the last kept token dropped",
           'return logits.masked_fill(probs < last_kept, float("-inf"))',
           "ranks = probs.argsort(dim=-1, descending=True).argsort(dim=-1)\n"
           '    return logits.masked_fill(ranks >= n_keep, float("-inf"))'),
    Mutant("lab04-decoding", "apply_penalties", "the shift applied to rows without negatives",
           "shifted = logits - row_min.clamp(max=0)", "shifted = logits - row_min"),
    Mutant("lab04-decoding", "apply_penalties", "presence penalty on tokens outside the history",
           "(presence_penalty - 1) * (counts > 0)", "(presence_penalty - 1)"),
    Mutant("lab04-decoding", "apply_penalties", "frequency penalty not scaled by the count",
           "(frequency_penalty - 1) * counts", "(frequency_penalty - 1) * (counts > 0)"),
    Mutant("lab04-decoding", "apply_penalties", "padding -1 counted as the last token",
           "torch.where(history < 0, V, history)", "torch.where(history < 0, V - 1, history)"),
    Mutant("lab04-decoding", "apply_penalties", "temperature ignored", "shifted / (temperature * k)", "shifted / k"),
    Mutant("lab04-decoding", "beam_search", "beams ranked by log-probability, not length-normalised",
           "sorted(ranked, key=lambda h: h.score", "sorted(ranked, key=lambda h: h.logprob"),
    Mutant("lab04-decoding", "beam_search", "log-probabilities not accumulated",
           "totals = torch.tensor([lp for _, lp in alive], device=device)[:, None] + logprobs",
           "totals = logprobs"),
    Mutant("lab04-decoding", "beam_search", "probabilities summed instead of log-probabilities",
           "torch.log_softmax(model(ids)", "torch.softmax(model(ids)"),
    Mutant("lab04-decoding", "beam_search", "stops as soon as beam_width hypotheses finished",
           "            if kth_finished >= best_alive:\n                break",
           "            break"),
    Mutant("lab04-decoding", "beam_search", "EOS hypotheses take a beam slot",
           "finished.append(hypothesis(alive[source][0], total, True, length_penalty))",
           "finished.append(hypothesis(alive[source][0], total, True, length_penalty))\n"
           "                chosen.append((alive[source][0] + [token], total))"),
    # lab 5: KV cache
    Mutant("lab05-kv-cache", "KVCache", "cache write offset off by one", "self.length:end] = ",
           "self.length + 1:end + 1] = ", count=2),
    Mutant("lab05-kv-cache", "KVCache", "update returns only the new keys and values",
           "return self.k[layer, :, :, :end], self.v[layer, :, :, :end]", "return k_new, v_new"),
    Mutant("lab05-kv-cache", "KVCache", "update returns the whole buffer, empty slots included",
           "return self.k[layer, :, :, :end], self.v[layer, :, :, :end]", "return self.k[layer], self.v[layer]"),
    Mutant("lab05-kv-cache", "KVCache", "advance sets the length instead of adding", "self.length += T",
           "self.length = T"),
    Mutant("lab05-kv-cache", "KVCache", "length advanced by every layer's update",
           "        return self.k[layer, :, :, :end]", "        self.length = end\n        return self.k[layer, :, :, :end]"),
    Mutant("lab05-kv-cache", "KVCache", "the cache full one position early", "if end > self.max_length:",
           "if end >= self.max_length:"),
    Mutant("lab05-kv-cache", "next_token_logits", "cached positions fed again",
           "new = ids if kv_cache is None else ids[:, kv_cache.length:]", "new = ids"),
    Mutant("lab05-kv-cache", "next_token_logits", "logits of the first position", "hidden[:, -1]", "hidden[:, 0]"),
    Mutant("lab05-kv-cache", "next_token_logits", "attention_mask dropped", "model.hidden_states(new, attention_mask, kv_cache)",
           "model.hidden_states(new, None, kv_cache)"),
    Mutant("lab05-kv-cache", "next_token_logits", "only the last token fed with a cache",
           "ids[:, kv_cache.length:]", "ids[:, -1:]"),
    Mutant("lab05-kv-cache", "greedy_generate", "the end token kept",
           "            if token == eos_id:\n                break\n            new_tokens.append(token)\n",
           "            new_tokens.append(token)\n            if token == eos_id:\n                break\n"),
    Mutant("lab05-kv-cache", "greedy_generate", "cache sized to the prompt only",
           "ids.shape[1] + max_new_tokens) if use_cache", "ids.shape[1]) if use_cache"),
    Mutant("lab05-kv-cache", "greedy_generate", "the new token not appended to the input",
           "            ids = torch.cat([ids, torch.tensor([[token]], device=device)], dim=1)\n", ""),
    # lab 6: prompting
    Mutant("lab06-prompting", "few_shot_prompt", "no space between the prefix and the answer",
           'f"{x}{answer_prefix} {y}"', 'f"{x}{answer_prefix}{y}"'),
    Mutant("lab06-prompting", "few_shot_prompt", "examples in reverse order", "for x, y in examples]",
           "for x, y in reversed(examples)]"),
    Mutant("lab06-prompting", "few_shot_prompt", "blocks joined by a newline, not the separator",
           "return separator.join(blocks)", 'return "\\n".join(blocks)'),
    Mutant("lab06-prompting", "few_shot_prompt", "the query's prompt ends with a space",
           'blocks.append(f"{query}{answer_prefix}")', 'blocks.append(f"{query}{answer_prefix} ")'),
    Mutant("lab06-prompting", "few_shot_prompt", "an empty instruction still adds a block",
           "blocks = [instruction] if instruction else []", "blocks = [instruction]"),
    Mutant("lab06-prompting", "complete", "not cut at the first newline", '.split("\\n")[0].strip()', ".strip()"),
    Mutant("lab06-prompting", "complete", "not stripped", '.split("\\n")[0].strip()', '.split("\\n")[0]'),
    Mutant("lab06-prompting", "complete", "answers in length order, not prompt order", "for i, ids in zip(rows, new):",
           "for i, ids in zip(range(start, start + len(rows)), new):"),
    Mutant("lab06-prompting", "complete", "new tokens not capped by the room in the context",
           "n = min(max_new_tokens, model.config.block_size + 1 - max(len(encoded[i]) for i in rows))",
           "n = max_new_tokens"),
    Mutant("lab06-prompting", "complete", "the prompt tokenized with a trailing space", "tokenizer.encode(p)",
           'tokenizer.encode(p + " ")'),
    Mutant("lab06-prompting", "complete", "no end token: generation runs on past it",
           ', strategy="greedy", eos_id=tokenizer.eot_token)', ', strategy="greedy")'),
    Mutant("lab06-prompting", "accuracy_vs_shots", "the query's own example may be a shot",
           "rng.sample([p for p in pool if p[0] != x and p[1] != y], max(shots))", "rng.sample(pool, max(shots))"),
    Mutant("lab06-prompting", "accuracy_vs_shots", "shots in reverse order", "few_shot_prompt(d[:k], x,",
           "few_shot_prompt(d[:k][::-1], x,"),
    Mutant("lab06-prompting", "accuracy_vs_shots", "shots not nested (a fresh draw for every k)",
           "few_shot_prompt(d[:k], x,", "few_shot_prompt(rng.sample(d, k), x,"),
    Mutant("lab06-prompting", "accuracy_vs_shots", "n_eval ignored", "queries = as_pairs(task_examples)[:n_eval]",
           "queries = as_pairs(task_examples)"),
    Mutant("lab06-prompting", "accuracy_vs_shots", "expected output not stripped", "a == y.strip()", "a == y"),
    Mutant("lab06-prompting", "accuracy_vs_shots", "separator not passed on to few_shot_prompt",
           "few_shot_prompt(d[:k], x, instruction, answer_prefix, separator)",
           "few_shot_prompt(d[:k], x, instruction, answer_prefix)"),
    Mutant("lab06-prompting", "accuracy_vs_shots", "max_new_tokens not passed on to complete",
           "complete(model, tokenizer, prompts, max_new_tokens, batch_size)",
           "complete(model, tokenizer, prompts, batch_size=batch_size)"),
    Mutant("lab06-prompting", "accuracy_vs_shots", "no query: accuracies of 0 instead of a ValueError",
           'raise ValueError("no task examples to evaluate")', "return {k: 0.0 for k in shots}"),
    Mutant("lab06-prompting", "accuracy_vs_shots", "a prompt without room for the answer not rejected",
           "if longest + max_new_tokens - 1 > model.config.block_size:", "if False:"),
    Mutant("lab06-prompting", "accuracy_vs_shots", "room for the answer off by one",
           "longest + max_new_tokens - 1 > model.config.block_size",
           "longest + max_new_tokens > model.config.block_size"),
    # lab 7: SFT
    Mutant("lab07-sft", "apply_chat_template", "system block in every user turn", "if i == 0 and system else",
           "if system else"),
    Mutant("lab07-sft", "apply_chat_template", "no end token after an answer", "f\" {m['content']}{ENDOFTEXT}\"",
           "f\" {m['content']}\""),
    Mutant("lab07-sft", "apply_chat_template", "no space before the answer", "f\" {m['content']}{ENDOFTEXT}\"",
           "f\"{m['content']}{ENDOFTEXT}\""),
    Mutant("lab07-sft", "apply_chat_template", "an empty system prompt still writes a block",
           "if i == 0 and system else", "if i == 0 else"),
    Mutant("lab07-sft", "apply_chat_template", "role order not checked",
           "        if m[\"role\"] != expected:\n            raise", "        if False:\n            raise"),
    Mutant("lab07-sft", "build_sft_example", "prompt labels not masked",
           "[IGNORE_INDEX] * len(prompt_ids) if mask_prompt else list(prompt_ids)", "list(prompt_ids)"),
    Mutant("lab07-sft", "build_sft_example", "labels pre-shifted", "return prompt_ids + answer_ids, labels",
           "return prompt_ids + answer_ids, labels[1:] + [IGNORE_INDEX]"),
    Mutant("lab07-sft", "build_sft_example", "no end token after the answer",
           "tokenizer.encode(\" \" + answer) + [tokenizer.eot_token]", "tokenizer.encode(\" \" + answer)"),
    Mutant("lab07-sft", "build_sft_example", "the end token masked", "list(prompt_ids)) + answer_ids",
           "list(prompt_ids)) + answer_ids[:-1] + [IGNORE_INDEX]"),
    Mutant("lab07-sft", "build_sft_example", "the answer's space tokenized with the prompt (not as at generation)",
           "tokenizer.encode(apply_chat_template(messages))\n    answer_ids = tokenizer.encode(\" \" + answer)",
           "tokenizer.encode(apply_chat_template(messages) + \" \")\n    answer_ids = tokenizer.encode(answer)"),
    Mutant("lab07-sft", "build_sft_example", "no system given: no system block instead of the default",
           "([] if system is None else [{\"role\": \"system\", \"content\": system}])",
           "[{\"role\": \"system\", \"content\": system or \"\"}]"),
    Mutant("lab07-sft", "evaluate_exact_match", "reference answer not stripped", "a == e.answer.strip()",
           "a == e.answer"),
    Mutant("lab07-sft", "evaluate_exact_match", "the answer left in the prompt", "e.messages(with_answer=False)",
           "e.messages(with_answer=True)"),
    Mutant("lab07-sft", "evaluate_exact_match", "answers in length order, not example order",
           "for i, ids in zip(rows, new):", "for i, ids in zip(range(start, start + len(rows)), new):"),
    Mutant("lab07-sft", "evaluate_exact_match", "the prompt tokenized with a trailing space",
           "tokenizer.encode(apply_chat_template(e.messages(with_answer=False)))",
           "tokenizer.encode(apply_chat_template(e.messages(with_answer=False)) + \" \")"),
    Mutant("lab07-sft", "evaluate_exact_match", "no examples not rejected",
           "    if len(examples) == 0:\n        raise", "    if False:\n        raise"),
    Mutant("lab07-sft", "evaluate_exact_match", "no end token: generation runs on past it",
           ', strategy="greedy", eos_id=tokenizer.eot_token)', ', strategy="greedy")'),
    Mutant("lab07-sft", "evaluate_exact_match", "not cut at the first newline", '.split("\\n")[0].strip()', ".strip()"),
    # lab 8: tokenizer
    Mutant("lab08-tokenizer", "bpe_merge", "the highest rank merged first", "rank < best_rank", "rank > best_rank"),
    Mutant("lab08-tokenizer", "bpe_merge", "the leftmost mergeable pair merged first", "best, best_rank = i, rank\n",
           "best, best_rank = i, rank\n                break\n"),
    Mutant("lab08-tokenizer", "bpe_merge", "no re-scan: stops after the first merge",
           "        parts[best:best + 2] = [parts[best] + parts[best + 1]]\n",
           "        parts[best:best + 2] = [parts[best] + parts[best + 1]]\n        break\n"),
    Mutant("lab08-tokenizer", "bpe_merge", "starts from characters, not bytes (no byte fallback)",
           "parts = [bytes([b]) for b in piece]",
           "parts = [c.encode() for c in piece.decode(\"utf-8\", errors=\"replace\")]"),
    Mutant("lab08-tokenizer", "encode", "no pre-tokenization (BPE over the whole text)",
           "for piece in regex.findall(pattern, text):", "for piece in [text] if text else []:"),
    Mutant("lab08-tokenizer", "encode", "pattern without the whitespace lookahead", "regex.findall(pattern, text)",
           "regex.findall(pattern.replace(r\"\\s+(?!\\S)|\", \"\"), text)"),
    Mutant("lab08-tokenizer", "encode", "pre-tokens split at spaces", "regex.findall(pattern, text)",
           "regex.findall(r\" ?\\S+|\\s+\", text)"),
    Mutant("lab08-tokenizer", "encode", "ids appended as lists", "ids.extend(", "ids.append("),
    Mutant("lab08-tokenizer", "decode", "invalid UTF-8 not replaced", ".decode(\"utf-8\", errors=\"replace\")",
           ".decode(\"utf-8\")"),
    Mutant("lab08-tokenizer", "decode", "each token decoded on its own",
           "b\"\".join(inverse[i] for i in ids).decode(\"utf-8\", errors=\"replace\")",
           "\"\".join(inverse[i].decode(\"utf-8\", errors=\"replace\") for i in ids)"),
    Mutant("lab08-tokenizer", "decode", "bytes decoded as Latin-1", ".decode(\"utf-8\", errors=\"replace\")",
           ".decode(\"latin-1\")"),
    Mutant("lab08-tokenizer", "train_bpe", "pairs counted across pre-token boundaries",
           "for piece in regex.findall(pattern, text):", "for piece in [text]:"),
    Mutant("lab08-tokenizer", "train_bpe", "ties to the first pair counted, not the smallest",
           "min(counts, key=lambda p: (-counts[p], p))", "max(counts, key=counts.get)"),
    Mutant("lab08-tokenizer", "train_bpe", "pair counts not recounted after a merge",
           "    for _ in range(n_merges):\n        counts = {}\n", "    counts = {}\n    for _ in range(n_merges):\n"),
    Mutant("lab08-tokenizer", "train_bpe", "word frequencies ignored", "counts[pair] = counts.get(pair, 0) + n",
           "counts[pair] = counts.get(pair, 0) + 1"),
    Mutant("lab08-tokenizer", "train_bpe", "only the first occurrence merged in each word",
           "                    parts[i:i + 2] = [merged]\n",
           "                    parts[i:i + 2] = [merged]\n                    break\n"),
    # lab 9: assembling GPT
    Mutant("lab09-assemble-gpt", "LayerNorm", "unbiased variance", "var = ((x - mean) ** 2).mean(-1, keepdim=True)",
           "var = x.var(-1, keepdim=True)"),
    Mutant("lab09-assemble-gpt", "LayerNorm", "eps outside the square root", "torch.sqrt(var + self.eps)",
           "(torch.sqrt(var) + self.eps)"),
    Mutant("lab09-assemble-gpt", "LayerNorm", "eps fixed at 1e-5", "torch.sqrt(var + self.eps)",
           "torch.sqrt(var + 1e-5)"),
    Mutant("lab09-assemble-gpt", "LayerNorm", "the mean detached from the graph", "mean = x.mean(-1, keepdim=True)",
           "mean = x.mean(-1, keepdim=True).detach()"),
    Mutant("lab09-assemble-gpt", "LayerNorm", "gain a plain tensor, not a parameter",
           "self.weight = nn.Parameter(torch.ones(n_embd))", "self.weight = torch.ones(n_embd)"),
    Mutant("lab09-assemble-gpt", "MLP", "exact (erf) GELU instead of the tanh one",
           "0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))", "F.gelu(u)"),
    Mutant("lab09-assemble-gpt", "MLP", "ReLU instead of GELU",
           "0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))", "torch.relu(u)"),
    Mutant("lab09-assemble-gpt", "MLP", "hidden width n_embd, not 4 n_embd", "4 * config.n_embd", "config.n_embd",
           count=2),
    Mutant("lab09-assemble-gpt", "Block", "post-LN instead of pre-LN",
           "x = x + self.attn(self.ln_1(x), mask)[0]\n        return x + self.mlp(self.ln_2(x))",
           "x = self.ln_1(x + self.attn(x, mask)[0])\n        return self.ln_2(x + self.mlp(x))"),
    Mutant("lab09-assemble-gpt", "Block", "no residual around the attention", "x = x + self.attn(", "x = self.attn("),
    Mutant("lab09-assemble-gpt", "Block", "no residual around the MLP", "return x + self.mlp(", "return self.mlp("),
    Mutant("lab09-assemble-gpt", "Block", "ln_1 used before the MLP too", "self.mlp(self.ln_2(x))",
           "self.mlp(self.ln_1(x))"),
    Mutant("lab09-assemble-gpt", "Block", "mask not passed to the attention", "self.attn(self.ln_1(x), mask)",
           "self.attn(self.ln_1(x), None)"),
    Mutant("lab09-assemble-gpt", "GPT", "head not tied to the token embedding",
           "        self.lm_head.weight = self.transformer.wte.weight\n", ""),
    Mutant("lab09-assemble-gpt", "GPT", "no position embeddings",
           "self.transformer.wte(idx) + self.transformer.wpe(positions)", "self.transformer.wte(idx)"),
    Mutant("lab09-assemble-gpt", "GPT", "no final LayerNorm", "self.lm_head(self.transformer.ln_f(x))",
           "self.lm_head(x)"),
    Mutant("lab09-assemble-gpt", "GPT", "no causal mask", "mask = causal_mask(T, device=idx.device)", "mask = None"),
    Mutant("lab09-assemble-gpt", "GPT", "LM head with a bias", "config.vocab_size, bias=False)", "config.vocab_size)"),
    Mutant("lab09-assemble-gpt", "count_parameters", "an untied LM head counted",
           "return V * d + L * d + N * block + 2 * d", "return 2 * V * d + L * d + N * block + 2 * d"),
    Mutant("lab09-assemble-gpt", "count_parameters", "the attention's biases forgotten",
           "attention = (d * 3 * d + 3 * d) + (d * d + d)", "attention = (d * 3 * d) + (d * d)"),
    Mutant("lab09-assemble-gpt", "count_parameters", "the final LayerNorm forgotten", "N * block + 2 * d",
           "N * block"),
    Mutant("lab09-assemble-gpt", "count_parameters", "one LayerNorm per block",
           "block = attention + mlp + 2 * (2 * d)", "block = attention + mlp + 2 * d"),
    Mutant("lab09-assemble-gpt", "count_parameters", "position embeddings forgotten", "V * d + L * d +", "V * d +"),
]


# Labs whose checks give each graded function its points once (issue 19: a check that goes through an earlier
# function runs it on the reference): a mutant loses points only in its own function's checks (by name prefix).
OWN_CHECKS = {
    "lab06-prompting": {"few_shot_prompt": "test_few_shot_prompt", "complete": "test_complete",
                        "accuracy_vs_shots": "test_accuracy"},
    "lab07-sft": {"apply_chat_template": "test_template", "build_sft_example": "test_sft_example",
                  "evaluate_exact_match": "test_exact_match"},
}


def mutate(mutant: Mutant, folder: Path) -> Path:
    """The lab's solution notebook with the mutant's change in the answer cell that defines its function."""
    nb = json.loads(solution(mutant.lab).read_text())
    hits = 0
    for cell in nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        source = "".join(cell["source"])
        defines = f"def {mutant.function}(" in source or f"class {mutant.function}" in source
        if meta.get("solution") and defines and mutant.old in source:
            hits += source.count(mutant.old)
            cell["source"] = source.replace(mutant.old, mutant.new)
            compile(cell["source"], f"{mutant.id} ({mutant.function}'s answer cell)", "exec")  # still Python
    if hits != mutant.count:
        raise AssertionError(f"{mutant.id}: {mutant.old!r} found {hits} times in the answer of {mutant.function}, "
                             f"expected {mutant.count} (did the solution change?)")
    path = folder / f"{mutant.id}.ipynb"
    path.write_text(json.dumps(nb))
    return path


def points_lost(mutant: Mutant, folder: Path) -> tuple[float, float, list[str]]:
    """(points lost, points of the lab, names of the failed checks) for the mutant, graded by the hidden checks."""
    results = run_checks(mutant.lab, mutate(mutant, folder), timeout_s=600, in_process=True)  # our own notebooks
    failed = [r.name for r in results if not r.passed]
    return sum(r.max_points - r.points for r in results), sum(r.max_points for r in results), failed


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.id for m in MUTANTS])
def test_each_classic_mistake_loses_points(mutant, tmp_path):
    lost, total, failed = points_lost(mutant, tmp_path)
    assert lost > 0, f"the hidden checks of {mutant.lab} do not catch '{mutant.mistake}' in {mutant.function}"
    assert lost < total, f"'{mutant.mistake}' in {mutant.function} costs every point of {mutant.lab}: {failed}"
    own = OWN_CHECKS.get(mutant.lab, {}).get(mutant.function)
    if own is not None:
        others = [name for name in failed if not name.startswith(own)]
        assert not others, f"'{mutant.mistake}' in {mutant.function} also costs the points of other functions: {others}"


def test_every_mutant_still_applies(tmp_path):
    """Each mutant finds its text in today's solution (a changed solution must update the mutant)."""
    for mutant in MUTANTS:
        mutate(mutant, tmp_path)


def main() -> int:
    """Print the table variant -> points lost (markdown)."""
    import tempfile

    print("| lab | function | mistake | points lost | failed checks |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for mutant in MUTANTS if len(sys.argv) < 2 else [m for m in MUTANTS if m.lab.startswith(tuple(sys.argv[1:]))]:
            lost, total, failed = points_lost(mutant, Path(tmp))
            print(f"| {mutant.lab} | `{mutant.function}` | {mutant.mistake} | {lost:g} of {total:g} | {len(failed)} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
