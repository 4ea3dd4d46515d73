"""The one seam between the hidden lab checks and a student's notebook (like CS336's adapters).

A check module sets `LAB = "lab01-attention"` and asks for the `student` fixture:
`student.causal_mask(5)` runs the notebook's `causal_mask` in the sandbox (a separate, limited
process) and returns plain tensors/numbers; `student.scenario("name", **kwargs)` runs a scenario
of the lab's `scenarios.py` with the student's definitions plugged in. `gpt_lab_grader.checks` loads
this module as a pytest plugin (`-p gpt_lab_grader.labs.adapters`), so the fixture reaches every check.

Which notebook: $GPT_LAB_SUBMISSION, else the lab's solution notebook in $GPT_LAB_COURSE (default: the
current directory). Limits come from $GPT_LAB_CALL_TIMEOUT (CPU seconds per call), $GPT_LAB_CPU_BUDGET
(CPU seconds for all calls), $GPT_LAB_WALL_FACTOR, $GPT_LAB_MEMORY_MB, $GPT_LAB_DEADLINE (wall backstop),
$GPT_LAB_DENY and $GPT_LAB_SANDBOXED (set by `gpt_lab_grader.checks.run_checks`).

Also here: type-strict comparison helpers whose messages never print the expected values.
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from gpt_lab_grader.labs import LABS
from gpt_lab_grader.sandbox import Limits, Sandbox, StudentError


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "points(n): points a hidden lab check is worth")


class Student:
    """Attribute access to the notebook's graded names, each call running in the sandbox."""

    def __init__(self, sandbox: Sandbox):
        self._sandbox = sandbox

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args, **kwargs):
            return self._sandbox.call(name, *args, **kwargs)

        call.__name__ = name
        return call

    def scenario(self, name: str, **kwargs):
        return self._sandbox.scenario(name, **kwargs)


def open_sandbox(lab: str) -> Sandbox:
    """The sandbox of `lab` for the notebook and limits the environment names (see above)."""
    spec = LABS[lab]
    course = os.environ.get("GPT_LAB_COURSE") or os.getcwd()
    notebook = os.environ.get("GPT_LAB_SUBMISSION") or spec.notebook(course)
    limits = Limits(call_timeout_s=float(os.environ.get("GPT_LAB_CALL_TIMEOUT", spec.call_timeout_s)),
                    memory_mb=int(os.environ.get("GPT_LAB_MEMORY_MB", 4096)),
                    wall_factor=float(os.environ.get("GPT_LAB_WALL_FACTOR", Limits.wall_factor)))
    budget = float(os.environ["GPT_LAB_CPU_BUDGET"]) if os.environ.get("GPT_LAB_CPU_BUDGET") else None
    deny = [p for p in os.environ.get("GPT_LAB_DENY", "").split(os.pathsep) if p]
    deadline = float(os.environ["GPT_LAB_DEADLINE"]) if os.environ.get("GPT_LAB_DEADLINE") else None
    return Sandbox(notebook, lab, limits, deny=deny, deadline=deadline, course=course,
                   sandboxed=os.environ.get("GPT_LAB_SANDBOXED", "1") != "0", cpu_budget_s=budget)


@pytest.fixture(scope="module")
def student(request) -> Student:
    """The submission of the check module's lab (`LAB`), behind the sandbox."""
    sandbox = open_sandbox(request.module.LAB)
    yield Student(sandbox)
    sandbox.close()


def namespace(**functions) -> SimpleNamespace:
    """An implementation namespace for scenarios (e.g. the references)."""
    return SimpleNamespace(**functions)


# ---------------------------------------------------------------------------------------------
# Type-strict comparisons. Messages say what is wrong, never what the right values are.


def expect_tensor(value, what: str) -> torch.Tensor:
    if type(value) is not torch.Tensor:
        raise AssertionError(f"{what} should be a torch.Tensor, got {type(value).__name__}")
    return value


def expect_tuple(value, n: int, what: str) -> tuple:
    if not isinstance(value, (tuple, list)) or len(value) != n:
        got = f"a {type(value).__name__} of length {len(value)}" if isinstance(value, (tuple, list)) \
            else f"a {type(value).__name__}"
        raise AssertionError(f"{what} should return a tuple of {n} values, got {got}")
    return tuple(value)


def assert_tensor(actual, expected: torch.Tensor, what: str, *, atol: float | None = None,
                  rtol: float | None = None, exact: bool = False, where: torch.Tensor | None = None) -> None:
    """`actual` is a real torch.Tensor with `expected`'s shape and dtype, and (close to) its values.

    `where`: a bool tensor selecting the positions whose values matter (e.g. real tokens, not padding).
    """
    actual = expect_tensor(actual, what)
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    if actual.dtype != expected.dtype:
        raise AssertionError(f"{what} has dtype {actual.dtype}, expected {expected.dtype}")
    if where is not None:
        actual, expected = actual[where], expected[where]
    if exact or expected.dtype in (torch.bool, torch.int64, torch.int32, torch.int16, torch.uint8):
        wrong = actual != expected
        if wrong.any():
            first = tuple(int(i) for i in wrong.nonzero()[0])
            raise AssertionError(f"{what} is wrong at {int(wrong.sum())} of {wrong.numel()} positions "
                                 f"(the first at index {first})")
        return
    actual_nan, expected_nan = torch.isnan(actual), torch.isnan(expected)
    if actual_nan.any() and not expected_nan[actual_nan].all():
        raise AssertionError(f"{what} contains NaN at {int((actual_nan & ~expected_nan).sum())} positions "
                             "where a number is expected")
    try:
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, equal_nan=True)
    except AssertionError as exc:
        summary = [line.strip() for line in str(exc).splitlines()
                   if line.strip().startswith(("Mismatched", "Greatest absolute"))]
        raise AssertionError(f"{what} has wrong values ({'; '.join(summary)})") from None


def assert_number(actual, expected: float, what: str, *, kind: type = float, rel: float = 1e-4,
                  abs_tol: float = 1e-6) -> None:
    """`actual` is a Python number of type `kind` close to `expected`."""
    if type(actual) is not kind:
        raise AssertionError(f"{what} should be a Python {kind.__name__}, got {type(actual).__name__}")
    if not abs(actual - expected) <= max(abs_tol, rel * abs(expected)):
        raise AssertionError(f"{what} is off by {abs(actual - expected):.3g}")


def expect_value_error(call, *args, what: str) -> None:
    """`call(*args)` (student code, run in the sandbox) must raise a ValueError of its own."""
    try:
        call(*args)
    except StudentError as exc:
        if "raised ValueError" not in str(exc):
            raise AssertionError(f"{what} should raise a ValueError, but {exc}") from None
        return
    raise AssertionError(f"{what} should raise a ValueError, but returned normally")
