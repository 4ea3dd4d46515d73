"""Hidden checks of lab 3 (teacher forcing), against gpt_lab's references.

Run by `gpt_lab_grader.checks.run_checks("lab03-teacher-forcing", notebook)`; the student's
code is reached only through the `student` fixture (gpt_lab_grader/labs/adapters.py).
"""
import pytest
import torch

from gpt_lab_grader.labs.adapters import assert_number, assert_tensor, expect_tuple, namespace
from gpt_lab_grader.labs.lab03_teacher_forcing import scenarios
from gpt_lab_grader.sandbox import StudentError
from gpt_lab.loss import IGNORE_INDEX, lm_loss, shift_labels

LAB = "lab03-teacher-forcing"


def reference_train_step(model, optimizer, x, y):
    """forward, gpt_lab's lm_loss, zero_grad, backward, step; the loss before the update."""
    model.train()
    loss = lm_loss(model(x)[0], y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


REFERENCE = namespace(shift_labels=shift_labels, lm_loss=lm_loss, train_step=reference_train_step)


def random_targets(B, T, V, seed, ignored=0.3):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(V, (B, T), generator=g)
    return targets.masked_fill(torch.rand(B, T, generator=g) < ignored, IGNORE_INDEX)


# --- shift_labels


@pytest.mark.points(1)
@pytest.mark.parametrize("B, T, ignore_index", [(2, 5, IGNORE_INDEX), (1, 1, IGNORE_INDEX), (4, 9, -1)])
def test_shift_labels(student, B, T, ignore_index):
    """shift_labels: targets[:, t] = labels[:, t + 1], the last position ignore_index"""
    labels = random_targets(B, T, 50, seed=B * T)
    got = student.shift_labels(labels.clone(), ignore_index)
    assert_tensor(got, shift_labels(labels, ignore_index), f"shift_labels of a {(B, T)} batch")


@pytest.mark.points(1)
def test_shift_labels_keeps_dtype(student):
    """shift_labels keeps the dtype of its input (int32 in, int32 out)"""
    labels = torch.randint(30, (3, 6), dtype=torch.int32)
    assert_tensor(student.shift_labels(labels), shift_labels(labels), "shift_labels of an int32 batch")


# --- lm_loss


@pytest.mark.points(1)
@pytest.mark.parametrize("B, T, V", [(2, 7, 13), (1, 1, 5), (5, 3, 101)])
def test_lm_loss(student, B, T, V):
    """lm_loss is the mean next-token cross-entropy over the targets that are not ignored"""
    logits = torch.randn(B, T, V, generator=torch.Generator().manual_seed(V)) * 3
    targets = random_targets(B, T, V, seed=V + 1)
    targets[0, 0] = 1  # at least one target counts
    assert_tensor(student.lm_loss(logits, targets), lm_loss(logits, targets), f"lm_loss on {(B, T, V)} logits",
                  atol=1e-5, rtol=1e-5)


@pytest.mark.points(1)
def test_lm_loss_single_target(student):
    """lm_loss with every target ignored but one, and a custom ignore_index"""
    logits = torch.randn(2, 4, 9, generator=torch.Generator().manual_seed(3))
    targets = torch.full((2, 4), -1)
    targets[1, 2] = 8
    assert_tensor(student.lm_loss(logits, targets, -1), lm_loss(logits, targets, -1), "lm_loss", atol=1e-5, rtol=1e-5)


@pytest.mark.points(1)
def test_lm_loss_low_precision_logits(student):
    """lm_loss of bfloat16 logits is computed in float32"""
    logits = torch.randn(3, 5, 17, generator=torch.Generator().manual_seed(4)).bfloat16()
    targets = random_targets(3, 5, 17, seed=5)
    targets[0, 0] = 2
    assert_tensor(student.lm_loss(logits, targets), lm_loss(logits, targets), "lm_loss of bfloat16 logits",
                  atol=1e-4, rtol=1e-4)


@pytest.mark.points(1)
def test_lm_loss_rejects_mismatched_shapes(student):
    """lm_loss raises ValueError when logits (B, T, V) and targets (B, T) disagree"""
    try:
        student.lm_loss(torch.randn(2, 5, 7), torch.zeros(2, 4, dtype=torch.long))
    except StudentError as exc:
        if "raised ValueError" not in str(exc):
            raise AssertionError(f"expected a ValueError, but {str(exc).split(' (cell')[0]}") from None
        return
    raise AssertionError("lm_loss returned normally for logits (2, 5, 7) and targets (2, 4)")


@pytest.mark.points(2)
def test_lm_loss_gradient(student):
    """lm_loss can be differentiated: its gradient with respect to the logits is right (zero where ignored)"""
    logits = torch.randn(2, 6, 11, generator=torch.Generator().manual_seed(6))
    targets = random_targets(2, 6, 11, seed=7, ignored=0.5)
    targets[0, 0] = 3
    loss, grad = expect_tuple(student.scenario("lm_loss_and_grad", logits=logits, targets=targets), 2,
                              "the gradient check")
    want_loss, want_grad = scenarios.lm_loss_and_grad(REFERENCE, logits=logits, targets=targets)
    assert_tensor(loss, want_loss, "the loss", atol=1e-5, rtol=1e-5)
    assert_tensor(grad, want_grad, "the gradient of the loss with respect to the logits", atol=1e-6, rtol=1e-4)


# --- train_step


@pytest.mark.points(2)
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_train_step(student, optimizer):
    """train_step does forward, loss, zero_grad, backward and one optimizer step, and returns the loss as a float"""
    # no biases: a key bias gets a zero gradient up to rounding, which Adam would blow up to a full step
    got = student.scenario("train_steps", steps=3, seed=7, optimizer=optimizer, lr=0.05, bias=False)
    want = scenarios.train_steps(REFERENCE, steps=3, seed=7, optimizer=optimizer, lr=0.05, bias=False)
    if not isinstance(got, dict) or set(got) != set(want):
        raise AssertionError("the train_step scenario returned something unexpected")
    if not isinstance(got["losses"], list) or len(got["losses"]) != 3:
        raise AssertionError("train_step should return one loss per call")
    for step, (loss, want_loss) in enumerate(zip(got["losses"], want["losses"])):
        assert_number(loss, want_loss, f"the loss returned by train_step at step {step}", rel=1e-4)
    if got["training"] is not True:
        raise AssertionError("train_step should leave the model in training mode (model.train())")
    for name, value in want["state"].items():
        assert_tensor(got["state"].get(name), value, f"the weight {name} after 3 steps", atol=1e-5, rtol=1e-4)


@pytest.mark.points(2)
def test_short_training_run(student):
    """a short training run with your train_step learns (the loss falls) and follows the reference curve"""
    got = student.scenario("short_training", steps=60, seed=8)
    want = scenarios.short_training(REFERENCE, steps=60, seed=8)
    if not isinstance(got, list) or len(got) != len(want) or not all(type(v) is float for v in got):
        raise AssertionError("train_step should return one Python float per step")
    first, last = sum(got[:5]) / 5, sum(got[-5:]) / 5
    if not last < first - 1.0:
        raise AssertionError(f"the training loss did not fall enough (from about {first:.2f} to {last:.2f})")
    assert_tensor(torch.tensor(got), torch.tensor(want), "the loss curve", atol=1e-2, rtol=1e-2)
