"""Lab 5, KV cache: the cache, cached next-token logits, cached greedy generation."""
from gpt_lab_grader.labs import LabSpec

SPEC = LabSpec(
    "lab05-kv-cache",
    graded=("KVCache", "next_token_logits", "greedy_generate"),
    references={"KVCache": "gpt_lab.kv_cache:KVCache", "next_token_logits": "gpt_lab.decoding:next_token_logits",
                "greedy_generate": "gpt_lab_grader.labs.lab05_kv_cache.scenarios:reference_greedy_generate"},
    forbidden=("gpt_lab.decoding:generate", "gpt_lab.decoding:stream_generate", "gpt_lab.decoding:beam_search",
               "gpt_lab.decoding:time_per_token"),
)
