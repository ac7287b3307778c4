import numpy as np
import pytest

from edgekit.data import check_input_shape, load_data
from edgekit.errors import DataError
from tests.conftest import CALIB


def test_shipped_splits_have_labels_and_shape():
    ds = load_data(CALIB)
    assert ds.x.shape[1:] == (32, 32, 1) and ds.x.dtype == np.float32
    assert ds.y is not None and set(np.unique(ds.y)) == set(range(10))


def test_npy_without_labels(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.zeros((3, 32, 32, 1), np.float32))
    ds = load_data(str(p))
    assert len(ds) == 3 and ds.y is None


def test_npz_without_x(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, images=np.zeros((2, 2)))
    with pytest.raises(DataError, match="has no array 'x'"):
        load_data(str(p))


def test_pickled_object_array_is_refused(tmp_path):
    p = tmp_path / "d.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot be read"):
        load_data(str(p))


def test_unsupported_format_and_missing(tmp_path):
    with pytest.raises(DataError, match="allowed: .npz, .npy"):
        load_data(str(tmp_path / "d.csv"))
    with pytest.raises(DataError, match="not found"):
        load_data(str(tmp_path / "d.npz"))


def test_labels_must_match(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((3, 4)), y=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="one per sample"):
        load_data(str(p))


def test_shape_check_names_both_shapes():
    with pytest.raises(DataError, match=r"\(2, 28, 28, 1\), the model input expects \(N, 32, 32, 1\)"):
        check_input_shape(np.zeros((2, 28, 28, 1)), (None, 32, 32, 1), "x")
