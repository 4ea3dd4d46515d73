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
    Mutant("lab01-attention", "merge_heads", "reshape without transposing back",
           "x.transpose(1, 2).reshape(B, T, H * hd)", "x.reshape(B, T, H * hd)"),
    Mutant("lab01-attention", "multi_head_attention", "q and k swapped", "q, k, v = F.linear(", "k, q, v = F.linear("),
    Mutant("lab01-attention", "multi_head_attention", "output projection without its bias",
           "F.linear(merge_heads(y), c_proj_weight, c_proj_bias)", "F.linear(merge_heads(y), c_proj_weight)"),
    # lab 2: masking
    Mutant("lab02-masking", "causal_mask", "causal mask ignoring T_k - T", "triu(diagonal=T_k - T + 1)",
           "triu(diagonal=1)"),
    Mutant("lab02-masking", "causal_mask", "the diagonal masked too", "triu(diagonal=T_k - T + 1)",
           "triu(diagonal=T_k - T)"),
    Mutant("lab02-masking", "padding_mask", "padding mask on the queries", "(attention_mask == 0)[:, None, None, :]",
           "(attention_mask == 0)[:, None, :, None]"),
    Mutant("lab02-masking", "padding_mask", "real tokens masked instead of padding", "(attention_mask == 0)[",
           "(attention_mask == 1)["),
    Mutant("lab02-masking", "combined_mask", "causal AND padding", "| padding_mask(attention_mask)",
           "& padding_mask(attention_mask)"),
    Mutant("lab02-masking", "collate", "left padding ignored",
           'slice(0, len(s)) if side == "right" else slice(T - len(s), T)', "slice(0, len(s))"),
    Mutant("lab02-masking", "collate", "truncation keeps the wrong end",
           's[:max_length] if truncation_side == "right" else s[-max_length:]', "s[:max_length]"),
    # lab 3: teacher forcing
    Mutant("lab03-teacher-forcing", "shift_labels", "labels shifted the wrong way",
           "targets[:, :-1] = labels[:, 1:]", "targets[:, 1:] = labels[:, :-1]"),
    Mutant("lab03-teacher-forcing", "lm_loss", "loss averaged over ignored targets",
           "(nll * keep).sum() / keep.sum()", "(nll * keep).sum() / keep.numel()"),
    Mutant("lab03-teacher-forcing", "train_step", "no zero_grad", "    optimizer.zero_grad(set_to_none=True)\n", ""),
    # lab 4: decoding
    Mutant("lab04-decoding", "apply_temperature", "logits multiplied by the temperature", "return logits / temperature",
           "return logits * temperature"),
    Mutant("lab04-decoding", "top_k_filter", "the k-th logit dropped", "logits.masked_fill(logits < kth",
           "logits.masked_fill(logits <= kth"),
    Mutant("lab04-decoding", "top_p_filter", "top-p keeping one token too few",
           "n_keep = (mass_above < p).sum(dim=-1, keepdim=True)",
           "n_keep = ((mass_above < p).sum(dim=-1, keepdim=True) - 1).clamp(min=1)"),
    Mutant("lab04-decoding", "apply_penalties", "the shift applied to rows without negatives",
           "shifted = logits - row_min.clamp(max=0)", "shifted = logits - row_min"),
    # lab 5: KV cache
    Mutant("lab05-kv-cache", "KVCache", "cache write offset off by one", "self.length:end] = ",
           "self.length + 1:end + 1] = ", count=2),
    Mutant("lab05-kv-cache", "next_token_logits", "cached positions fed again",
           "new = ids if kv_cache is None else ids[:, kv_cache.length:]", "new = ids"),
]


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
    if hits != mutant.count:
        raise AssertionError(f"{mutant.id}: {mutant.old!r} found {hits} times in the answer of {mutant.function}, "
                             f"expected {mutant.count} (did the solution change?)")
    path = folder / f"{mutant.id}.ipynb"
    path.write_text(json.dumps(nb))
    return path


def points_lost(mutant: Mutant, folder: Path) -> tuple[float, float, list[str]]:
    """(points lost, points of the lab, names of the failed checks) for the mutant, graded by the hidden checks."""
    results = run_checks(mutant.lab, mutate(mutant, folder), timeout_s=600)
    failed = [r.name for r in results if not r.passed]
    return sum(r.max_points - r.points for r in results), sum(r.max_points for r in results), failed


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.id for m in MUTANTS])
def test_each_classic_mistake_loses_points(mutant, tmp_path):
    lost, total, failed = points_lost(mutant, tmp_path)
    assert lost > 0, f"the hidden checks of {mutant.lab} do not catch '{mutant.mistake}' in {mutant.function}"
    assert lost < total, f"'{mutant.mistake}' in {mutant.function} costs every point of {mutant.lab}: {failed}"


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
