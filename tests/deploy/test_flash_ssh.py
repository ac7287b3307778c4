"""Flash, run, re-flash, roll back against a real sshd; `current` is checked after every injected fault."""
import json
import os
import sys
from pathlib import Path

import pytest

from edgekit.deploy import (BoardMismatchError, DeployError, VerifyError, flash, list_releases, rollback,
                            run_remote)
from edgekit.deploy.agent import MARKER
from edgekit.deploy.package import runtime_files
from edgekit.deploy.ssh import Session
from edgekit.manifest import read_manifest

from .conftest import link, make_board

pytestmark = pytest.mark.ssh


def bid(bundle: Path) -> str:
    return read_manifest(str(bundle)).bundle_id


def release_files(remote_dir: str, rid: str) -> set:
    base = Path(remote_dir, "releases", rid)
    return {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def hidden_staging(remote_dir: str) -> list:
    return [p for p in os.listdir(os.path.join(remote_dir, "releases")) if p.startswith(".partial-")]


def python_without(tmp_path: Path, *modules: str) -> str:
    """A board Python on which the given packages are not importable."""
    block = tmp_path / "hidden-packages"
    block.mkdir()
    for m in modules:
        (block / (m + ".py")).write_text("raise ImportError('not installed on this board')\n")
    wrapper = tmp_path / "python-without"
    wrapper.write_text('#!/bin/sh\nPYTHONPATH={}${{PYTHONPATH:+:$PYTHONPATH}} exec {} "$@"\n'.format(
        block, sys.executable))
    wrapper.chmod(0o755)
    return str(wrapper)


def test_flash_run_flash_second_rollback(board, bundles, data_file):
    a, b = bid(bundles["A"]), bid(bundles["B"])
    res = flash(str(bundles["A"]), board)
    # manifest + 2 stages + report.json, and the runtime files (RUNTIME_FILES)
    assert (res.current, res.previous, res.uploaded_files) == (a, None, 4 + len(runtime_files()))
    assert link(board.remote_dir) == a
    files = release_files(board.remote_dir, a)
    assert {"manifest.json", "stage_0.tflite", "stage_1.tflite", "report.json", MARKER,
            "runtime/edgekit/runtime/__main__.py", "runtime/edgekit/manifest.py"} <= files
    marker = json.loads(Path(board.remote_dir, "releases", a, MARKER).read_text())
    assert marker["bundle_id"] == a and marker["files"]["stage_0.tflite"] == read_manifest(
        str(bundles["A"])).stages[0].sha256

    out = run_remote(board, "current", str(data_file))
    assert len(out["predictions"]) == 20 and sum(out["exit_histogram"]) == 20
    assert out["interpreter"]["name"] == "ai_edge_litert" and 0.0 <= out["accuracy"] <= 1.0
    full = run_remote(board, a, str(data_file), ["--full-depth"])
    assert full["exit_histogram"] == [0, 20]
    assert os.listdir(os.path.join(board.remote_dir, "tmp")) == []         # the uploaded data file is gone

    res = flash(str(bundles["B"]), board)
    assert (res.current, res.previous) == (b, a)
    assert (link(board.remote_dir), link(board.remote_dir, "previous")) == (b, a)
    listing = list_releases(board)
    assert {r.id for r in listing.releases} == {a, b} and all(r.complete for r in listing.releases)
    assert (listing.current, listing.previous) == (b, a)

    back = rollback(board)
    assert (back.current, back.previous) == (a, b)
    assert (link(board.remote_dir), link(board.remote_dir, "previous")) == (a, b)
    assert run_remote(board, "current", str(data_file))["predictions"] == out["predictions"]
    assert rollback(board).current == b                 # rolling back again returns to the newer release


def test_runtime_comes_from_the_release(board, bundles):
    res = flash(str(bundles["A"]), board)
    release = os.path.join(res.remote_dir, "releases", res.bundle_id)
    with Session(board) as s:
        got = s.run(["env", "PYTHONPATH=" + release + "/runtime", board.remote_python, "-c",
                     "import edgekit.runtime; print(edgekit.runtime.__file__)"])
    assert got.returncode == 0 and got.stdout.strip().startswith(release + "/runtime/edgekit/")


def test_second_flash_of_same_bundle_uploads_nothing(board, bundles):
    """A re-flash of what the board already holds is quick because it sends nothing: it probes, verifies and
    switches, and no file goes over the wire (so no time is spent transferring)."""
    first = flash(str(bundles["A"]), board)
    events = []
    again = flash(str(bundles["A"]), board, on_event=lambda event, detail: events.append(event))
    assert again.uploaded_files == 0 and again.uploaded_bytes == 0 and again.transfer_s == 0.0
    assert events == ["connected", "probed", "verify", "switched"]
    assert again.current == first.current and again.previous is None     # same id: previous is not overwritten
    print("\nfirst flash {:.3f} s ({} files, {} bytes, transfer {:.3f} s); re-flash {:.3f} s, transfer {:.3f} s"
          .format(first.total_s, first.uploaded_files, first.uploaded_bytes, first.transfer_s, again.total_s,
                  again.transfer_s))


def test_damaged_release_on_board_is_repaired_in_place(board, bundles):
    a = flash(str(bundles["A"]), board).bundle_id
    flash(str(bundles["B"]), board)
    stage = Path(board.remote_dir, "releases", a, "stage_1.tflite")
    stage.write_bytes(b"bit rot")
    Path(board.remote_dir, "releases", a, "runtime", "edgekit", "data.py").unlink()
    res = flash(str(bundles["A"]), board)
    assert res.uploaded_files == 2 and res.current == a and link(board.remote_dir) == a
    assert stage.read_bytes() == (bundles["A"] / "stage_1.tflite").read_bytes()


def test_rollback_refuses_a_damaged_previous_release(board, bundles):
    a = flash(str(bundles["A"]), board).bundle_id
    b = flash(str(bundles["B"]), board).bundle_id
    Path(board.remote_dir, "releases", a, "stage_0.tflite").write_bytes(b"x")
    with pytest.raises(VerifyError, match="previous release {} is damaged".format(a)):
        rollback(board)
    assert link(board.remote_dir) == b


def test_rollback_without_previous(board, bundles):
    flash(str(bundles["A"]), board)
    with pytest.raises(DeployError, match="no previous release"):
        rollback(board)


def test_dropped_connection_mid_upload_keeps_current(board, sshd, bundles):
    a = flash(str(bundles["A"]), board).bundle_id
    b = bid(bundles["B"])
    uploaded = []

    def drop_after_first_file(event, detail):
        if event == "upload":
            uploaded.append(detail)
            if len(uploaded) == 1:
                assert sshd.kill_sessions() > 0

    with pytest.raises(DeployError, match="connection lost while uploading") as err:
        flash(str(bundles["B"]), board, on_event=drop_after_first_file)
    assert "current still points at {}".format(a) in str(err.value)
    assert uploaded == ["manifest.json"]
    assert link(board.remote_dir) == a and link(board.remote_dir, "previous") is None
    assert not os.path.exists(os.path.join(board.remote_dir, "releases", b))
    assert len(hidden_staging(board.remote_dir)) == 1                 # hidden, never a release
    assert [r.id for r in list_releases(board).releases] == [a]

    res = flash(str(bundles["B"]), board)                             # the next flash completes normally
    assert (res.current, res.previous) == (b, a) and link(board.remote_dir) == b


def test_dropped_connection_before_switch_keeps_current(board, sshd, bundles):
    a = flash(str(bundles["A"]), board).bundle_id

    def drop_before_verify(event, detail):
        if event == "verify":
            sshd.kill_sessions()

    with pytest.raises(DeployError, match="connection lost while verifying and switching") as err:
        flash(str(bundles["B"]), board, on_event=drop_before_verify)
    assert "current points at {} or at the new, verified release".format(a) in str(err.value)
    assert link(board.remote_dir) == a and [r.id for r in list_releases(board).releases] == [a]
    assert flash(str(bundles["B"]), board).current == bid(bundles["B"])


def test_checksum_mismatch_after_upload_is_refused(board, bundles):
    a = flash(str(bundles["A"]), board).bundle_id

    def corrupt_before_verify(event, detail):
        if event == "uploaded":
            Path(detail, "stage_0.tflite").write_bytes(b"corrupted on the board")

    with pytest.raises(VerifyError, match=r"checksum mismatch on the board after upload: stage_0\.tflite") as err:
        flash(str(bundles["B"]), board, on_event=corrupt_before_verify)
    assert "current still points at {}".format(a) in str(err.value)
    assert link(board.remote_dir) == a and hidden_staging(board.remote_dir) == []
    assert not os.path.exists(os.path.join(board.remote_dir, "releases", bid(bundles["B"])))


def test_wrong_arch_is_refused_even_with_force(board, bundles):
    a = flash(str(bundles["A"]), board).bundle_id
    with pytest.raises(BoardMismatchError, match="CPU arch is x86_64, the bundle's target needs aarch64"):
        flash(str(bundles["arm"]), board, force=True)
    assert link(board.remote_dir) == a and len(os.listdir(os.path.join(board.remote_dir, "releases"))) == 1


def test_missing_interpreter_package(tmp_path, sshd, client_keys, known_hosts, bundles):
    good = make_board(sshd, tmp_path / "board", known_hosts, client_keys["good"])
    a = flash(str(bundles["A"]), good).bundle_id
    bare = make_board(sshd, tmp_path / "board", known_hosts, client_keys["good"],
                      remote_python=python_without(tmp_path, "ai_edge_litert", "tflite_runtime", "tensorflow"))
    with pytest.raises(BoardMismatchError, match="no TFLite interpreter package is importable"):
        flash(str(bundles["B"]), bare, force=True)
    assert link(good.remote_dir) == a


def test_board_python_without_numpy(tmp_path, sshd, client_keys, known_hosts, bundles):
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("no system python3 to play a bare board")
    bare = make_board(sshd, tmp_path / "board", known_hosts, client_keys["good"], remote_python="/usr/bin/python3")
    try:
        import subprocess
        has_numpy = subprocess.run(["/usr/bin/python3", "-c", "import numpy"], capture_output=True).returncode == 0
    except OSError:
        has_numpy = True
    if has_numpy:
        pytest.skip("the system python3 has numpy")
    with pytest.raises(BoardMismatchError, match="numpy is not importable"):
        flash(str(bundles["A"]), bare)
    assert link(bare.remote_dir) is None


def test_soft_mismatch_needs_force(tmp_path, sshd, client_keys, known_hosts, bundles):
    tf_only = make_board(sshd, tmp_path / "board", known_hosts, client_keys["good"],
                         remote_python=python_without(tmp_path, "ai_edge_litert", "tflite_runtime"))
    with pytest.raises(BoardMismatchError, match="ai-edge-litert is not installed.*pass --force"):
        flash(str(bundles["A"]), tf_only)
    assert link(tf_only.remote_dir) is None
    res = flash(str(bundles["A"]), tf_only, force=True)
    assert res.warnings and "the runtime will use tensorflow" in res.warnings[0]


def test_missing_remote_python(tmp_path, sshd, client_keys, known_hosts, bundles):
    nowhere = make_board(sshd, tmp_path / "board", known_hosts, client_keys["good"],
                         remote_python="/nonexistent/python3")
    with pytest.raises(DeployError, match="the board has no '/nonexistent/python3'"):
        flash(str(bundles["A"]), nowhere)


def test_run_remote_errors(board, bundles, tmp_path):
    import numpy as np

    with pytest.raises(DeployError, match="no release 'current'"):
        run_remote(board, "current", _npz(tmp_path, np.zeros((2, 64))))
    flash(str(bundles["A"]), board)
    with pytest.raises(DeployError, match="on the board: .*input 'x'"):
        run_remote(board, "current", _npz(tmp_path, np.zeros((2, 3), np.float32)))


def _npz(tmp_path: Path, x) -> str:
    import numpy as np

    path = tmp_path / "data-{}.npz".format(x.shape[1])
    np.savez(path, x=x.astype(np.float32))
    return str(path)


def test_keep_prunes_old_releases_but_never_current_or_previous(board, bundles, tmp_path, stage_files):
    from .bundles import write_bundle

    ids = []
    for k in range(4):
        d = tmp_path / "b{}".format(k)
        write_bundle(d, stage_files[0], threshold=0.5 + k / 10.0)
        ids.append(flash(str(d), board, keep=2).bundle_id)
    remaining = sorted(p for p in os.listdir(os.path.join(board.remote_dir, "releases")) if not p.startswith("."))
    assert remaining == sorted(ids[2:])
    assert (link(board.remote_dir), link(board.remote_dir, "previous")) == (ids[3], ids[2])


def test_run_remote_the_way_run_and_bench_call_it(board, bundles, data_file):
    from edgekit.cli.ssh import board_from_options

    rid = flash(str(bundles["A"]), board).bundle_id
    target = board_from_options(str(board.host), board.ssh.identity, board.ssh.known_hosts, False, board.remote_dir,
                                board.remote_python, 10.0)
    by_string = run_remote(str(board.host), "current", str(data_file), ["--threads", "1"], ssh=board.ssh,
                           remote_dir=board.remote_dir, remote_python=board.remote_python)
    by_board = run_remote(target, rid, str(data_file))
    assert (by_board["predictions"], by_board["exits"]) == (by_string["predictions"], by_string["exits"])
