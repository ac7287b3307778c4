"""The Keras front end: a multi-exit functional model -> the stages (split.py), checked against the model."""
from typing import Any, Callable, Dict

import numpy as np

from edgekit.convert.load import load_model
from edgekit.convert.split import exit_outputs, run_stages_keras, split_model, stage_inputs
from edgekit.convert.stages import PARITY_SAMPLES, Front, check_parity
from edgekit.data import Dataset, check_input_shape
from edgekit.manifest import InputSpec
from edgekit.rungs import RANGE_SAMPLES


def load_keras(path: str, calib: Dataset, calib_path: str):
    """The model, with the calibration data checked against its input."""
    model = load_model(path)
    check_input_shape(calib.x, (None,) + tuple(model.inputs[0].shape[1:]), "calibration data " + calib_path)
    return model


def keras_front(model, x: np.ndarray, precision: str, report: Dict[str, Any],
                step: Callable[[int, int, str], None]) -> Front:
    """x: the calibration inputs (float32); report: the sections of what was done to the model before (exits,
    prune)."""
    input_name = model.inputs[0].name
    stages = split_model(model)
    step(1, 1, "split: {} stages".format(len(stages)))
    head = x[:PARITY_SAMPLES]
    split_err = check_parity(run_stages_keras(stages, head, input_name), exit_outputs(model, stages, head),
                             "chained stages", "; the exits may not be in depth order")
    return Front(
        name=model.name,
        input=InputSpec(name=input_name, shape=(None,) + tuple(int(d) for d in model.inputs[0].shape[1:]),
                        dtype="float32", preprocessing={"layout": "NHWC"}),
        x=x, stages=tuple(stages), float_outputs=exit_outputs(model, stages, x), split_error=split_err,
        feeds=stage_inputs(stages, x[:RANGE_SAMPLES], input_name), precision=precision, report=report)
