"""The copy watch (borrowing.CopyWatch): a copy of a reference made at run time is reported when it runs,
however it was made and named; honest code, gpt_lab's allowed helpers and every other loaded function are not."""
import gc
import importlib
import inspect
import marshal
import sys
import types

import torch

import gpt_lab.attention
import gpt_lab.data
import gpt_lab.model  # noqa: F401 (loaded, as in the grader's child)
import gpt_lab.train  # noqa: F401
from grader import LABS

from gpt_lab_grader.borrowing import CopyWatch, _nested, _reference_code, fingerprint, resolve

LAB01 = [*LABS["lab01-attention"].references.values(), *LABS["lab01-attention"].forbidden]
SOURCE = inspect.getsource(gpt_lab.attention)


def traced(watch, fn, *args):
    """fn(*args) with the watch's trace function set, as the sandbox sets it around a graded call."""
    outer = sys.gettrace()
    sys.settrace(watch.trace)
    try:
        return fn(*args)
    finally:
        sys.settrace(outer)


def fresh_module(source=SOURCE, filename="not_gpt_lab.py", optimize=-1):
    space = {"__name__": "not_gpt_lab"}
    exec(compile(source, filename, "exec", optimize=optimize), space)
    return space


def test_copies_made_from_the_source_or_the_bytecode_are_reported():
    hits = []
    watch = CopyWatch(LAB01, hits.append)
    x = torch.randn(2, 3, 4)
    renamed = SOURCE.replace("def scaled_dot_product_attention(", "def my_attention(")
    for space in (fresh_module(renamed), fresh_module(renamed, optimize=2)):  # optimize=2: no docstrings
        traced(watch, space["my_attention"], x, x, x)
        assert hits == ["gpt_lab.attention.scaled_dot_product_attention"]
        hits.clear()
    module = marshal.loads(marshal.dumps(compile(SOURCE, gpt_lab.attention.__file__, "exec")))  # as in a .pyc
    body = next(c for c in module.co_consts if isinstance(c, types.CodeType) and c.co_name == "MultiHeadAttention")
    code = next(c for c in body.co_consts if isinstance(c, types.CodeType) and c.co_name == "split_heads")
    mine = types.FunctionType(code.replace(co_name="mine", co_filename="mine.py"), vars(gpt_lab.attention))
    traced(watch, mine, types.SimpleNamespace(n_head=2), x)
    assert hits == ["gpt_lab.attention.MultiHeadAttention.split_heads"]
    hits.clear()
    traced(watch, fresh_module()["MultiHeadAttention"], 4, 2)  # a class: its own __init__
    assert hits == ["gpt_lab.attention.MultiHeadAttention"]


def test_honest_code_and_allowed_helpers_are_not_reported():
    hits = []
    watch = CopyWatch(LAB01, hits.append)

    def scaled_dot_product_attention(q, k, v, mask=None):
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return weights @ v, weights

    x = torch.randn(2, 3, 4)
    traced(watch, scaled_dot_product_attention, x, x, x, gpt_lab.attention.causal_mask(3))
    traced(watch, gpt_lab.attention.combined_mask, torch.ones(2, 3), 3)  # gpt_lab's helpers that lab 1 allows
    traced(watch, gpt_lab.data.collate, [[1, 2], [3]], 0)
    assert hits == []
    pasted = compile(SOURCE, "<cell 3>", "exec")  # the notebook's own cells (a pasted copy: the AST match's)
    watch.own(pasted)
    space = {"__name__": "__main__"}
    exec(pasted, space)
    traced(watch, space["scaled_dot_product_attention"], x, x, x)
    assert hits == []


def test_no_loaded_function_looks_like_a_reference():
    """Every code object of every function loaded with gpt_lab, torch and every lab's scenarios (the grader
    child's company) against every lab's references: only the references themselves match."""
    for spec in LABS.values():
        importlib.import_module(spec.scenario_module)
    targets = [t for spec in LABS.values() for t in (*spec.references.values(), *spec.forbidden)]
    watch = CopyWatch(targets, print)
    assert len(watch.labels) > 40  # every target with Python code has a fingerprint
    references = {}  # id -> code (code objects compare by content: identity is what counts here)
    for target in targets:
        try:
            code = _reference_code(inspect.getattr_static(*resolve(target)))
        except (ImportError, AttributeError):
            continue
        if code is not None:
            references[id(code)] = code
    gc.collect()  # modules other tests exec'd (reference cycles) are garbage, not loaded code
    codes = {id(c): c for f in gc.get_objects() if type(f) is types.FunctionType for c in _nested(f.__code__)}
    assert len(codes) > 10_000
    lookalikes = [(c.co_filename, c.co_name, watch.label(c)) for key, c in codes.items()
                  if watch.label(c) is not None and key not in references]
    assert lookalikes == []
    assert {watch.label(c) for c in references.values()} == set(watch.labels.values())


def test_fingerprint_ignores_names_lines_and_docstrings_only():
    a = compile('def f(x, y):\n    """Doc."""\n    z = x + y\n    return g(z, dim=1)\n', "a.py", "exec").co_consts[0]
    b = compile('\n\ndef h(p, q):\n    w = p + q\n    return g(w, dim=1)\n', "b.py", "exec").co_consts[0]
    c = compile('def f(x, y):\n    z = x + y\n    return g(z, dim=2)\n', "a.py", "exec").co_consts[0]
    d = compile('def f(x, y):\n    z = x + y\n    return k(z, dim=1)\n', "a.py", "exec").co_consts[0]
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(c) and fingerprint(a) != fingerprint(d)
