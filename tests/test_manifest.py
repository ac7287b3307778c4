import copy
import json

import pytest

from edgekit.errors import BundleError
from edgekit.manifest import Manifest

GOOD = {
    "schema_version": 1, "model_name": "m", "target": "raspberry-pi-5",
    "input": {"name": "image", "shape": [None, 8, 8, 1], "dtype": "float32"},
    "stages": [
        {"file": "stage_0.tflite", "sha256": "a" * 64, "precision": "int8",
         "inputs": [{"name": "image", "shape": [None, 8, 8, 1], "dtype": "float32"}],
         "outputs": [{"name": "c_feat", "shape": [None, 4, 4, 8], "dtype": "float32"},
                     {"name": "exit0", "shape": [None, 10], "dtype": "float32"}],
         "exit": {"name": "exit0", "threshold": 0.9, "classes": 10}},
        {"file": "stage_1.tflite", "sha256": "b" * 64, "precision": "int8",
         "inputs": [{"name": "c_feat", "shape": [None, 4, 4, 8], "dtype": "float32"}],
         "outputs": [{"name": "exit1", "shape": [None, 10], "dtype": "float32"}],
         "exit": {"name": "exit1", "threshold": 0.0, "classes": 10}},
    ],
}


def test_round_trip_keeps_fields_and_id():
    m = Manifest.from_dict(GOOD)
    again = Manifest.from_json(m.to_json())
    assert again == m
    assert again.bundle_id == m.bundle_id
    d = json.loads(m.to_json())
    for key in ("schema_version", "input", "stages", "bundle_id"):
        assert key in d
    assert [s.carried for s in m.stages][0][0].name == "c_feat"


def test_bundle_id_changes_with_thresholds():
    m = Manifest.from_dict(GOOD)
    d = copy.deepcopy(GOOD)
    d["stages"][0]["exit"]["threshold"] = 0.5
    assert Manifest.from_dict(d).bundle_id != m.bundle_id


def _bad(mutate):
    d = copy.deepcopy(GOOD)
    mutate(d)
    with pytest.raises(BundleError) as exc:
        Manifest.from_dict(d)
    return str(exc.value)


def test_unknown_schema_version():
    assert "unknown schema_version 99" in _bad(lambda d: d.update(schema_version=99))


def test_path_traversal_in_file_name():
    assert "invalid name" in _bad(lambda d: d["stages"][0].update(file="../../etc/passwd"))


def test_stage_input_not_produced_earlier():
    assert "not produced by an earlier stage" in _bad(lambda d: d["stages"][1]["inputs"][0].update(name="nope"))


def test_bad_sha_and_precision_and_shape():
    assert "sha256" in _bad(lambda d: d["stages"][0].update(sha256="xyz"))
    assert "unknown precision" in _bad(lambda d: d["stages"][0].update(precision="int3"))
    assert "shape[1]" in _bad(lambda d: d["stages"][0]["inputs"][0].update(shape=[None, -8, 8, 1]))


def test_exit_must_be_an_output():
    assert "not one of the stage outputs" in _bad(lambda d: d["stages"][0]["exit"].update(name="exitX"))


def test_not_json():
    with pytest.raises(BundleError, match="not valid JSON"):
        Manifest.from_json("{nope")
