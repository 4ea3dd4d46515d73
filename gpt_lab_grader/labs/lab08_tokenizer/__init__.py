"""Lab 8, tokenizer: byte-level BPE encoding from GPT-2's merge ranks, decoding, and learning merges."""
from gpt_lab_grader.labs import LabSpec

SPEC = LabSpec(
    "lab08-tokenizer",
    graded=("bpe_merge", "encode", "decode", "train_bpe"),
    # gpt_lab has no pure-Python BPE: the references are in this lab's scenarios.py; tiktoken's own BPE
    # (the Rust one and its educational Python one) and gpt_lab's tokenizer must not do the work.
    forbidden=("tiktoken.core:Encoding", "tiktoken.core:Encoding.encode", "tiktoken.core:Encoding.encode_ordinary",
               "tiktoken.core:Encoding._encode_single_piece", "tiktoken.core:Encoding._encode_bytes",
               "tiktoken.core:Encoding.encode_single_token",
               "tiktoken.core:Encoding.decode", "tiktoken.core:Encoding.decode_bytes",
               "tiktoken._educational:bpe_encode", "tiktoken._educational:bpe_train",
               "tiktoken._educational:SimpleBytePairEncoding", "gpt_lab.tokenizer:get_tokenizer",
               "gpt_lab.tokenizer:CompactTokenizer"),
)
