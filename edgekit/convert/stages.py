"""What a front end (keras_front.py, onnx_front.py) hands the rest of the pipeline: the same stages and data
whatever the model's format, so that quantize, measure, thresholds and bundle run one way."""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.convert.evaluate import max_abs_error
from edgekit.errors import ModelError
from edgekit.manifest import InputSpec, TensorSpec

PARITY_TOL = 1e-4           # chained stages vs the source model, max abs difference at any exit
PARITY_SAMPLES = 32


@dataclass(frozen=True)
class Stage:
    index: int
    model: Any                       # what quantize builds from: a keras.Model (inputs by name -> dict of outputs
                                     # by name) or the directory of a SavedModel (signature serving_default)
    input_names: Tuple[str, ...]
    carried_names: Tuple[str, ...]
    exit_name: str
    inputs: Tuple[TensorSpec, ...]   # float32, by name, in input_names order
    outputs: Tuple[TensorSpec, ...]  # carried, exit, then the score if any
    flops: int
    score_name: Optional[str] = None  # a learned exit score output (a Keras model output named <exit>_score)


@dataclass(frozen=True)
class Front:
    name: str                             # the model's name (manifest model_name)
    input: InputSpec                      # the bundle's input: shape, layout, preprocessing
    x: np.ndarray                         # the calibration inputs, float32, in the bundle's layout
    stages: Tuple[Stage, ...]
    float_outputs: List[np.ndarray]       # the source model's exit outputs on x, in stage order
    split_error: List[float]              # per exit: chained stages vs the source model (PARITY_SAMPLES samples)
    feeds: List[Dict[str, np.ndarray]]    # per stage: its float inputs on the range samples (quantization ranges)
    precision: str                        # what the stages are built at (a front end may not take every one)
    report: Dict[str, Any]                # the front end's own report.json sections


def check_parity(chained: Sequence[np.ndarray], reference: Sequence[np.ndarray], what: str,
                 hint: str = "") -> List[float]:
    """Per exit error of the chained stages against the source model; a ModelError past PARITY_TOL."""
    err = max_abs_error(chained, reference)
    if max(err) > PARITY_TOL:
        raise ModelError("{} differ from the model by {:.3g} (> {}){}".format(what, max(err), PARITY_TOL, hint))
    return err
