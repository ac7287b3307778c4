"""A full disk on the board, on a small tmpfs mounted for the test (skipped where mounting is not allowed)."""
import os

import pytest

from edgekit.deploy import BoardMismatchError, DeployError, flash

from .conftest import link, make_board

pytestmark = pytest.mark.ssh


def test_too_little_space_is_refused_before_upload(small_disk, sshd, client_keys, known_hosts, bundles):
    disk = small_disk(2048)
    b = make_board(sshd, disk / "edgekit", known_hosts, client_keys["good"])
    a = flash(str(bundles["A"]), b).bundle_id                  # ~0.7 MB fits; a second one does not
    with pytest.raises(BoardMismatchError, match=r"only \d\.\d MB free on the board's disk, the upload needs"):
        flash(str(bundles["B"]), b)
    assert link(b.remote_dir) == a
    assert os.listdir(disk / "edgekit" / "releases") == [a]


def test_disk_full_during_upload(small_disk, sshd, client_keys, known_hosts, bundles):
    disk = small_disk(3072)
    b = make_board(sshd, disk / "edgekit", known_hosts, client_keys["good"])
    a = flash(str(bundles["A"]), b).bundle_id

    def fill_disk(event, detail):
        if event == "upload" and detail == "manifest.json":
            with open(disk / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                except OSError:
                    pass

    with pytest.raises(DeployError, match=r"upload failed while uploading stage_0\.tflite.*the board's disk is full"
                                          r".*current still points at {}".format(a)):
        flash(str(bundles["B"]), b, on_event=fill_disk)
    assert link(b.remote_dir) == a
    assert os.listdir(disk / "edgekit" / "releases") == [a]       # the partial upload was removed
