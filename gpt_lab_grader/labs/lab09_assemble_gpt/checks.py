"""Hidden checks of lab 9 (assembling GPT), against torch.nn.functional.layer_norm, gpt_lab's modules and
HuggingFace transformers' GPT2LMHeadModel (random weights from a small GPT2Config: nothing downloaded).

Run by `gpt_lab_grader.checks.run_checks("lab09-assemble-gpt", notebook)`; the student's code is reached
only through the `student` fixture (gpt_lab_grader/labs/adapters.py). Points per graded name: LayerNorm 3,
MLP 2, Block 3, GPT 5, count_parameters 2. Block runs with the reference LayerNorm and MLP, GPT with the
reference Block and LayerNorm (see scenarios.py), so each mistake costs once.
"""
import pytest
import torch
import torch.nn.functional as F

from gpt_lab.model import GPTConfig
from gpt_lab_grader.labs.adapters import assert_number, assert_tensor, expect_tuple
from gpt_lab_grader.labs.lab09_assemble_gpt.scenarios import hf_state_dict, shapes
from gpt_lab_grader.labs.scenarios import tiny_gpt

LAB = "lab09-assemble-gpt"
GPT2_SMALL = 124_439_808
SMALL = dict(vocab_size=61, block_size=32, n_layer=2, n_head=4, n_embd=32)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model_with_random_norms(seed: int, **config):
    """A seeded gpt_lab GPT whose LayerNorm gains and shifts are random too (GPT-2's init leaves them 1 and 0)."""
    model = tiny_gpt(seed, **{**SMALL, **config})
    g = generator(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or "ln_f" in name:
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name.endswith("bias") else 0.5)
                        + (1.0 if name.endswith("weight") else 0.0))
    return model


# --- LayerNorm: 3 points


def layer_norm_case(seed: int, shape, scale: float = 1.0, offset: float = 0.0):
    g = generator(seed)
    x = torch.randn(*shape, generator=g) * scale + offset
    C = shape[-1]
    return x, torch.randn(C, generator=g), torch.randn(C, generator=g), torch.randn(*shape, generator=g)


@pytest.mark.points(1)
def test_layer_norm_values(student):
    """LayerNorm over the last axis matches torch.nn.functional.layer_norm (biased variance, gain and shift)"""
    for seed, shape in enumerate([(2, 5, 16), (7, 3), (1, 1, 1, 48)]):
        x, w, b, grad = layer_norm_case(seed, shape)
        out = expect_tuple(student.scenario("layer_norm_run", x=x, weight=w, bias=b, grad=grad), 4,
                           "the LayerNorm run")[0]
        assert_tensor(out, F.layer_norm(x, (shape[-1],), w, b, 1e-5), f"LayerNorm of a {shape} input",
                      atol=1e-5, rtol=1e-4)


@pytest.mark.points(1)
def test_layer_norm_eps_and_scale(student):
    """LayerNorm adds eps inside the square root, default 1e-5, and works for tiny and offset inputs"""
    for seed, (eps, scale, offset) in enumerate([(1e-5, 1e-3, 0.0), (0.1, 0.05, 0.0), (1e-5, 3.0, 50.0)]):
        x, w, b, grad = layer_norm_case(seed + 10, (3, 4, 24), scale, offset)
        kwargs = dict(x=x, weight=w, bias=b, grad=grad, eps=None if eps == 1e-5 else eps)
        out = expect_tuple(student.scenario("layer_norm_run", **kwargs), 4, "the LayerNorm run")[0]
        assert_tensor(out, F.layer_norm(x, (24,), w, b, eps), f"LayerNorm with eps={eps} of inputs of scale {scale}",
                      atol=1e-4, rtol=1e-4)


@pytest.mark.points(1)
def test_layer_norm_gradients(student):
    """LayerNorm's gradients (input, gain, shift) match PyTorch's: the mean and variance stay in the graph"""
    x, w, b, grad = layer_norm_case(3, (2, 6, 20))
    got = expect_tuple(student.scenario("layer_norm_run", x=x, weight=w, bias=b, grad=grad), 4, "the LayerNorm run")
    xr, wr, br = (t.clone().requires_grad_(True) for t in (x, w, b))
    (F.layer_norm(xr, (20,), wr, br, 1e-5) * grad).sum().backward()
    for value, want, what in zip(got[1:], (xr.grad, wr.grad, br.grad), ("input", "weight", "bias")):
        if value is None:
            raise AssertionError(f"LayerNorm's {what} has no gradient: is it an nn.Parameter / part of the graph?")
        assert_tensor(value, want, f"the gradient with respect to LayerNorm's {what}", atol=1e-4, rtol=1e-4)


# --- MLP: 2 points


@pytest.mark.points(1)
def test_mlp_layout(student):
    """MLP has GPT-2's parameters: c_fc (n_embd -> 4 n_embd) and c_proj (4 n_embd -> n_embd), with biases"""
    want = shapes(tiny_gpt(0, **SMALL).transformer.h[0].mlp)
    got = student.scenario("part_shapes", part="MLP", config=SMALL)
    if got != want:
        raise AssertionError(f"MLP's state dict has {sorted(got)} with shapes {[got[k] for k in sorted(got)]}, "
                             f"expected the names {sorted(want)} and gpt_lab's shapes")


@pytest.mark.points(1)
def test_mlp_output(student):
    """MLP with a gpt_lab MLP's weights gives its output (GPT-2's tanh GELU between the two layers)"""
    mlp = tiny_gpt(4, **SMALL).transformer.h[1].mlp
    g = generator(4)
    with torch.no_grad():  # weights large enough that the pre-activations reach |u| ~ 3, where GELUs differ
        for p in mlp.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    x = torch.randn(3, 7, 32, generator=g)
    with torch.no_grad():
        want = mlp(x)
    got = student.scenario("mlp_run", state=mlp.state_dict(), x=x, config=SMALL)
    assert_tensor(got, want, "the MLP's output", atol=1e-5, rtol=1e-4)


# --- Block: 3 points (with the reference LayerNorm and MLP)


@pytest.mark.points(1)
def test_block_layout(student):
    """Block holds ln_1, attn (gpt_lab's MultiHeadAttention), ln_2 and mlp, in GPT-2's layout"""
    want = shapes(tiny_gpt(0, **SMALL).transformer.h[0])
    got = student.scenario("part_shapes", part="Block", config=SMALL)
    if got != want:
        raise AssertionError(f"Block's state dict has the names {sorted(got)}, expected {sorted(want)}")


@pytest.mark.points(2)
def test_block_output(student):
    """Block is pre-LN: x + attn(ln_1(x)), then + mlp(ln_2(.)), and gives gpt_lab's Block's output"""
    model = model_with_random_norms(5)
    x = torch.randn(2, 9, 32, generator=generator(5))
    mask = torch.ones(9, 9, dtype=torch.bool).triu(1)
    outs = []
    for block in model.transformer.h:
        with torch.no_grad():
            want = block(x, mask)[0]
        outs.append((block.state_dict(), want))
    for n, (state, want) in enumerate(outs):
        got = student.scenario("block_run", state=state, x=x, config=SMALL)
        assert_tensor(got, want, f"block {n}'s output", atol=1e-5, rtol=1e-4)


# --- GPT: 5 points (with the reference Block and LayerNorm)


@pytest.mark.points(1)
def test_gpt_layout(student):
    """GPT's state dict has GPT-2's names: transformer.wte/wpe/h.i.*/ln_f and a lm_head tied to wte"""
    want = shapes(tiny_gpt(0, **SMALL))
    got = student.scenario("part_shapes", part="GPT", config=SMALL)
    if got != want:
        extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
        raise AssertionError(f"GPT's state dict differs from GPT-2's layout: unexpected {extra[:4]}, missing "
                             f"{missing[:4]}" + ("" if extra or missing else " (same names, other shapes)"))


@pytest.mark.points(2)
def test_gpt_logits_match_gpt_lab(student):
    """GPT loaded with load_hf_gpt2_state_dict gives gpt_lab's logits (embeddings, positions, blocks, ln_f, tied head)"""
    model = model_with_random_norms(6)
    for B, T in [(2, 11), (1, 32)]:
        idx = torch.randint(61, (B, T), generator=generator(6 + T))
        with torch.no_grad():
            want = model(idx)[0]
        got = student.scenario("gpt_logits", state=hf_state_dict(model), idx=idx, config=SMALL)
        assert_tensor(got, want, f"the logits of a ({B}, {T}) batch", atol=1e-4, rtol=1e-4)


@pytest.mark.points(1)
def test_gpt_logits_match_transformers(student):
    """GPT loaded with HuggingFace GPT2LMHeadModel's weights gives its logits"""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(7)
    config = transformers.GPT2Config(vocab_size=97, n_positions=24, n_embd=48, n_layer=3, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    g = generator(7)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if ".ln_" in name or "ln_f" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    idx = torch.randint(97, (2, 24), generator=g)
    with torch.no_grad():
        want = hf(idx).logits
    state = {k: v.detach().clone() for k, v in hf.state_dict().items()}
    ours = dict(vocab_size=97, block_size=24, n_layer=3, n_head=4, n_embd=48)
    got = student.scenario("gpt_logits", state=state, idx=idx, config=ours)
    assert_tensor(got, want, "the logits of transformers' GPT-2 weights", atol=1e-4, rtol=1e-4)


@pytest.mark.points(1)
def test_gpt2_small_has_124m_parameters(student):
    """GPT(GPTConfig()) has GPT-2 small's 124,439,808 parameters (the LM head shares wte's matrix)"""
    got = student.scenario("gpt_parameters", config={})
    if got != GPT2_SMALL:
        hint = " (an untied lm_head adds 38,597,376)" if got == GPT2_SMALL + 50257 * 768 else ""
        raise AssertionError(f"GPT(GPTConfig()) has {got:,} parameters, expected 124,439,808{hint}")


# --- count_parameters: 2 points


@pytest.mark.points(1)
def test_count_parameters_gpt2_small(student):
    """count_parameters(GPTConfig()) is 124,439,808"""
    (got,) = expect_tuple(student.scenario("counted", configs=[{}]), 1, "count_parameters")
    assert_number(got, GPT2_SMALL, "count_parameters(GPTConfig())", kind=int, rel=0, abs_tol=0)


SIZES = [dict(n_layer=24, n_head=16, n_embd=1024), dict(n_layer=48, n_head=25, n_embd=1600), SMALL,
         dict(vocab_size=1000, block_size=64, n_layer=5, n_head=2, n_embd=40)]


@pytest.mark.points(1)
def test_count_parameters_other_sizes(student):
    """count_parameters follows |V| d + L d + N (12 d^2 + 13 d) + 2 d for every size (checked on meta models)"""
    got = expect_tuple(student.scenario("counted", configs=SIZES), len(SIZES), "count_parameters")
    for config, value in zip(SIZES, got):
        with torch.device("meta"):
            want = sum(p.numel() for p in tiny_gpt(0, **{**dict(vocab_size=50257, block_size=1024), **config}
                                                    ).parameters())
        assert_number(value, want, f"count_parameters of {config}", kind=int, rel=0, abs_tol=0)
