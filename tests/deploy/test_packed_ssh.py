"""A bundle with packed 4-bit weights flashed to a real sshd: the board verifies the files, its runtime restores
the packed stage, and it answers as this machine does."""
import json
import subprocess

import pytest

from edgekit.deploy import flash
from tests.conftest import TEST
from tests.test_packed import make_packed

from .conftest import EDGEKIT

pytestmark = pytest.mark.ssh


def test_a_packed_bundle_flashes_and_runs_on_the_board_as_here(board, common, demo_bundles, tmp_path):
    bundle, _, _ = make_packed(demo_bundles("int8", "host-x86_64"), str(tmp_path / "packed"))
    flash(bundle, board)

    def run(*where):
        got = subprocess.run([EDGEKIT, "run", *where, TEST, "--json"], capture_output=True, text=True, timeout=300)
        assert got.returncode == 0, got.stderr
        return json.loads(got.stdout)

    local, remote = run(bundle), run("current", *common)
    assert remote["predictions"] == local["predictions"] and remote["exits"] == local["exits"]
