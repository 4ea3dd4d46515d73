"""Small builders shared by the test modules (tests/ is on sys.path under pytest's default import mode)."""
import torch

from gpt_lab_grader.labs.scenarios import tiny_gpt
from gpt_lab.model import GPT


def peaked_gpt(vocab_size: int = 50, block_size: int = 64, seed: int = 0, std: float = 0.5) -> GPT:
    """`tiny_gpt` (2 layers, 2 heads, 32 dims, eval mode) with its weight matrices redrawn with a large `std`.

    Large weights give peaked next-token distributions that depend on the position (a wrong
    position offset changes the tokens), unlike the near-uniform ones of a freshly initialised model.
    """
    model = tiny_gpt(seed, vocab_size=vocab_size, block_size=block_size)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
    return model
