"""`edgekit flash` as users run it (the installed console script), against a real sshd."""
import json
import subprocess

import pytest

from edgekit.deploy.package import runtime_files
from edgekit.manifest import read_manifest

from .conftest import EDGEKIT, link, one_line_error

pytestmark = pytest.mark.ssh


def edgekit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([EDGEKIT] + [str(a) for a in args], capture_output=True, text=True, timeout=120)


def test_flash_list_rollback_from_the_command_line(board, bundles, common):
    a, b = (read_manifest(str(bundles[k])).bundle_id for k in "AB")
    got = edgekit("flash", bundles["A"], *common)
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("flashed {} (tiny-a, target host-x86_64) to {}:".format(a, board.host))
    files = 4 + len(runtime_files())        # manifest, 2 stages, report.json + the runtime (RUNTIME_FILES)
    assert "uploaded {} files".format(files) in got.stdout

    again = edgekit("flash", bundles["A"], *common)
    assert again.returncode == 0 and "already on the board, verified; nothing uploaded" in again.stdout

    got = edgekit("flash", bundles["B"], *common, "--json", "--verbose")
    assert got.returncode == 0, got.stderr
    res = json.loads(got.stdout)
    assert (res["current"], res["previous"], res["uploaded_files"]) == (b, a, files)
    assert "  switched: {}".format(b) in got.stderr.splitlines()

    listing = edgekit("flash", "--list", *common)
    assert listing.returncode == 0
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[3:]}
    assert "current" in rows[b] and "previous" in rows[a]

    back = edgekit("flash", "--rollback", *common)
    assert back.returncode == 0 and back.stdout.strip().endswith("current -> {} (previous -> {})".format(a, b))
    assert link(board.remote_dir) == a


def test_failures_are_one_line_and_exit_2(tmp_path, board, bundles, common):
    assert "tmp" in board.remote_dir
    unknown = list(common)
    unknown[unknown.index("--known-hosts") + 1] = str(tmp_path / "empty_known_hosts")
    msg = one_line_error(edgekit("flash", bundles["A"], *unknown))
    assert "unknown host key" in msg and "--accept-new-host-key" in msg

    msg = one_line_error(edgekit("flash", bundles["arm"], *common))
    assert "CPU arch is x86_64, the bundle's target needs aarch64" in msg

    msg = one_line_error(edgekit("flash", "--rollback", *common))
    assert "no previous release" in msg


@pytest.mark.parametrize("args, expected", [
    (["flash", "somewhere"], "give exactly one of --host"),
    (["flash", "--host", "pi@board:99999", "somewhere"], "invalid port 99999"),
    (["flash", "--host", "pi@board"], "flash needs a BUNDLE directory"),
    (["flash", "--host", "pi@board", "--list", "--rollback"], "choose one"),
    (["flash", "--host", "pi@board", "--remote-dir", "../etc", "b"], "has a '..' part"),
    (["flash", "--host", "pi@board", "--remote-python", "python3; rm -rf /", "b"], "invalid interpreter"),
    (["flash", "--host", "pi@board", "--identity", "/no/such/key", "b"], "identity file not found"),
])
def test_usage_errors(args, expected):
    assert expected in one_line_error(edgekit(*args))
