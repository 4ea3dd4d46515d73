"""The sandbox runs a notebook's graded code in a limited child process: hostile code fails cleanly."""
import json
import time
from pathlib import Path

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


BORROWING_ATTENTION = '''
import importlib
import types
import gpt_lab.attention
from gpt_lab.attention import scaled_dot_product_attention as _helper  # an alias under another name

def scaled_dot_product_attention(q, k, v, mask=None, _keep=_helper):  # held by a default argument
    cells = getattr(_keep, "__closure__", None)  # a wrapper's closure would hold the original
    original = cells[0].cell_contents if cells else _keep
    return original(q, k, v, mask)

def split_heads(x, n_head):  # a method of the reference class, without constructing it
    return gpt_lab.attention.MultiHeadAttention.split_heads(types.SimpleNamespace(n_head=n_head), x)

def merge_heads(x):  # a fresh copy of the module
    return importlib.reload(gpt_lab.attention).scaled_dot_product_attention(x, x, x)[0]

def multi_head_attention(x, *args):  # through vars() of the module, found by name
    return vars(importlib.import_module("gpt_lab." + "attention"))["scaled_dot_" + "product_attention"](x, x, x)
'''

BORROWING_MASKS = '''
import functools
from gpt_lab.model import causal_mask as _causal  # gpt_lab.model imported it before the grader armed it
from gpt_lab.sft import collate as _collate

def causal_mask(T, T_k=None, device=None):
    return _causal(T, T_k, device)

def padding_mask(attention_mask):
    return (attention_mask == 0)[:, None, None, :]

def collate(sequences, pad_id, side="right", max_length=None, truncation_side="right",
            _impl=functools.partial(_collate)):  # a partial, made when the function is defined
    return _impl(sequences, pad_id, side, max_length, truncation_side)
'''

COPYING_ATTENTION = '''
import importlib.util, marshal, os, types
import gpt_lab.attention
import torch

def scaled_dot_product_attention(q, k, v, mask=None):  # gpt_lab's source run again, under other names
    source = open(gpt_lab.attention.__file__).read()
    space = {"__name__": "my_attention"}
    exec(compile(source.replace("def scaled_dot_product_attention(", "def my_attention("), "mine.py", "exec"), space)
    return space["my_attention"](q, k, v, mask)

def split_heads(x, n_head):  # a code object out of gpt_lab's bytecode (its .pyc if fresh, else made and unmarshalled)
    path = gpt_lab.attention.__file__
    pyc, stat = importlib.util.cache_from_source(path), os.stat(path)
    data = open(pyc, "rb").read() if os.path.exists(pyc) else b""
    if data[4:16] != bytes(4) + (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + stat.st_size.to_bytes(4, "little"):
        data = bytes(16) + marshal.dumps(compile(open(path).read(), path, "exec"))
    consts = marshal.loads(data[16:]).co_consts
    body = next(c for c in consts if isinstance(c, types.CodeType) and c.co_name == "MultiHeadAttention")
    code = next(c for c in body.co_consts if isinstance(c, types.CodeType) and c.co_name == "split_heads")
    mine = types.FunctionType(code.replace(co_name="mine"), vars(gpt_lab.attention))
    return mine(types.SimpleNamespace(n_head=n_head), x)

def merge_heads(x):  # the tripwire's own private copy of the original
    dispatch = vars(gpt_lab.attention)["__gpt_lab_tripwire__"]
    originals = next(c.cell_contents for c in dispatch.__closure__ if isinstance(c.cell_contents, dict))
    sdpa = next(fn for label, fn in originals.values() if label.endswith(".scaled_dot_product_attention"))
    return sdpa(x, x, x)[0].transpose(1, 2).flatten(2)

def multi_head_attention(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_head, mask=None):
    B, T, C = x.shape  # honest, and calling gpt_lab's allowed helpers
    q, k, v = (x @ c_attn_weight.T + c_attn_bias).split(C, dim=-1)
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-2, -1)) / (C // n_head) ** 0.5
    w = torch.softmax(scores.masked_fill(gpt_lab.attention.causal_mask(T), float("-inf")), dim=-1)
    return (w @ v).transpose(1, 2).reshape(B, T, C) @ c_proj_weight.T + c_proj_bias, w
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
    limits = Limits(call_timeout_s=3, memory_mb=3000, wall_factor=100)  # CPU seconds: the same on a loaded machine
    with Sandbox(nb, "lab01-attention", limits, course=REPO) as sandbox:
        with pytest.raises(ReferenceCall, match="calls gpt_lab.attention.scaled_dot_product_attention"):
            sandbox.call("scaled_dot_product_attention", x, x, x)
        with pytest.raises(BadResult, match="subclass of torch.Tensor"):
            sandbox.call("split_heads", x, 2)
        with pytest.raises(ForbiddenOperation, match="open .*lab01_attention/checks.py"):
            sandbox.call("merge_heads", x)
        with pytest.raises(CallTimeout, match="did not finish within 3 CPU seconds"):
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


def test_reference_reached_by_any_path_is_flagged(tmp_path):
    """An alias, a default argument, a closure, a method of the reference class, vars() of the module: each
    call is flagged for the function that made it; reloading gpt_lab to get fresh copies is refused."""
    x = torch.randn(2, 3, 4)
    nb = write_notebook(tmp_path / "a.ipynb", BORROWING_ATTENTION)
    with Sandbox(nb, "lab01-attention", Limits(call_timeout_s=20, memory_mb=3000), course=REPO) as sandbox:
        with pytest.raises(ReferenceCall, match="`scaled_dot_product_attention` calls gpt_lab.attention.scaled_dot"):
            sandbox.call("scaled_dot_product_attention", x, x, x)
        with pytest.raises(ReferenceCall, match="`split_heads` calls gpt_lab.attention.MultiHeadAttention.split_heads"):
            sandbox.call("split_heads", torch.randn(2, 3, 4), 2)
        # the reload is refused: at its exec, or earlier, when it would write gpt_lab's bytecode cache
        # (a fresh checkout has no __pycache__ yet; an edited module has a stale .pyc in it)
        with pytest.raises(ForbiddenOperation,
                           match=r"running gpt_lab's code again|gpt_lab/__pycache__(/\S+)? \(writing there\)"):
            sandbox.call("merge_heads", torch.randn(1, 2, 3, 4))
        with pytest.raises(ReferenceCall, match="`multi_head_attention` calls"):
            sandbox.call("multi_head_attention", x)
    nb = write_notebook(tmp_path / "b.ipynb", BORROWING_MASKS)
    with Sandbox(nb, "lab02-masking", Limits(call_timeout_s=20, memory_mb=3000), course=REPO) as sandbox:
        with pytest.raises(ReferenceCall, match="`causal_mask` calls gpt_lab.attention.causal_mask"):
            sandbox.call("causal_mask", 4)
        with pytest.raises(ReferenceCall, match="`collate` calls gpt_lab.data.collate"):
            sandbox.call("collate", [[1, 2], [3]], 0)
        assert sandbox.call("padding_mask", torch.ones(2, 3)).shape == (2, 1, 1, 3)  # the rest is graded


def test_copies_of_the_reference_made_at_run_time_are_flagged(tmp_path):
    """gpt_lab's source exec'd under other names, a code object unmarshalled from its bytecode, the tripwire's
    private copy of the original: fresh function objects the tripwire does not know; the copy watch flags each
    for the function that ran it, and an honest function in the same notebook is graded."""
    x = torch.randn(2, 3, 4)
    nb = write_notebook(tmp_path / "a.ipynb", COPYING_ATTENTION)
    with Sandbox(nb, "lab01-attention", Limits(call_timeout_s=20, memory_mb=3000), course=REPO) as sandbox:
        with pytest.raises(ReferenceCall, match="`scaled_dot_product_attention` calls gpt_lab.attention.scaled_dot"):
            sandbox.call("scaled_dot_product_attention", x, x, x)
        with pytest.raises(ReferenceCall, match="`split_heads` calls gpt_lab.attention.MultiHeadAttention.split_heads"):
            sandbox.call("split_heads", x, 2)
        with pytest.raises(ReferenceCall, match="`merge_heads` calls gpt_lab.attention.scaled_dot_product_attention"):
            sandbox.call("merge_heads", torch.randn(2, 2, 3, 2))
        weights = [torch.randn(12, 4), torch.randn(12), torch.randn(4, 4), torch.randn(4)]
        y, w = sandbox.call("multi_head_attention", x, *weights, 2)
        assert y.shape == (2, 3, 4) and w.shape == (2, 2, 3, 3)
    evasive = """
import sys
import gpt_lab.attention

def causal_mask(T, T_k=None, device=None):  # the trace function switched off first
    sys.settrace(None)
    space = {}
    exec(compile(open(gpt_lab.attention.__file__).read(), "mine.py", "exec"), space)
    return space["causal_mask"](T, T_k, device)
"""
    nb = write_notebook(tmp_path / "b.ipynb", evasive)
    with Sandbox(nb, "lab02-masking", Limits(call_timeout_s=20, memory_mb=3000), course=REPO) as sandbox:
        with pytest.raises(ReferenceCall, match="`causal_mask` replaced the grader's trace function"):
            sandbox.call("causal_mask", 4)


def test_writes_into_the_packages_and_the_course_are_refused(tmp_path):
    import gpt_lab

    package = Path(gpt_lab.__file__).parent
    targets = [package / "pwned.py", REPO / "pwned.txt", REPO / "solutions" / "pwned.txt"]
    code = f"""
import os, shutil
def causal_mask(T, T_k=None, device=None):
    for path in {[str(t) for t in targets]!r}:
        try:
            open(path, "w").write("x")
        except OSError:
            pass
    return None
def padding_mask(attention_mask):
    os.remove({str(package / "attention.py")!r})
"""
    nb = write_notebook(tmp_path / "w.ipynb", code)
    with Sandbox(nb, "lab02-masking", Limits(call_timeout_s=20, memory_mb=3000), course=REPO) as sandbox:
        with pytest.raises(ForbiddenOperation, match="open .*pwned.py .writing there"):
            sandbox.call("causal_mask", 3)
        with pytest.raises(ForbiddenOperation, match="os.remove .*attention.py"):
            sandbox.call("padding_mask", torch.ones(1, 2))
    assert not [t for t in targets if t.exists()] and (package / "attention.py").exists()
