"""Every name a benchmark takes from edgekit still exists, with the attributes and keyword arguments it uses.

The benchmarks run only in `make bench` (minutes each), so a rename in the package would otherwise surface as a
crash there, after the whole test run. This reads each benchmarks/*.py, imports what it imports from edgekit,
and checks `Name.attr` lookups and `Name(keyword=...)` calls on those objects against the real objects.
"""
import ast
import importlib
import inspect
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
SCRIPTS = sorted(f for f in os.listdir(BENCH) if f.endswith(".py"))


def imported(tree):
    """{local name: (module, attribute or None)} for every edgekit import anywhere in the file."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgekit"):
            for a in node.names:
                names[a.asname or a.name] = (node.module, a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("edgekit") and a.asname:
                    names[a.asname] = (a.name, None)
    return names


def resolve(module, attr):
    mod = importlib.import_module(module)
    if attr is None:
        return mod
    if hasattr(mod, attr):
        return getattr(mod, attr)
    return importlib.import_module(module + "." + attr)      # `from edgekit.x import submodule`


def accepts(obj, keyword):
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return True
    return keyword in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def problems(path):
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    objs, found = {}, []
    for local, (module, attr) in imported(tree).items():
        try:
            objs[local] = resolve(module, attr)
        except (ImportError, AttributeError) as e:
            found.append("from {} import {}: {}".format(module, attr, e))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in objs:
            if isinstance(node.ctx, ast.Load) and not hasattr(objs[node.value.id], node.attr):
                found.append("line {}: {}.{} does not exist".format(node.lineno, node.value.id, node.attr))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in objs:
            target = objs[node.func.id]
            if callable(target):
                for kw in node.keywords:
                    if kw.arg and not accepts(target, kw.arg):
                        found.append("line {}: {}() takes no keyword {!r}".format(node.lineno, node.func.id, kw.arg))
    return found


def test_there_are_benchmarks_to_check():
    assert "run_all.py" in SCRIPTS and len(SCRIPTS) >= 10


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_uses_only_what_edgekit_has(script):
    assert problems(os.path.join(BENCH, script)) == []


def test_the_check_catches_a_missing_attribute_and_keyword(tmp_path):
    bad = tmp_path / "bench_bad.py"
    bad.write_text("from edgekit.convert.exits import ExitOptions, parse_exits\n"
                   "ExitOptions.parse('auto:3')\n"
                   "ExitOptions(auto=3, no_such_field=1)\n"
                   "from edgekit.no_such_module import x\n")
    got = problems(str(bad))
    assert any("ExitOptions.parse does not exist" in p for p in got)
    assert any("no_such_field" in p for p in got)
    assert any("no_such_module" in p for p in got)
