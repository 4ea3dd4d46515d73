"""Lab 3, teacher forcing: shifted labels, the language-model loss, one training step."""
from gpt_lab_grader.labs import LabSpec

SPEC = LabSpec(
    "lab03-teacher-forcing",
    graded=("shift_labels", "lm_loss", "train_step"),
    references={"shift_labels": "gpt_lab.loss:shift_labels", "lm_loss": "gpt_lab.loss:lm_loss"},
    forbidden=("gpt_lab.train:train", "gpt_lab.train:_forward_loss"),
    call_timeout_s=60.0,
)
