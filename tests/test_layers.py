"""The package's shape, read from the source: imports go down the layers and never round in a cycle (every import
counts, those inside functions too), no file over 400 lines, no function over 60.

Layers, bottom up: shared modules (errors, manifest, targets, data, power_model, signing, ...) -> runtime ->
bench (its board half ships with the runtime) -> deploy (drives boards from the laptop) -> fit (thresholds,
numpy only) -> convert (TensorFlow)
-> optimize (searches over conversions) -> cli. KNOWN_* list what is still being taken apart elsewhere, as exact
pairs; an entry that no longer exists fails the test, so the lists only shrink.
"""
import ast
import os
import subprocess
import sys
from typing import Dict, Iterator, List, Set, Tuple

from tests.conftest import ROOT

PACKAGE = os.path.join(ROOT, "edgekit")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
SHARED, RUNTIME, BENCH, DEPLOY, FIT, CONVERT, OPTIMIZE, CLI = range(8)
LAYER_NAMES = ("shared", "runtime", "bench", "deploy", "fit", "convert", "optimize", "cli")
# The first package below edgekit/ decides; top-level modules are shared unless named here.
PACKAGES = {"runtime": RUNTIME, "bench": BENCH, "deploy": DEPLOY, "fit": FIT, "convert": CONVERT, "models": CONVERT,
            "optimize": OPTIMIZE, "cli": CLI}
TOP_LEVEL = {"__main__": CLI}     # python -m edgekit: the CLI

KNOWN_CYCLE_EDGES = set()   # type: Set[Tuple[str, str]]
KNOWN_UPWARD = set()   # type: Set[Tuple[str, str]]
KNOWN_LONG_FUNCTIONS = set()   # type: Set[Tuple[str, str]]


def _modules() -> Dict[str, str]:
    """Module name -> path, for every .py file under edgekit/."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                mod = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                out[mod[:-len(".__init__")] if mod.endswith(".__init__") else mod] = path
    return out


def _imported_names(tree: ast.AST, package: str) -> Iterator[str]:
    """Every dotted name an import statement anywhere in the tree may load (relative imports resolved)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            yield base
            yield from ("{}.{}".format(base, a.name) for a in node.names)


def import_graph() -> Dict[str, Set[str]]:
    """Module -> the edgekit modules it imports (a name resolves to the longest module it starts with)."""
    modules = _modules()
    graph = {}   # type: Dict[str, Set[str]]
    for mod, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        package = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
        targets = set()
        for name in _imported_names(tree, package):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != mod and name.startswith("edgekit"):
                targets.add(name)
        graph[mod] = targets
    return graph


def layer(mod: str) -> int:
    parts = mod.split(".")
    if len(parts) == 1:
        return SHARED
    if len(parts) > 2 or parts[1] in PACKAGES:
        return PACKAGES.get(parts[1], SHARED)
    if "cli" in parts[1]:
        return CLI
    return TOP_LEVEL.get(parts[1], SHARED)


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on, out = {}, {}, [], set(), []   # type: ignore
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycles():
    graph = import_graph()
    stale = sorted(e for e in KNOWN_CYCLE_EDGES if e[1] not in graph.get(e[0], ()))
    assert stale == [], "KNOWN_CYCLE_EDGES lists imports that are gone: drop them"
    pruned = {m: {t for t in ts if (m, t) not in KNOWN_CYCLE_EDGES} for m, ts in graph.items()}
    found = cycles(pruned)
    shown = ["{}: {}".format(" <-> ".join(c), sorted((a, b) for a in c for b in graph[a] if b in c)) for c in found]
    assert shown == []


def test_known_cycle_edges_are_really_cycles():
    graph = import_graph()
    in_cycles = {m for c in cycles(graph) for m in c}
    assert sorted(e for e in KNOWN_CYCLE_EDGES if not {e[0], e[1]} <= in_cycles) == []


def test_imports_only_go_down_the_layers():
    graph = import_graph()
    up = {(m, t) for m, ts in graph.items() for t in ts if layer(t) > layer(m)}
    assert sorted(KNOWN_UPWARD - up) == [], "KNOWN_UPWARD lists imports that are gone: drop them"
    assert sorted("{} ({}) imports {} ({})".format(m, LAYER_NAMES[layer(m)], t, LAYER_NAMES[layer(t)])
                  for m, t in up - KNOWN_UPWARD) == []


def test_layers_are_assigned_as_designed():
    assert [layer(m) for m in ("edgekit.errors", "edgekit.manifest", "edgekit.targets", "edgekit.power_model",
                               "edgekit.runtime.runner", "edgekit.bench.meters.rapl", "edgekit.deploy.agent",
                               "edgekit.convert.precision.plan", "edgekit.cli.run", "edgekit.cli.demo_run")] == \
        [SHARED, SHARED, SHARED, SHARED, RUNTIME, BENCH, DEPLOY, CONVERT, CLI, CLI]
    assert {"edgekit.errors", "edgekit.manifest", "edgekit.runtime.budget"} <= import_graph()["edgekit.runtime.runner"]


def test_the_graph_sees_imports_inside_functions(tmp_path):
    tree = ast.parse("def f():\n    from edgekit.convert import convert\n    from . import sibling\n")
    assert set(_imported_names(tree, "edgekit.bench")) >= {"edgekit.convert", "edgekit.bench.sibling"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _functions(path: str) -> Iterator[Tuple[str, int]]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_file_over_400_lines_and_no_function_over_60():
    long_files, long_functions = [], set()
    for path in _modules().values():
        rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
        with open(path, encoding="utf-8") as f:
            lines = sum(1 for _ in f)
        if lines > MAX_FILE_LINES:
            long_files.append("{}: {} lines".format(rel, lines))
        long_functions |= {(rel, name) for name, n in _functions(path) if n > MAX_FUNCTION_LINES}
    assert long_files == []
    assert sorted(KNOWN_LONG_FUNCTIONS - long_functions) == [], "KNOWN_LONG_FUNCTIONS lists functions now short"
    assert sorted(long_functions - KNOWN_LONG_FUNCTIONS) == []


def test_threshold_fitting_imports_without_tensorflow():
    """edgekit calibrate refits thresholds through the runtime: the fit layer must not pull TensorFlow in."""
    code = ("import sys, edgekit.fit.threshold_fit, edgekit.fit.provenance, edgekit.fit.thresholds; "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
    assert layer("edgekit.fit.threshold_fit") == FIT
