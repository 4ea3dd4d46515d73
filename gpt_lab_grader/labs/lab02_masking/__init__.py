"""Lab 2, masking: causal, padding and combined masks, and collating a padded batch."""
from gpt_lab_grader.labs import LabSpec

SPEC = LabSpec(
    "lab02-masking",
    graded=("causal_mask", "padding_mask", "combined_mask", "collate"),
    references={"causal_mask": "gpt_lab.attention:causal_mask", "padding_mask": "gpt_lab.attention:padding_mask",
                "combined_mask": "gpt_lab.attention:combined_mask", "collate": "gpt_lab.data:collate"},
    forbidden=("gpt_lab.data:pad_sequences", "torch.nn.utils.rnn:pad_sequence"),
)
