"""Scenarios of lab09-assemble-gpt: the student's LayerNorm, MLP, Block and GPT, with GPT-2-format weights.

See `gpt_lab_grader.labs.scenarios` for the contract (`fn(impl, **kwargs)`, plain results, CPU, seconds).
A module never crosses the sandbox's pipe: the checks send state dicts and inputs, the scenarios build
the student's module, load the weights and send back outputs.

Points per idea (issue 19): the Block checks run the student's Block with the reference LayerNorm and MLP
in its namespace, and the GPT checks run the student's GPT with the reference Block and LayerNorm
(`reference_parts`), so a wrong LayerNorm costs the LayerNorm's points once, not every later check's.
The references here are written out (no nn.LayerNorm / F.layer_norm, which the lab forbids, and not
gpt_lab's modules, which the tripwire watches while student code runs).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from gpt_lab.attention import MultiHeadAttention, causal_mask
from gpt_lab.model import GPTConfig, load_hf_gpt2_state_dict
from gpt_lab_grader.labs.scenarios import reference_parts, scenario

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


class ReferenceLayerNorm(nn.Module):
    def __init__(self, n_embd: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_embd))
        self.bias = nn.Parameter(torch.zeros(n_embd))

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias


class ReferenceMLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x):
        u = self.c_fc(x)
        return self.c_proj(0.5 * u * (1 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3))))


class ReferenceBlock(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = ReferenceLayerNorm(config.n_embd)
        self.attn = MultiHeadAttention(config.n_embd, config.n_head)
        self.ln_2 = ReferenceLayerNorm(config.n_embd)
        self.mlp = ReferenceMLP(config)

    def forward(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)[0]
        return x + self.mlp(self.ln_2(x))


def config_of(config: dict) -> GPTConfig:
    return GPTConfig(**config)


def hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A gpt_lab-layout model's weights in HuggingFace's GPT-2 layout (Conv1D weights transposed, lm_head)."""
    state = {k: (v.t() if k.endswith(CONV1D) else v).detach().clone() for k, v in model.state_dict().items()}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return state


def shapes(module: nn.Module) -> dict[str, list[int]]:
    return {name: list(value.shape) for name, value in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Scenarios


@scenario
def layer_norm_run(impl, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, grad: torch.Tensor,
                   eps: float | None = None):
    """Your LayerNorm with given weight and bias: its output and the gradients of (output * grad).sum()."""
    ln = impl.LayerNorm(x.shape[-1]) if eps is None else impl.LayerNorm(x.shape[-1], eps=eps)
    with torch.no_grad():
        ln.weight.copy_(weight)
        ln.bias.copy_(bias)
    x = x.clone().requires_grad_(True)
    out = ln(x)
    (out * grad).sum().backward()
    return out.detach(), x.grad, ln.weight.grad, ln.bias.grad


@scenario
def part_shapes(impl, part: str, config: dict) -> dict:
    """The names and shapes of your module's state dict (the layout GPT-2's weights load into)."""
    cfg = config_of(config)
    with reference_parts(impl, LayerNorm=ReferenceLayerNorm, MLP=ReferenceMLP,
                         **({"Block": ReferenceBlock} if part == "GPT" else {})):
        module = getattr(impl, part)(cfg)
    return shapes(module)


@scenario
def mlp_run(impl, state: dict, x: torch.Tensor, config: dict) -> torch.Tensor:
    """Your MLP with the weights of a gpt_lab MLP."""
    mlp = impl.MLP(config_of(config))
    mlp.load_state_dict(state)
    with torch.no_grad():
        return mlp(x)


@scenario
def block_run(impl, state: dict, x: torch.Tensor, config: dict) -> torch.Tensor:
    """Your pre-LN Block (with the reference LayerNorm and MLP) with the weights of a gpt_lab Block."""
    with reference_parts(impl, LayerNorm=ReferenceLayerNorm, MLP=ReferenceMLP):
        block = impl.Block(config_of(config)).eval()
        block.load_state_dict(state)
        with torch.no_grad():
            return block(x, causal_mask(x.shape[1]))


@scenario
def gpt_logits(impl, state: dict, idx: torch.Tensor, config: dict) -> torch.Tensor:
    """Your GPT (with the reference Block and LayerNorm) loading GPT-2-format weights"""
    with reference_parts(impl, LayerNorm=ReferenceLayerNorm, MLP=ReferenceMLP, Block=ReferenceBlock):
        model = impl.GPT(config_of(config)).eval()
        load_hf_gpt2_state_dict(model, state)
        with torch.no_grad():
            return model(idx)


@scenario
def gpt_parameters(impl, config: dict) -> int:
    """Your GPT's parameters (tied weights once), built on the meta device"""
    with reference_parts(impl, LayerNorm=ReferenceLayerNorm, MLP=ReferenceMLP, Block=ReferenceBlock):
        with torch.device("meta"):
            model = impl.GPT(config_of(config))
    return sum(p.numel() for p in model.parameters())


@scenario
def counted(impl, configs: list) -> list:
    """Your count_parameters of GPT configurations"""
    return [impl.count_parameters(config_of(c)) for c in configs]
