"""No test reads the wall clock: a test that times something passes or fails with the machine's load.

Tests use fixed stage costs written into a test bundle, a simulated clock (tests/simulated.py) or conditions
waited for; speed goals are measured in benchmarks/. The few files below read a clock for another reason.
"""
import ast
import os

TESTS = os.path.dirname(os.path.abspath(__file__))
CLOCKS = {"perf_counter", "perf_counter_ns", "time", "time_ns", "monotonic", "monotonic_ns", "process_time"}
ALLOWED = {
    "simulated.py": "wait_for_samples: a 60 s guard against a hang, never a measurement",
    os.path.join("deploy", "sshd.py"): "waits up to 30 s for sshd to answer, then reports it did not start",
    os.path.join("deploy", "test_fleet_ssh.py"): "prints how long the fleet flash took; asserts nothing on it",
    "emulated": "scripts behind `make test-arm64` that print wall times per step; no pytest test",
}


def clock_reads(source: str) -> list:
    """Line numbers where `source` reads a clock of the time module (time.X() or X imported from time)."""
    tree = ast.parse(source)
    imported = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module == "time" for a in node.names if a.name in CLOCKS}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in CLOCKS and isinstance(f.value, ast.Name) and f.value.id == "time":
            lines.append(node.lineno)
        elif isinstance(f, ast.Name) and f.id in imported:
            lines.append(node.lineno)
    return sorted(lines)


def _allowed(rel: str) -> bool:
    return rel in ALLOWED or rel.split(os.sep)[0] in ALLOWED


def test_the_check_finds_clock_reads():
    assert clock_reads("import time\nt0 = time.perf_counter()\nx = 1\nassert time.monotonic() - t0 < 3\n") == [2, 4]
    assert clock_reads("from time import perf_counter as pc\nt = pc()\n") == [2]
    assert clock_reads("import time\ntime.sleep(0.1)\nclock = FakeClock()\nclock.now()\n") == []


def test_no_test_reads_the_wall_clock():
    found = []
    for root, _, files in os.walk(TESTS):
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, TESTS)
            with open(path, encoding="utf-8") as f:
                lines = clock_reads(f.read())
            if lines and not _allowed(rel):
                found.append("{}:{}".format(rel, ",".join(map(str, lines))))
    assert not found, "tests read the wall clock (use fixed stage costs or tests/simulated.py): " + "; ".join(found)
