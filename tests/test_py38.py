"""The code that runs on a board keeps to Python 3.8 (JetPack 5) and imports only the stdlib, numpy and itself.

The files checked are the ones `edgekit flash` uploads (RUNTIME_FILES in edgekit/deploy/package.py), plus the
runtime-side modules named explicitly below, so that a file left out of RUNTIME_FILES is still checked.
"""
import ast
import glob
import os
import shutil
import subprocess
import sys
from typing import List

import pytest

from edgekit.deploy.package import RUNTIME_FILES, runtime_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMED = ("edgekit/__init__.py", "edgekit/errors.py", "edgekit/manifest.py", "edgekit/data.py", "edgekit/runtime/*.py")
THIRD_PARTY = {"numpy"}     # the TFLite interpreters are imported by name at run time (runtime/interpreter.py)
# stdlib modules that Python 3.8 does not have (sys.stdlib_module_names is the running interpreter's list)
NEWER_STDLIB = {"zoneinfo", "graphlib", "tomllib", "_tokenize", "wsgiref.types"}
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}
NEWER_ATTRS = {"removeprefix", "removesuffix", "cache", "bit_count", "is_relative_to", "with_stem"}


def _board_files() -> List[str]:
    found = set()
    for pattern in NAMED + tuple(RUNTIME_FILES):
        found.update(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
    return sorted(found)


def _runtime_modules(files: List[str]) -> set:
    mods = set()
    for rel in files:
        mod = rel[:-3].replace("/", ".")
        mods.add(mod[:-len(".__init__")] if mod.endswith(".__init__") else mod)
    return mods


def _annotations(tree: ast.AST) -> List[ast.AST]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs + [node.args.vararg, node.args.kwarg]
            out += [a.annotation for a in args if a is not None and a.annotation is not None]
            out += [node.returns] if node.returns is not None else []
        elif isinstance(node, ast.AnnAssign):
            out.append(node.annotation)
    return out


def problems_in(src: str, name: str, allowed_own: set) -> List[str]:
    """Everything in src that would break on Python 3.8 or import something a board may not have."""
    try:
        tree = ast.parse(src, filename=name, feature_version=(3, 8))
    except SyntaxError as exc:
        return ["{}:{}: not Python 3.8 syntax: {}".format(name, exc.lineno, exc.msg)]
    found = []
    future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                 any(a.name == "annotations" for a in n.names) for n in ast.walk(tree))
    stdlib = set(sys.stdlib_module_names) - NEWER_STDLIB
    for node in ast.walk(tree):
        mods = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            mods = [node.module or ""]
        for mod in mods:
            top = mod.split(".")[0]
            if mod in NEWER_STDLIB or top in NEWER_STDLIB:
                found.append("{}:{}: imports {} (not in Python 3.8)".format(name, node.lineno, mod))
            elif top == "edgekit":
                if mod not in allowed_own:
                    found.append("{}:{}: imports {}, which is not shipped to the board".format(name, node.lineno, mod))
            elif top not in stdlib and top not in THIRD_PARTY:
                found.append("{}:{}: imports {}; allowed: the stdlib, numpy, edgekit's runtime side".format(
                    name, node.lineno, mod))
        if isinstance(node, ast.Attribute) and node.attr in NEWER_ATTRS:
            found.append("{}:{}: uses .{} (Python 3.9+)".format(name, node.lineno, node.attr))
    if not future:
        for ann in _annotations(tree):
            for sub in ast.walk(ann):
                if isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name) and \
                        sub.value.id in BUILTIN_GENERICS:
                    found.append("{}:{}: annotation {}[...] fails at import on 3.8".format(name, sub.lineno, sub.value.id))
                elif isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.BitOr):
                    found.append("{}:{}: annotation X | Y fails at import on 3.8".format(name, sub.lineno))
    return found


def test_every_board_file_is_py38_and_imports_only_what_the_board_has():
    files = _board_files()
    shipped = sorted(f.rel.split("/", 1)[1] for f in runtime_files())
    assert set(files) == set(shipped), "files named here but not uploaded by flash (or the reverse)"
    assert {"edgekit/manifest.py", "edgekit/data.py", "edgekit/errors.py", "edgekit/runtime/runner.py"} <= set(files)
    own = _runtime_modules(files)
    problems = []
    for rel in files:
        with open(os.path.join(ROOT, rel), encoding="utf-8") as fh:
            problems += problems_in(fh.read(), rel, own)
    assert problems == []


@pytest.mark.parametrize("src, expect", [
    ("match x:\n    case 1:\n        pass\n", "not Python 3.8 syntax"),
    ("with (open('a') as f, open('b') as g):\n    pass\n", "not Python 3.8 syntax"),
    ("def f(x: list[int]) -> None:\n    pass\n", "annotation list[...]"),
    ("def f(x: int | None) -> None:\n    pass\n", "annotation X | Y"),
    ("import tensorflow as tf\n", "imports tensorflow"),
    ("from edgekit.convert import convert\n", "not shipped to the board"),
    ("import zoneinfo\n", "not in Python 3.8"),
    ("s = 'ab'.removeprefix('a')\n", ".removeprefix"),
])
def test_the_check_catches_what_breaks_a_py38_board(src, expect):
    own = {"edgekit", "edgekit.errors", "edgekit.runtime"}
    found = problems_in(src, "snippet.py", own)
    assert any(expect in p for p in found), found


def test_py38_check_accepts_what_py38_allows():
    src = ("from __future__ import annotations\nimport numpy as np\nfrom typing import List\n"
           "from edgekit.runtime.policy import exit_rule\n"
           "def f(x: list[int], /, *, y: 'int | None' = None) -> List[int]:\n    if (n := len(x)) > 1:\n"
           "        return x\n    return [n]\n")
    assert problems_in(src, "ok.py", {"edgekit", "edgekit.runtime", "edgekit.runtime.policy"}) == []


def test_board_files_compile_with_a_real_python38_when_there_is_one():
    cands = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8.*/bin/python3.8"))) + [shutil.which("python3.8")]
    py = next((c for c in cands if c and os.access(c, os.X_OK)), None)
    if py is None:
        pytest.skip("no python3.8 interpreter on this machine")
    code = "import sys\nfor p in sys.argv[1:]:\n    compile(open(p).read(), p, 'exec')\n"
    res = subprocess.run([py, "-c", code] + [os.path.join(ROOT, f) for f in _board_files()],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={"PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stdout.decode(errors="replace")
