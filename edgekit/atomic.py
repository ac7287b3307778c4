"""Writes that leave nothing half-done: a file through a temporary file and os.replace, a directory swapped in by
rename with the old one put back when the swap fails. The one copy of each, for the laptop and the board alike:
standard library only, Python 3.8 syntax.
"""
import os
import shutil
import tempfile
from typing import Callable, TypeVar

from edgekit.errors import BundleError

T = TypeVar("T")


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` with permissions `mode`: readers see the old file or the whole new one, never a part
    (a temporary file beside it, flushed to disk, then renamed over it; removed on any failure)."""
    fd, tmp = tempfile.mkstemp(prefix=".{}.tmp-".format(os.path.basename(path)), dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def swap_in(new: str, dest: str) -> None:
    """Rename the directory `new` to `dest`, replacing the directory there if any: the old one is renamed aside
    first, put back when the rename fails (the OSError goes on to the caller), and removed once the new one is in."""
    aside = None
    if os.path.lexists(dest):
        aside = tempfile.mkdtemp(prefix=".{}.old-".format(os.path.basename(dest)), dir=os.path.dirname(dest) or ".")
        os.rename(dest, os.path.join(aside, "old"))
    try:
        os.rename(new, dest)
    except OSError:
        if aside is not None:
            os.rename(os.path.join(aside, "old"), dest)
            os.rmdir(aside)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def swap_in_edited_copy(directory: str, edit: Callable[[str], T], prefix: str) -> T:
    """Run edit() on a copy of `directory` (a bundle), then swap the copy in; its result. On any failure, the
    directory is as it was."""
    src = os.path.abspath(directory).rstrip(os.sep)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=os.path.dirname(src))
    work = os.path.join(tmp, "bundle")
    try:
        shutil.copytree(src, work)
        result = edit(work)
        try:
            swap_in(work, src)
        except OSError:
            raise BundleError("could not replace {}; it was left as it was".format(src))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result
