"""The README runs as written, top to bottom.

Every `$ edgekit ...` command of README.md (continuation lines joined, shell comments dropped, `~` expanded)
runs in order in a scratch directory that holds links to calibration/, edgekit/assets/ and the ONNX
fixtures, with HOME pointed at an empty directory (a fresh machine). Each command must exit 0, or 2 when the
README shows an `edgekit: error:` line; the lines the README shows after a command must appear in its output,
in order, with numbers (measured values, sizes, ids) free and everything else as written.

Commands that talk to a board (`--host pi@...`, `--inventory hosts.yaml`) run against a real OpenSSH server
on 127.0.0.1 (tests/deploy/sshd.py) whose login runs this virtualenv's Python as the board's python3: the host
is replaced by the loopback one, and --remote-dir / --remote-python are added. The loopback board is x86_64,
and flash refuses, by design, a bundle built for the Pi's aarch64: a bundle `X/raspberry-pi-5` given to a board
command is replaced by its twin `X-loopback/host-x86_64`, the same stage files under a manifest whose target is
host-x86_64 (a .tflite file does not depend on the CPU), signed with the README's key when the README signed
the original. Nothing else is changed.

The run is slow (about 10 minutes on a loaded 2-core machine: it trains exit heads, prunes with recovery,
searches precisions): `make test-readme`, which .ci/run calls after `make test`; the checks of the parser
run with the default suite.
"""
import getpass
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from tests.conftest import ROOT
from tests.deploy.sshd import APT_HINT, SSHD, SshServer, keygen

README = os.path.join(ROOT, "README.md")
EDGEKIT = os.path.join(os.path.dirname(sys.executable), "edgekit")
BOARD_HOSTS = ("pi@raspberrypi.local", "pi@board")      # the README's boards, all mapped to the loopback one
LOOPBACK_TARGET = "host-x86_64"
SCRATCH_LINKS = ("calibration", "edgekit/assets", "tests/fixtures/onnx")
TIMEOUT_S = 1800


@dataclass
class Example:
    line: int                 # README line of the command
    command: str              # as written, continuation lines joined
    shown: List[str]          # the output lines the README shows after it


def readme_examples(text: str) -> List[Example]:
    """Every `$ ` line inside a fenced block, with its `\\` continuation lines and the lines shown after it."""
    out: List[Example] = []
    lines = text.splitlines()
    in_block, current, i = False, None, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            in_block, current = not in_block, None
        elif in_block and line.startswith("$ "):
            start, command = i, line[2:]
            while command.rstrip().endswith("\\"):
                i += 1
                command = command.rstrip()[:-1].rstrip() + " " + lines[i].strip()
            current = Example(start + 1, command, [])
            out.append(current)
        elif in_block and current is not None and line.strip():
            current.shown.append(line)
        i += 1
    return out


_NUMBER = re.compile(r"^[\[(]*[-+]?\d[\d.,%/xMK]*(ms\)?)?[\])%,;:]*$")
_HEX_ID = re.compile(r"^[0-9a-f]{16}$")
_VALUE = r"(?:\S*\d\S*|never)"      # a measured or fitted value; a threshold may come out as "never"


def line_pattern(shown: str) -> "re.Pattern[str]":
    """A README output line as a regex: numbers, ids and thresholds free, separator dashes of any length, any
    run of spaces between words, and a trailing `...` standing for the rest of the line."""
    tokens = shown.split()
    rest = tokens[-1] == "..." if tokens else False
    parts = []
    for tok in tokens[:-1] if rest else tokens:
        if _NUMBER.match(tok) or _HEX_ID.match(tok) or tok == "never":
            parts.append(_VALUE)
        elif set(tok) == {"-"} and len(tok) > 1:
            parts.append("-+")
        else:
            parts.append(re.escape(tok))
    return re.compile(r"^\s*" + r"\s+".join(parts) + (r"(\s.*)?" if rest else "") + r"\s*$")


def unmatched(shown: List[str], output: List[str]) -> Optional[str]:
    """The first shown line (other than a bare `...`) that does not match an output line after the previous
    match; None when all match in order."""
    pos = 0
    for want in shown:
        if want.strip() == "...":
            continue
        pat = line_pattern(want)
        while pos < len(output) and not pat.match(output[pos]):
            pos += 1
        if pos == len(output):
            return want
        pos += 1
    return None


def run_edgekit(argv: List[str], work: Path, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(home), PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    env.pop("EDGEKIT_TRUSTED_KEYS", None)
    return subprocess.run([EDGEKIT] + argv[1:], cwd=str(work), env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


@dataclass
class Loopback:
    host: str                 # USER@127.0.0.1:PORT
    remote_dir: str
    work: Path
    home: Path
    signed_with: Dict[str, List[str]] = field(default_factory=dict)   # README bundle -> its `sign` options

    def record(self, argv: List[str]) -> None:
        """Remember how the README signs a bundle, to sign its twin the same way."""
        if argv[1] == "sign":
            self.signed_with[argv[2]] = argv[3:]

    def twin(self, bundle: str) -> str:
        """X/raspberry-pi-5 -> X-loopback/host-x86_64: the same stage files, declared for the x86 loopback board."""
        parent, target = os.path.split(bundle.rstrip("/"))
        dest = self.work / (parent + "-loopback") / LOOPBACK_TARGET
        shutil.rmtree(dest.parent, ignore_errors=True)
        shutil.copytree(self.work / bundle, dest)
        manifest = json.loads((dest / "manifest.json").read_text())
        assert manifest["target"] == target
        manifest["target"] = LOOPBACK_TARGET
        (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
        sig = dest / "manifest.sig"
        if sig.exists():
            sig.unlink()
        if bundle in self.signed_with:
            got = run_edgekit(["edgekit", "sign", str(dest)] + self.signed_with[bundle], self.work, self.home)
            assert got.returncode == 0, got.stderr
        return str(dest)

    def args(self, argv: List[str]) -> List[str]:
        """argv for the loopback board instead of the README's one; unchanged for commands without a board."""
        board = "--host" in argv and any(h in argv for h in BOARD_HOSTS)
        if not board and "--inventory" not in argv:
            return argv
        out = [self.host if a in BOARD_HOSTS else a for a in argv]
        if argv[1] == "flash" and len(argv) > 2 and os.path.isfile(self.work / argv[2] / "manifest.json"):
            out[2] = self.twin(argv[2])
        return out + (["--remote-dir", self.remote_dir, "--remote-python", sys.executable] if board else [])


def command_argv(command: str, home: Path) -> List[str]:
    """What the shell would run: words, comments dropped, `~` and `~/...` expanded against HOME."""
    argv = shlex.split(command, comments=True)
    return [str(home) + a[1:] if a == "~" or a.startswith("~/") else a for a in argv]


def expected_code(shown: List[str]) -> int:
    return 2 if any(s.startswith("edgekit: error:") for s in shown) else 0


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Tuple[Path, Path, Loopback]:
    """The scratch copy, a fresh HOME with an SSH key and the loopback board's host key, and the board."""
    if not os.path.exists(SSHD):
        pytest.fail(APT_HINT, pytrace=False)
    root = tmp_path_factory.mktemp("readme")
    work, home = root / "work", root / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    for rel in SCRATCH_LINKS:
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).symlink_to(os.path.join(ROOT, rel))
    key = keygen(home / ".ssh" / "id_ed25519", "readme-test")
    server = SshServer(root / "sshd", key.with_suffix(".pub")).start()
    (home / ".ssh" / "known_hosts").write_text(server.host_key_line)
    board = Loopback("{}@127.0.0.1:{}".format(getpass.getuser(), server.port), str(root / "board"), work, home)
    (work / "hosts.yaml").write_text("- {{name: pi-loopback, host: 127.0.0.1, port: {}, user: {}, remote_dir: {}, "
                                     "remote_python: {}}}\n".format(server.port, getpass.getuser(), board.remote_dir,
                                                                    sys.executable))
    yield work, home, board
    server.stop()


def test_readme_parser_finds_every_command_and_joins_continuations():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    examples = readme_examples(text)
    assert len(examples) >= 20
    assert all(e.command.startswith("edgekit ") for e in examples), [e.command for e in examples
                                                                     if not e.command.startswith("edgekit ")]
    assert not any(e.command.rstrip().endswith("\\") for e in examples)
    dollar_lines = sum(1 for line in text.splitlines() if line.startswith("$ "))
    assert dollar_lines == len(examples)


def test_line_pattern_frees_numbers_only():
    pat = line_pattern("bundle out/raspberry-pi-5 (3 stages, int8, 733.0 KiB)")
    assert pat.match("bundle out/raspberry-pi-5 (3 stages, int8, 1024.5 KiB)")
    assert not pat.match("bundle out/raspberry-pi-4 (3 stages, int8, 733.0 KiB)")
    assert not pat.match("bundle out/raspberry-pi-5 (3 stages, float32, 733.0 KiB)")
    assert line_pattern("energy: meter power-model (ESTIMATED) ...").match(
        "energy: meter power-model (ESTIMATED) - no real sensor is readable")
    assert line_pattern("fitted  99.16%  0.0361  0.998 0.994  74% 23% 2%").match(
        "fitted           98.89%    0.0402       never 0.990  0% 96% 4%")
    assert unmatched(["a  b", "...", "c 1.0"], ["a b", "x", "c   2.5"]) is None
    assert unmatched(["c 1.0", "a b"], ["a b", "c 2.5"]) == "a b"


@pytest.mark.slow
@pytest.mark.ssh
def test_readme_runs_as_written(scratch):
    work, home, board = scratch
    with open(README, encoding="utf-8") as f:
        examples = readme_examples(f.read())
    for ex in examples:
        argv = board.args(command_argv(ex.command, home))
        got = run_edgekit(argv, work, home)
        board.record(argv)
        where = "README.md:{}: {}\nran: {}\nstdout:\n{}\nstderr:\n{}".format(
            ex.line, ex.command, " ".join(argv), got.stdout[-3000:], got.stderr[-3000:])
        code = expected_code(ex.shown)
        assert got.returncode == code, where
        if code:
            errors = [s for s in ex.shown if s.startswith("edgekit: error:")]
            assert unmatched(errors, got.stderr.strip().splitlines()[-1:]) is None, where
            assert "Traceback" not in got.stderr, where
        else:
            missing = unmatched(ex.shown, got.stdout.splitlines())
            assert missing is None, "{}\nnot in the output: {!r}".format(where, missing)
