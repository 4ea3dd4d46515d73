"""Lab 4, decoding: temperature, top-k, top-p, repetition penalties, beam search."""
from gpt_lab_grader.labs import LabSpec

_GRADED = ("apply_temperature", "top_k_filter", "top_p_filter", "apply_penalties", "beam_search")
SPEC = LabSpec(
    "lab04-decoding",
    graded=_GRADED,
    references={name: f"gpt_lab.decoding:{name}" for name in _GRADED},
    forbidden=("gpt_lab.decoding:process_logits", "gpt_lab.decoding:token_counts", "gpt_lab.decoding:generate",
               "gpt_lab.decoding:stream_generate"),
)
