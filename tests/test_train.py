import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpt_lab.device import autocast, compute_dtype, cpu_has_bf16
from gpt_lab.model import GPT, GPTConfig
from gpt_lab.loss import IGNORE_INDEX, chunked_lm_loss, lm_loss, shift_labels
from gpt_lab.train import (
    TrainConfig,
    configure_optimizer,
    evaluate,
    lm_batches,
    load_checkpoint,
    lr_at,
    train,
)

HERE = Path(__file__).parent


def tiny_model(seed=0, key_shift=False):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=1, n_head=2, n_embd=16, key_shift=key_shift))


def pattern_data(n=4000):
    return np.tile(np.random.default_rng(0).integers(0, 50, size=37), n // 37 + 1)[:n]


def test_lm_loss_is_cross_entropy_over_learned_positions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    targets = torch.randint(0, 7, (2, 5), generator=g)
    targets[1, 3:] = IGNORE_INDEX
    keep = targets != IGNORE_INDEX
    manual = -torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0][keep].mean()
    torch.testing.assert_close(lm_loss(logits, targets), manual)
    torch.testing.assert_close(lm_loss(logits, targets), F.cross_entropy(logits.transpose(1, 2), targets))
    with pytest.raises(ValueError, match="disagree"):
        lm_loss(logits, targets[:, :4])


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_chunked_lm_loss_gives_pytorchs_loss_and_gradients(chunk):
    """Reference: F.cross_entropy on F.linear, every chunk size (one row; uneven; all rows at once)."""
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(10, 8, generator=g), torch.randn(13, 8, generator=g)
    targets = torch.randint(0, 13, (10,), generator=g)
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    expected = F.cross_entropy(F.linear(h1, w1), targets)
    loss = chunked_lm_loss(h2, w2, targets, chunk=chunk)
    torch.testing.assert_close(loss, expected)
    (2 * expected).backward()
    (2 * loss).backward()  # the upstream gradient scales the stored ones
    torch.testing.assert_close(h2.grad, h1.grad)
    torch.testing.assert_close(w2.grad, w1.grad)
    with torch.no_grad():  # evaluation: the loss alone
        torch.testing.assert_close(chunked_lm_loss(hidden, weight, targets, chunk=chunk), expected.detach())
    with pytest.raises(ValueError, match="disagree"):
        chunked_lm_loss(hidden, weight, targets[:4])


def test_chunked_lm_loss_with_a_frozen_head_gives_only_the_hidden_gradient(monkeypatch):
    """A frozen LM head (fine-tuning freezes the tied embedding) gets no gradient and costs none: the
    hidden states' gradient is still PyTorch's, and no (V x C) product is made."""
    g = torch.Generator().manual_seed(2)
    hidden, weight = torch.randn(10, 8, generator=g), torch.randn(13, 8, generator=g)
    targets = torch.randint(0, 13, (10,), generator=g)
    h1, h2 = hidden.clone().requires_grad_(), hidden.clone().requires_grad_()
    F.cross_entropy(F.linear(h1, weight), targets).backward()
    products = []
    real_matmul = torch.Tensor.__matmul__
    monkeypatch.setattr(torch.Tensor, "__matmul__", lambda a, b: products.append(tuple(a.shape)) or real_matmul(a, b))
    chunked_lm_loss(h2, weight, targets, chunk=4).backward()
    monkeypatch.undo()
    torch.testing.assert_close(h2.grad, h1.grad)
    assert weight.grad is None
    assert products == [(4, 8), (4, 13)] * 2 + [(2, 8), (2, 13)], products  # logits and d hidden per chunk only


def test_chunked_lm_loss_under_bf16_autocast_matches_lm_loss():
    """With bf16 autocast (how SFT trains on a CPU) the loss and gradients agree with autocast's own path to
    bf16 precision."""
    g = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(300, 32, generator=g), 0.1 * torch.randn(500, 32, generator=g)
    targets = torch.randint(0, 500, (300,), generator=g)
    grads = []
    for fn in (lambda h, w: lm_loss(F.linear(h, w)[None], targets[None]), lambda h, w: chunked_lm_loss(h, w, targets)):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fn(h, w)
        loss.backward()
        grads.append((loss.detach(), h.grad, w.grad))
    for ours, theirs in zip(grads[1], grads[0]):
        torch.testing.assert_close(ours, theirs, rtol=2e-2, atol=2e-2 * float(theirs.abs().max()))


def test_shift_labels_ignores_the_last_position():
    labels = torch.tensor([[10, 11, 12, 13], [20, 21, IGNORE_INDEX, IGNORE_INDEX]])
    assert shift_labels(labels).tolist() == [[11, 12, 13, -100], [21, -100, -100, -100]]


def test_warmup_then_cosine_schedule():
    lrs = [lr_at(s, 1.0, 0.1, 10, 110) for s in range(120)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.45 * (1 + np.cos(np.pi * 0.5)))
    assert lrs[110] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[10:110], lrs[11:111]))


def test_optimizer_groups_decay_only_matrices():
    model = tiny_model(key_shift=True)
    opt = configure_optimizer(model, 1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    mixes = {id(b.attn.key_mix) for b in model.transformer.h}  # (n_head, head_dim) mixes, not weights: no decay
    assert mixes and mixes <= {id(p) for p in no_decay["params"]}
    assert all(p.dim() == 1 or id(p) in mixes for p in no_decay["params"])
    n_total = sum(1 for _ in model.parameters())
    assert len(decay["params"]) + len(no_decay["params"]) == n_total


def test_training_lowers_the_loss_and_records_history():
    model = tiny_model()
    data = pattern_data()
    batches = lm_batches(data, data, batch_size=8, block_size=16, seed=0)
    before = evaluate(model, batches, steps=4)["loss"]
    history = train(model, batches, TrainConfig(max_steps=60, lr=1e-2, warmup_steps=5, eval_interval=30,
                                                 eval_steps=4, progress=False))
    after = evaluate(model, batches, steps=4)
    assert after["loss"] < before - 1.0
    assert after["perplexity"] == pytest.approx(np.exp(after["loss"]))
    assert history.step == list(range(1, 61)) and len(history.lr) == 60
    assert history.val_step == [30, 60] and history.tokens == 60 * 8 * 16


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16")
def test_cpu_bf16_autocast_is_opt_in_and_trains():
    model = tiny_model()
    x = torch.randint(0, 50, (2, 16))
    assert compute_dtype("cpu") == torch.float32 and compute_dtype("cpu", cpu_bf16=True) == torch.bfloat16
    with autocast("cpu"):
        assert model(x)[0].dtype == torch.float32                  # the default stays fp32
    with autocast("cpu", cpu_bf16=True):
        assert model(x)[0].dtype == torch.bfloat16                 # matmuls in bf16 when asked
    data = pattern_data()
    batches = lm_batches(data, data, batch_size=8, block_size=16, seed=0)
    before = evaluate(model, batches, steps=4)["loss"]
    train(model, batches, TrainConfig(max_steps=60, lr=1e-2, warmup_steps=5, eval_interval=0, progress=False,
                                      cpu_bf16=True))
    assert evaluate(model, batches, steps=4)["loss"] < before - 1.0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights and optimizer stay fp32


def test_gradient_accumulation_equals_the_big_batch():
    data = pattern_data()
    big = lm_batches(data, data, batch_size=8, block_size=16, seed=1)

    def halves(split, step):
        x, y = big(split, step // 2)
        part = slice(0, 4) if step % 2 == 0 else slice(4, 8)
        return x[part], y[part]

    a, b = tiny_model(), tiny_model()
    config = dict(max_steps=1, lr=1e-2, warmup_steps=1, eval_interval=0, progress=False)
    train(a, big, TrainConfig(**config))
    train(b, halves, TrainConfig(**config, grad_accum=2))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)


def test_resuming_a_checkpoint_reproduces_the_uninterrupted_run(tmp_path):
    data = pattern_data()
    batches = lm_batches(data, data, batch_size=4, block_size=16, seed=2)
    config = dict(max_steps=10, lr=1e-2, warmup_steps=2, eval_interval=5, eval_steps=1, progress=False)
    straight = tiny_model()
    history = train(straight, batches, TrainConfig(**config, checkpoint_path=str(tmp_path / "ck-{step}.pt")))
    half = load_checkpoint(tmp_path / "ck-5.pt")
    assert half["step"] == 5 and half["model_config"]["n_embd"] == 16 and half["optimizer"] is not None
    resumed = tiny_model(seed=123)  # different init: everything must come from the checkpoint
    resumed_history = train(resumed, batches, TrainConfig(**config), resume_from=tmp_path / "ck-5.pt")
    assert resumed_history.step == history.step and resumed_history.val_step == [5, 10]
    for pa, pb in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-6)


def test_missing_and_corrupt_checkpoints_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(RuntimeError, match="corrupt"):
        load_checkpoint(bad)
    torch.save({"model": {}}, bad)
    with pytest.raises(RuntimeError, match="not a gpt_lab checkpoint"):
        load_checkpoint(bad)


def test_ddp_two_processes_match_one_process_with_double_batch(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not found")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run([sys.executable, str(HERE / "ddp_worker.py"), str(one), "8"], check=True, env=env, timeout=300)
    subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(HERE / "ddp_worker.py"), str(two), "4"],
                   check=True, env=env, timeout=300, capture_output=True)
    single, double = json.loads(one.read_text()), json.loads(two.read_text())
    assert single["world"] == 1 and double["world"] == 2
    np.testing.assert_allclose(double["loss"], single["loss"], rtol=1e-4, atol=1e-5)
    assert single["loss"][-1] < single["loss"][0]
