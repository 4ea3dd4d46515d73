"""Lab 7, supervised fine-tuning: the chat template, SFT examples with a loss mask, exact-match evaluation."""
from gpt_lab_grader.labs import LabSpec

_GRADED = ("apply_chat_template", "build_sft_example", "evaluate_exact_match")
SPEC = LabSpec(
    "lab07-sft",
    graded=_GRADED,
    references={name: f"gpt_lab.sft:{name}" for name in _GRADED},
    forbidden=("gpt_lab.sft:predict", "gpt_lab.sft:sft_batches"),
)
