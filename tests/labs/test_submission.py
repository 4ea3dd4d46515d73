"""Reading submitted notebooks and extracting their graded definitions (no student code runs here)."""
import json

import pytest

from gpt_lab_grader.submission import SubmissionError, extract_definitions, read_notebook, strip_magics


def notebook(*cells: str, markdown: str = "# Lab") -> dict:
    code = [{"cell_type": "code", "source": src, "metadata": {}, "outputs": [], "execution_count": None}
            for src in cells]
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {},
            "cells": [{"cell_type": "markdown", "source": markdown, "metadata": {}}] + code}


def write(tmp_path, content: str):
    path = tmp_path / "submission.ipynb"
    path.write_text(content)
    return path


@pytest.mark.parametrize("content, problem", [
    ('{"cells": [', "not valid JSON"),
    ("[1, 2, 3]", "not a Jupyter notebook"),
    ('{"nbformat": 3, "cells": []}', "version 4"),
    ('{"nbformat": 4, "cells": [{"cell_type": "code", "source": 5}]}', "cell 0 is malformed"),
])
def test_unreadable_notebooks_raise_clear_errors(tmp_path, content, problem):
    with pytest.raises(SubmissionError, match=problem):
        read_notebook(write(tmp_path, content))


def test_missing_file(tmp_path):
    with pytest.raises(SubmissionError, match="missing"):
        read_notebook(tmp_path / "nothing.ipynb")


def test_reads_a_valid_notebook(tmp_path):
    nb = notebook("x = 1")
    assert read_notebook(write(tmp_path, json.dumps(nb)))["cells"][1]["source"] == "x = 1"


def test_keeps_definitions_and_skips_top_level_code():
    nb = notebook(
        "import torch\nfrom math import sqrt as root\nLIMIT = -100\nDTYPE = torch.float32\nmodel = train()\nprint(1)",
        "def f(x):\n    return x + LIMIT\n\nfor i in range(10**9):\n    pass\n\nclass C:\n    pass",
    )
    out = extract_definitions(nb, ["f", "C", "g"])
    assert out.found == {"f": 2, "C": 2}
    assert set(out.missing) == {"g"} and "`g` is not defined" in out.missing["g"]
    code = out.source
    for kept in ("import torch", "from math import sqrt as root", "LIMIT = -100", "DTYPE = torch.float32", "def f",
                 "class C"):
        assert kept in code
    for skipped in ("train()", "print(1)", "range(10 ** 9)"):
        assert skipped not in code
    assert len(out.skipped) == 3


def test_kept_statements_keep_their_line_numbers():
    out = extract_definitions(notebook("print('a')\n\n\ndef f():\n    return 1"), ["f"])
    (index, code, tree), = out.cells
    assert index == 1 and tree.body[0].lineno == 4 and code.splitlines()[3] == "def f():"


def test_the_last_definition_wins_and_imports_count():
    out = extract_definitions(notebook("def f():\n    pass", "from gpt_lab.attention import causal_mask",
                                       "def f():\n    return 2"), ["f", "causal_mask"])
    assert out.found == {"f": 3, "causal_mask": 2}


def test_power_and_calls_are_not_constants():
    out = extract_definitions(notebook("N = 10 ** 10 ** 10\nM = make()\nK = (1, 2.5, 'a', None, -3)"), [])
    assert "K = (1, 2.5, 'a', None, -3)" in out.source
    assert "N =" not in out.source and "M =" not in out.source


def test_magics_are_commented_out():
    assert strip_magics("%matplotlib inline\n!pip install x\nx = 1") == "# %matplotlib inline\n# !pip install x\nx = 1"
    out = extract_definitions(notebook("%%time\ndef f():\n    return 1"), ["f"])
    assert out.found == {"f": 1}


def test_syntax_error_is_named_for_the_missing_function():
    out = extract_definitions(notebook("def f(:\n    pass", "def g():\n    pass"), ["f", "g"])
    assert out.found == {"g": 2}
    assert "cell 2 has a syntax error" in out.missing["f"]


def test_renamed_function_is_missing():
    out = extract_definitions(notebook("def my_causal_mask(T):\n    pass"), ["causal_mask"])
    assert "renamed" in out.missing["causal_mask"]
