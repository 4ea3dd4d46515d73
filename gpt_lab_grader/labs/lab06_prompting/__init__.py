"""Lab 6, prompting: few-shot prompts, completion, accuracy against the number of shots."""
from gpt_lab_grader.labs import LabSpec

_GRADED = ("few_shot_prompt", "complete", "accuracy_vs_shots")
SPEC = LabSpec(
    "lab06-prompting",
    graded=_GRADED,
    references={name: f"gpt_lab.prompting:{name}" for name in _GRADED},
)
