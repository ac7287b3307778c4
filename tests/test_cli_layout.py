"""The command line lives in edgekit/cli/ and nothing below it imports it; `edgekit`, `python -m edgekit` and
`python -m edgekit.cli` are one program."""
import ast
import os
import subprocess
import sys

import click

from edgekit.cli import main
from tests.conftest import ROOT

PACKAGE = os.path.join(ROOT, "edgekit")


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from ("{}.{}".format(node.module, a.name) for a in node.names)


def test_nothing_below_the_cli_imports_it():
    bad = []
    for folder, _, files in os.walk(PACKAGE):
        rel = os.path.relpath(folder, PACKAGE)
        if rel == "cli" or rel.startswith("cli" + os.sep):
            continue
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and path != os.path.join(PACKAGE, "__main__.py"):
                bad += ["{}: {}".format(os.path.relpath(path, ROOT), m) for m in _imports(path)
                        if m == "edgekit.cli" or m.startswith("edgekit.cli.") or m.startswith("click")]
    assert bad == []


def test_every_click_command_module_is_in_the_cli_package():
    outside = []
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and not os.path.relpath(path, PACKAGE).startswith("cli" + os.sep):
                if "click" in set(_imports(path)):
                    outside.append(os.path.relpath(path, ROOT))
    assert outside == []


def test_every_command_is_registered_on_main():
    names = set(main.commands)
    assert {"targets", "convert", "calibrate", "inspect", "run", "bench", "demo", "flash", "prune", "keygen",
            "sign", "profile"} <= names
    assert all(isinstance(c, click.Command) for c in main.commands.values())


def test_python_dash_m_edgekit_and_edgekit_cli_run_the_same_program():
    for module in ("edgekit", "edgekit.cli"):
        got = subprocess.run([sys.executable, "-m", module, "targets", "--json"], capture_output=True, text=True,
                             timeout=120, cwd=ROOT)
        assert got.returncode == 0, got.stderr
        assert '"targets"' in got.stdout and "host-x86_64" in got.stdout
