"""Lab 1, attention: scaled dot-product attention, splitting and merging heads, multi-head attention."""
from gpt_lab_grader.labs import LabSpec

SPEC = LabSpec(
    "lab01-attention",
    graded=("scaled_dot_product_attention", "split_heads", "merge_heads", "multi_head_attention"),
    references={"scaled_dot_product_attention": "gpt_lab.attention:scaled_dot_product_attention",
                "split_heads": "gpt_lab.attention:MultiHeadAttention.split_heads"},
    forbidden=("gpt_lab.attention:MultiHeadAttention", "gpt_lab.attention:fused_attention",
               "torch.nn.functional:scaled_dot_product_attention",
               "torch.nn.functional:multi_head_attention_forward", "torch.nn:MultiheadAttention"),
)
