"""The one atomic file writer and directory swap-in (edgekit/atomic.py), and errors.first_line."""
import os
import stat

import pytest

from edgekit.atomic import swap_in, swap_in_edited_copy, write_atomic
from edgekit.errors import BundleError, first_line


def test_write_atomic_replaces_whole_files_with_the_mode_asked(tmp_path):
    path = str(tmp_path / "key")
    write_atomic(path, b"old")
    write_atomic(path, b"new", 0o600)
    assert open(path, "rb").read() == b"new" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(str(tmp_path)) == ["key"]


def test_write_atomic_leaves_nothing_when_it_fails(tmp_path):
    with pytest.raises(TypeError):
        write_atomic(str(tmp_path / "f"), "not bytes")     # type: ignore[arg-type]
    assert os.listdir(str(tmp_path)) == []


def test_swap_in_replaces_and_puts_the_old_back_when_the_rename_fails(tmp_path):
    dest, new = tmp_path / "bundle", tmp_path / "new"
    dest.mkdir()
    (dest / "a").write_text("old")
    new.mkdir()
    (new / "a").write_text("new")
    swap_in(str(new), str(dest))
    assert (dest / "a").read_text() == "new" and sorted(os.listdir(str(tmp_path))) == ["bundle"]
    with pytest.raises(OSError):
        swap_in(str(tmp_path / "missing"), str(dest))
    assert (dest / "a").read_text() == "new" and sorted(os.listdir(str(tmp_path))) == ["bundle"]


def test_an_edit_that_fails_leaves_the_directory_as_it_was(tmp_path):
    dest = tmp_path / "bundle"
    dest.mkdir()
    (dest / "a").write_text("old")

    def edit(work):
        with open(os.path.join(work, "a"), "w") as f:
            f.write("half")
        raise BundleError("the edit failed")

    with pytest.raises(BundleError, match="the edit failed"):
        swap_in_edited_copy(str(dest), edit, ".edit-")
    assert (dest / "a").read_text() == "old" and os.listdir(str(tmp_path)) == ["bundle"]
    assert swap_in_edited_copy(str(dest), lambda work: open(os.path.join(work, "a"), "w").write("done"), ".e-") == 4
    assert (dest / "a").read_text() == "done" and os.listdir(str(tmp_path)) == ["bundle"]


def test_first_line():
    assert first_line(ValueError("  shape mismatch\n  at node 7\n")) == "shape mismatch"
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(ValueError(""), default="invalid") == "invalid"
    assert first_line(OSError("x" * 500), limit=200) == "x" * 200
