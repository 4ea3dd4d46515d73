"""Small builders shared by the test modules (tests/ is on sys.path under pytest's default import mode)."""
import torch

from gpt_lab.model import GPT, GPTConfig


def peaked_gpt(vocab_size: int = 50, block_size: int = 64, seed: int = 0, std: float = 0.5) -> GPT:
    """A random 2-layer GPT whose weight matrices are drawn with a large `std`, in eval mode.

    Large weights give peaked next-token distributions that depend on the position (a wrong
    position offset changes the tokens), unlike the near-uniform ones of a freshly initialised model.
    """
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, std)
    return model.eval()
