"""The board's failure states, against a real sshd: what failed flashes leave is cleaned, SSH failures are one
line naming host, port and cause, and messages name what really happened."""
import os
import time
from pathlib import Path

import pytest

from edgekit.deploy import DeployError, flash
from edgekit.deploy.agent import MARKER
from edgekit.manifest import read_manifest

from .conftest import link

pytestmark = pytest.mark.ssh


def staging(remote_dir) -> list:
    return sorted(p for p in os.listdir(os.path.join(str(remote_dir), "releases")) if p.startswith(".partial-"))


def _age(path: Path, seconds: float) -> None:
    when = time.time() - seconds
    for p in [path] + list(path.rglob("*")):
        os.utime(str(p), (when, when), follow_symlinks=False)


def test_an_install_that_fails_leaves_no_staging_dir(board, bundles):
    a = flash(str(bundles["A"]), board).bundle_id

    def break_the_install(event, detail):
        if event == "uploaded":                 # the marker cannot be written (as on a disk that filled up)
            Path(detail, MARKER + ".tmp").mkdir()

    with pytest.raises(DeployError, match=r"verifying and switching failed on the board: IsADirectoryError"):
        flash(str(bundles["B"]), board, on_event=break_the_install)
    assert staging(board.remote_dir) == [] and link(board.remote_dir) == a
    assert flash(str(bundles["B"]), board).current == read_manifest(str(bundles["B"])).bundle_id


def test_the_next_flash_clears_what_failed_flashes_left_before_the_space_check(board, bundles):
    a = flash(str(bundles["A"]), board).bundle_id
    releases = Path(board.remote_dir, "releases")
    died_in_install = releases / ".partial-{}-aaaaaaaaaaaa".format(a)       # verified, marked, never moved
    died_in_install.mkdir()
    (died_in_install / "stage_0.tflite").write_bytes(b"\0" * (1 << 20))
    (died_in_install / MARKER).write_text("{}")
    _age(died_in_install, 120)
    abandoned = releases / ".partial-{}-bbbbbbbbbbbb".format(a)             # an upload nobody finished
    (abandoned / "runtime").mkdir(parents=True)
    (abandoned / "runtime" / "x.py").write_text("x")
    _age(abandoned, 3600)
    uploading = releases / ".partial-{}-cccccccccccc".format(a)             # another flash uploading right now
    uploading.mkdir()
    (uploading / "manifest.json").write_text("{}")
    partials = [releases / a / "stage_0.tflite.partial-0badc0de",           # in-place repairs cut off
                releases / a / "runtime" / "edgekit" / "data.py.partial-12345678"]
    for p in partials:
        p.write_bytes(b"half")
    seen = []

    def after_probe(event, detail):
        if event == "probed":
            seen.append(staging(board.remote_dir))
            seen.append([p.name for p in partials if os.path.lexists(str(p))])

    flash(str(bundles["B"]), board, on_event=after_probe)
    assert seen == [[uploading.name], []]              # gone before the space check and the upload
    assert os.path.isfile(str(releases / a / "stage_0.tflite"))
