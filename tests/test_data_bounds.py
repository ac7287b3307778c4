"""Data files: an array's declared size is bounded by the bytes behind it before anything is allocated, and a
FIFO given as DATA is named for what it is."""
import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from edgekit.data import MAX_RATIO, load_data
from edgekit.errors import DataError

EDGEKIT = os.path.join(os.path.dirname(sys.executable), "edgekit")


def _bomb(path: str, rows: int, cols: int = 1024) -> str:
    """An .npz whose x.npy really inflates to rows x cols float32 zeros (about 1000x smaller compressed)."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((0, cols), np.float32))
    header["shape"] = (rows, cols)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    head = buf.getvalue()
    zinfo = zipfile.ZipInfo("x.npy")
    zinfo.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(path, "w") as z, z.open(zinfo, "w", force_zip64=True) as member:
        member.write(head)
        chunk = bytes(16 << 20)
        left = rows * cols * 4
        while left:
            member.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))
    return path


_PEAK = r"""
import sys
from edgekit.data import load_data
from edgekit.errors import DataError
try:
    load_data(sys.argv[1])
    print("loaded")
except DataError as exc:
    print(exc)
with open("/proc/self/status") as f:        # VmHWM: this process's own peak (ru_maxrss may carry the parent's)
    print(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) // 1024)
"""


def test_a_small_npz_declaring_a_gib_is_refused_before_allocating(tmp_path):
    path = _bomb(str(tmp_path / "bomb.npz"), rows=1 << 18)           # 1 GiB of float32 zeros
    size = os.path.getsize(path)
    assert size < 2 << 20
    got = subprocess.run([sys.executable, "-c", _PEAK, path], capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    message, peak_mb = got.stdout.strip().splitlines()
    assert "x: the header declares shape (262144, 1024) of float32 (1073741824 bytes) but the member has" in message
    assert "allowed: at most {}x that, or one batch of 1024 samples (4194304 bytes)".format(MAX_RATIO) in message
    assert int(peak_mb) < 400, peak_mb                              # nothing near 1 GiB was allocated


def test_the_bound_follows_max_batch_and_lets_real_data_through(tmp_path):
    small = _bomb(str(tmp_path / "batch.npz"), rows=64, cols=256)   # ~64 KiB of zeros: far beyond MAX_RATIO
    assert load_data(small).x.shape == (64, 256)                    # but within one batch of 1024 samples
    with pytest.raises(DataError, match=r"one batch of 16 samples"):
        load_data(small, max_batch=16)
    rng = np.random.default_rng(0)
    real = str(tmp_path / "real.npz")
    np.savez_compressed(real, x=rng.normal(size=(5000, 64)).astype(np.float32))
    assert load_data(real, max_batch=1).x.shape == (5000, 64)


def test_a_fifo_as_data_is_named_so(demo_bundles, tmp_path):
    fifo = str(tmp_path / "data.npz")
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"data file .*data\.npz is not a regular file \(a FIFO, device or "
                                        r"directory\)"):
        load_data(fifo)
    got = subprocess.run([sys.executable, "-m", "edgekit.runtime", demo_bundles("int8"), fifo], capture_output=True,
                         text=True, timeout=120)
    assert got.returncode == 2 and "is not a regular file" in got.stderr and "not found" not in got.stderr
    got = subprocess.run([EDGEKIT, "run", demo_bundles("int8"), fifo, "--host", "nobody@127.0.0.1:9"],
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 2 and "is not a regular file" in got.stderr, got.stderr
