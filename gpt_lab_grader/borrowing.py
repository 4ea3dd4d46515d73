"""Borrowing the reference: calls to it at run time (the tripwire) and copies of its source (the AST match).

The tripwire (child side, installed by `sandbox._child_main` before any student code runs) makes every
reference implementation of a graded function report when it runs, whatever path reached it: the names
`from gpt_lab.attention import x as y`, `gpt_lab.model.x` (a re-export), `importlib.import_module(...)`,
a method of a reference class, a closure or `functools.partial` that holds the function, a default
argument. It does not rename or wrap anything: it replaces the *code* of the function object itself
(`fn.__code__`) by a trampoline that reports, then runs a private copy of the original code; every
alias holds that same function object, so every alias reports. Classes report through their own
`__init__`; C functions (torch's fused attention), which have no code object, are replaced in every
loaded module that holds them. Running a loaded gpt_lab module's code again (`importlib.reload`,
`runpy`), which would make fresh copies, is refused by the audit hook (`loaded_sources`).

The copy watch (child side too) covers the copies the tripwire cannot know: code made at run time from
gpt_lab's source text (`exec(open(gpt_lab.attention.__file__).read())` under another file or function name),
from its bytecode (`marshal` of the cached `.pyc`, a code object taken out of it, `code.replace`), or the
tripwire's own private copy of the original. While a graded function runs, a trace function
(`sys.settrace`, Python calls only) looks at each code object the first time it starts and reports it if
its `fingerprint` (bytecode, constants, global and attribute names, recursively; not the names of the
function, its file, its arguments and locals, nor its line numbers and docstring) equals a reference's.
Code compiled from the notebook's own cells is exempt (a copy pasted into the notebook is the AST match's
business: "review", not zeroed). An edited copy (a renamed global, a line added) is not caught.

The AST match (grader side, no student code runs): a graded function whose syntax tree, with docstrings,
annotations and the names of its arguments and locals normalised away, equals its reference's tree, is
a copy of the reference; the grade table marks it "review" (an instructor decides).
"""
from __future__ import annotations

import ast
import dis
import importlib
import inspect
import os
import sys
import textwrap
import types
from collections.abc import Callable, Iterable

DISPATCH = "__gpt_lab_tripwire__"  # the global name the trampolines call, in each reference's module


def resolve(target: str):
    """(owner, attribute name) of "module:attr" or "module:Class.method"."""
    module_name, _, attr = target.partition(":")
    owner = importlib.import_module(module_name)
    *parents, last = attr.split(".")
    for part in parents:
        owner = getattr(owner, part)
    return owner, last


def _trampoline(fn: types.FunctionType, key: int) -> types.CodeType:
    source = f"def {fn.__name__}(*args, **kwargs):\n    return {DISPATCH}({key}, args, kwargs)\n"
    namespace: dict = {}
    exec(compile(source, fn.__code__.co_filename, "exec"), namespace)  # trusted, before any student code
    return namespace[fn.__name__].__code__


def install_tripwire(targets: Iterable[str], hit: Callable[[str], None]) -> list[str]:
    """Make each target ("module:function", "module:Class" or "module:Class.method") call `hit(label)`
    whenever it runs, through any alias. Returns the labels armed (unresolvable targets are skipped:
    a renamed reference must not stop grading; CI checks that every target resolves)."""
    originals: dict[int, tuple[str, Callable]] = {}

    def dispatch(key: int, args: tuple, kwargs: dict):
        label, original = originals[key]
        hit(label)
        return original(*args, **kwargs)

    def patch(fn: types.FunctionType, label: str) -> bool:
        """Replace fn's code in place; False where that is impossible (a closure, e.g. `super()`)."""
        if fn.__closure__ or fn.__code__.co_freevars:
            return False
        if fn.__globals__.get(DISPATCH, dispatch) is not dispatch:
            return False
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, None)
        copy.__kwdefaults__ = fn.__kwdefaults__
        copy.__qualname__ = fn.__qualname__
        key = len(originals)
        originals[key] = (label, copy)
        fn.__globals__[DISPATCH] = dispatch
        fn.__code__ = _trampoline(fn, key)
        if signature is not None:
            fn.__signature__ = signature
        return True

    def wrap(fn: Callable, label: str) -> Callable:
        def wrapper(*args, **kwargs):
            hit(label)
            return fn(*args, **kwargs)
        wrapper.__name__ = getattr(fn, "__name__", "wrapper")
        wrapper.__qualname__ = getattr(fn, "__qualname__", wrapper.__name__)
        wrapper.__doc__ = getattr(fn, "__doc__", None)
        return wrapper

    armed = []
    for target in targets:
        try:
            owner, attr = resolve(target)
            obj = inspect.getattr_static(owner, attr)
        except (ImportError, AttributeError):
            continue
        label = target.replace(":", ".")
        if isinstance(obj, (staticmethod, classmethod)):
            obj = obj.__func__
        if isinstance(obj, type):
            init = obj.__dict__.get("__init__")
            if not (isinstance(init, types.FunctionType) and patch(init, label)):
                obj.__init__ = wrap(obj.__init__, label)
        elif isinstance(obj, types.FunctionType):
            if not patch(obj, label):
                setattr(owner, attr, wrap(obj, label))
        else:  # a C function: replace it wherever a loaded module holds it
            wrapper = wrap(obj, label)
            for module in list(sys.modules.values()):
                try:
                    holders = [name for name, value in vars(module).items() if value is obj]
                except TypeError:
                    continue
                for name in holders:
                    setattr(module, name, wrapper)
            if getattr(owner, attr, None) is obj:
                setattr(owner, attr, wrapper)
        armed.append(label)
    return armed


_NOP = dis.opmap["NOP"]  # `compile(..., optimize=2)` leaves one where a docstring was


def fingerprint(code: types.CodeType) -> tuple:
    """What a copy of `code` compiled from the same source shares with it, whatever it is named: each
    instruction (NOPs dropped) with its constant (nested code by fingerprint) or its global or attribute name
    or its plain argument, and the argument counts. Not the names of the function, its file, arguments and
    locals, nor line numbers or the docstring (so `compile(..., optimize=2)` makes no difference either)."""
    ops = []
    for ins in dis.get_instructions(code):
        if ins.opcode == _NOP:
            continue
        if ins.opcode in dis.hasconst:
            value = code.co_consts[ins.arg]
            ops.append((ins.opname, fingerprint(value) if isinstance(value, types.CodeType) else (type(value), value)))
        elif ins.opcode in dis.hasname:
            ops.append((ins.opname, ins.argval))
        else:
            ops.append((ins.opname, ins.arg))
    return _shape(code) + (tuple(ops),)


def _shape(code: types.CodeType) -> tuple:
    """A cheap first test (most code is judged by it alone): argument counts and the global and attribute
    names, which a copy shares too."""
    return code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_names


def _nested(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _nested(const)


def _reference_code(obj) -> types.CodeType | None:
    """The code that runs when a target runs: a function's (through `functools.wraps` wrappers), a class's
    own `__init__`'s; None for C functions and classes without their own `__init__`."""
    obj = getattr(obj, "__func__", obj)
    if isinstance(obj, type):
        obj = obj.__dict__.get("__init__")
    obj = inspect.unwrap(obj) if callable(obj) else obj
    code = getattr(obj, "__code__", None)
    if not isinstance(code, types.CodeType):
        return None
    if DISPATCH in code.co_names:
        raise RuntimeError("CopyWatch must see the references before install_tripwire replaces their code")
    return code


class CopyWatch:
    """Report (`hit(label)`) every run of a copy of a target's code, however the copy was made.

    `trace` is a `sys.settrace` function: set it while a graded function runs (the sandbox does, around each
    call). Each code object is judged once, the first time it starts (kept by identity, so it stays judged);
    `own(code)` exempts the notebook's own compiled cells. Build it before `install_tripwire` (which replaces
    the references' code)."""

    def __init__(self, targets: Iterable[str], hit: Callable[[str], None]):
        self.labels: dict[tuple, str] = {}
        for target in targets:
            try:
                owner, attr = resolve(target)
                code = _reference_code(inspect.getattr_static(owner, attr))
            except (ImportError, AttributeError):
                continue
            if code is not None:
                self.labels.setdefault(fingerprint(code), target.replace(":", "."))
        self._shapes = {key[:4] for key in self.labels}
        self._hit = hit
        self._judged: dict[int, tuple[types.CodeType, str | None]] = {}  # id(code) -> (code, label or None)

    def own(self, code: types.CodeType) -> None:
        """Never report `code` or the code nested in it (the notebook's cells, compiled by the grader)."""
        for inner in _nested(code):
            self._judged[id(inner)] = (inner, None)

    def label(self, code: types.CodeType) -> str | None:
        """The reference `code` is a copy of, or None."""
        judged = self._judged.get(id(code))
        if judged is None or judged[0] is not code:
            label = self.labels.get(fingerprint(code)) if _shape(code) in self._shapes else None
            judged = self._judged[id(code)] = (code, label)
        return judged[1]

    def trace(self, frame, event, arg):
        if event == "call":
            label = self.label(frame.f_code)
            if label is not None:
                self._hit(label)
        return None  # no line events


def loaded_sources(packages: Iterable[str] = ("gpt_lab",)) -> frozenset[str]:
    """The real paths of the source files of every loaded module of `packages`: code compiled from one of
    them runs again only through `importlib.reload`, `runpy` or an `exec` of its code, which would make
    fresh, unarmed copies of the references (the audit hook refuses that; a first import is fine)."""
    files = set()
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in packages and getattr(module, "__file__", None):
            files.add(os.path.realpath(module.__file__))
    return frozenset(files)


# ---------------------------------------------------------------------------------------------
# The AST match (grader side)


class _Normalise(ast.NodeTransformer):
    """Docstrings, annotations and the names of arguments and locals -> canonical forms."""

    def __init__(self, local: set[str]):
        self.names: dict[str, str] = {}
        self.local = local

    def _rename(self, name: str) -> str:
        if name not in self.local:
            return name
        return self.names.setdefault(name, f"_v{len(self.names)}")

    def visit_FunctionDef(self, node):
        node.name = "_f"
        node.returns = None
        node.decorator_list = []
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:] or [ast.Pass()]
        node.body = body
        self.generic_visit(node)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_arg(self, node):
        node.arg = self._rename(node.arg)
        node.annotation = None
        node.type_comment = None
        return node

    def visit_Name(self, node):
        node.id = self._rename(node.id)
        return node

    def visit_AnnAssign(self, node):
        assign = ast.Assign(targets=[node.target], value=node.value or ast.Constant(None))
        return self.visit(ast.copy_location(assign, node))

    def visit_Expr(self, node):  # a bare string (a comment-like docstring) anywhere
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None
        return self.generic_visit(node)


def _locals(fn: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
    return names


def normalised(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    """A canonical dump of a function (or class) definition: equal for copies that only rename locals
    and arguments, reword or drop docstrings and comments, or change annotations and formatting."""
    import copy

    tree = copy.deepcopy(fn)
    return ast.dump(_Normalise(_locals(tree)).visit(tree), annotate_fields=False, include_attributes=False)


def _reference_node(target: str) -> ast.AST | None:
    try:
        owner, attr = resolve(target)
        obj = inspect.getattr_static(owner, attr)
        obj = getattr(obj, "__func__", obj)
        source = textwrap.dedent(inspect.getsource(obj))
    except (ImportError, AttributeError, OSError, TypeError):
        return None
    tree = ast.parse(source)
    return tree.body[0] if tree.body else None


def copied_references(extraction, references: dict[str, str]) -> dict[str, str]:
    """Graded name -> reference label for each graded definition of `extraction` (see
    `submission.extract_definitions`) whose normalised tree equals its reference's."""
    mine: dict[str, ast.AST] = {}
    for _, _, module in extraction.cells:
        for stmt in module.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and stmt.name in references:
                mine[stmt.name] = stmt  # the last definition wins, as when it runs
    copies = {}
    for name, node in mine.items():
        reference = _reference_node(references[name])
        if reference is None or type(reference) is not type(node) or _size(reference) < MIN_COPY_NODES:
            continue  # a one-line reference is written the same way by many who never saw it
        if normalised(reference) == normalised(node):
            copies[name] = references[name].replace(":", ".")
    return copies


MIN_COPY_NODES = 60  # syntax-tree nodes (docstring included) below which a match says nothing


def _size(node: ast.AST) -> int:
    return sum(1 for _ in ast.walk(node))
