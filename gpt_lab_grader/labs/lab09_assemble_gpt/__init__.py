"""Lab 9, assembling GPT: LayerNorm, the MLP, a pre-LN block, the whole GPT-2 forward pass, its parameters."""
from gpt_lab_grader.labs import LabSpec

SPEC = LabSpec(
    "lab09-assemble-gpt",
    graded=("LayerNorm", "MLP", "Block", "GPT", "count_parameters"),
    references={"MLP": "gpt_lab.model:MLP", "Block": "gpt_lab.model:Block", "GPT": "gpt_lab.model:GPT"},
    forbidden=("torch.nn:LayerNorm", "torch.nn.functional:layer_norm", "torch:layer_norm", "torch.nn:Transformer",
               "torch.nn:TransformerEncoderLayer", "torch.nn:TransformerDecoderLayer", "gpt_lab.model:GPT.num_params"),
)
