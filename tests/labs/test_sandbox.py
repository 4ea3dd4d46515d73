"""The sandbox runs a notebook's graded code in a limited child process: hostile code fails cleanly."""
import json
import time

import pytest
import torch

from grader import LABS, REPO

from gpt_lab_grader.sandbox import (BadResult, CallTimeout, Crashed, ForbiddenOperation, Limits,
                                     MissingDefinition, OutputLimit, ReferenceCall, Sandbox, StudentError)

HOSTILE_ATTENTION = '''
import gpt_lab.attention
import torch

class Liar(torch.Tensor):
    def __eq__(self, other):
        return True

def scaled_dot_product_attention(q, k, v, mask=None):
    return gpt_lab.attention.scaled_dot_product_attention(q, k, v, mask)

def split_heads(x, n_head):
    return x.as_subclass(Liar)

def merge_heads(x):
    return open("{checks}").read()

def multi_head_attention(x, *args):
    while True:
        pass
'''

HOSTILE_MASKS = '''
import os, subprocess
import torch

def causal_mask(T, T_k=None, device=None):
    os._exit(3)

def padding_mask(attention_mask):
    while True:
        print("spam " * 1000)

def combined_mask(attention_mask, T, T_k=None, device=None):
    try:
        subprocess.run(["ls"])
    except Exception:
        pass  # swallowing the refusal does not help
    return torch.zeros(T, T, dtype=torch.bool)

def collate(sequences, pad_id, side="right", max_length=None, truncation_side="right"):
    hoard = [torch.ones(2**27) for _ in range(100)]
'''


def write_notebook(path, *sources):
    cells = [{"cell_type": "code", "source": s, "metadata": {}, "outputs": [], "execution_count": None}
             for s in sources]
    path.write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}))
    return path


def test_hostile_attention_lab(tmp_path):
    nb = write_notebook(tmp_path / "a.ipynb", "print('top-level code is skipped'); import sys; sys.exit(1)",
                        HOSTILE_ATTENTION.format(checks=LABS["lab01-attention"].check_file))
    x = torch.randn(2, 3, 4)
    with Sandbox(nb, "lab01-attention", Limits(call_timeout_s=3, memory_mb=3000), course=REPO) as sandbox:
        with pytest.raises(ReferenceCall, match="calls gpt_lab.attention.scaled_dot_product_attention"):
            sandbox.call("scaled_dot_product_attention", x, x, x)
        with pytest.raises(BadResult, match="subclass of torch.Tensor"):
            sandbox.call("split_heads", x, 2)
        with pytest.raises(ForbiddenOperation, match="open .*lab01_attention/checks.py"):
            sandbox.call("merge_heads", x)
        with pytest.raises(CallTimeout, match="did not finish within 3 s"):
            sandbox.call("multi_head_attention", x)
        start = time.monotonic()
        with pytest.raises(CallTimeout):  # the same name fails at once the second time
            sandbox.call("multi_head_attention", x)
        assert time.monotonic() - start < 1
        with pytest.raises(BadResult):  # a fresh child took over after the timeout
            sandbox.call("split_heads", x, 2)
        assert sandbox.starts == 2


def test_hostile_masking_lab(tmp_path):
    nb = write_notebook(tmp_path / "b.ipynb", HOSTILE_MASKS)
    limits = Limits(call_timeout_s=20, memory_mb=2000, output_bytes=100_000)
    with Sandbox(nb, "lab02-masking", limits, course=REPO) as sandbox:
        with pytest.raises(OutputLimit, match="printed more than 100000 bytes"):
            sandbox.call("padding_mask", torch.ones(2, 3))
        with pytest.raises(ForbiddenOperation, match="subprocess.Popen"):
            sandbox.call("combined_mask", None, 3)
        with pytest.raises(StudentError, match="ran out of memory"):
            sandbox.call("collate", [[1]], 0)
        with pytest.raises(Crashed, match="exited .status 3"):
            sandbox.call("causal_mask", 4)
        assert len(sandbox.output) <= 100_000


def test_missing_and_broken_definitions(tmp_path):
    nb = write_notebook(tmp_path / "c.ipynb",
                        "def shift_labels(labels, ignore_index=-100):\n    return labels.flip(-1)",
                        "def lm_loss(logits, targets, ignore_index=-100):\n    return undefined_global",
                        "def train_step(model, optimizer, x, y):\n    return 1.0\ntrain_step = train_step(1, 2, 3, 4)")
    with Sandbox(nb, "lab03-teacher-forcing", Limits(call_timeout_s=20), course=REPO) as sandbox:
        got = sandbox.call("shift_labels", torch.tensor([[1, 2, 3]]))
        assert type(got) is torch.Tensor and got.tolist() == [[3, 2, 1]]
        with pytest.raises(StudentError, match="NameError.*only your imports"):
            sandbox.call("lm_loss", torch.zeros(1, 1, 2), torch.zeros(1, 1, dtype=torch.long))
        assert sandbox.found == ["shift_labels", "lm_loss", "train_step"]  # the re-binding call was skipped
    nb = write_notebook(tmp_path / "d.ipynb", "def shift_labels_renamed(labels):\n    return labels")
    with Sandbox(nb, "lab03-teacher-forcing", Limits(call_timeout_s=20), course=REPO) as sandbox:
        with pytest.raises(MissingDefinition, match="`shift_labels` is not defined in the notebook"):
            sandbox.call("shift_labels", torch.tensor([[1]]))
