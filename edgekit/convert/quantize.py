"""Convert one stage sub-model to a .tflite flatbuffer at a given precision.

Precisions (PRECISION_MODES is the registry): float32, float16 (fp16 weights), int8 (int8 weights and
activations, float interface), int16x8 (16-bit activations, 8-bit weights, float interface).
Input and output names of the signature are the stage's tensor names (dict outputs name them).
"""
import os
import tempfile
from typing import Callable, Dict, Iterator, List

import numpy as np

from edgekit.errors import ConfigError, ModelError

CALIBRATION_SAMPLES = 200


def _float16(conv, tf) -> None:
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]


def _int8(conv, tf) -> None:
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]


def _int16x8(conv, tf) -> None:
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]


PRECISION_MODES: Dict[str, Callable] = {
    "float32": lambda conv, tf: None,
    "float16": _float16,
    "int8": _int8,
    "int16x8": _int16x8,
}
NEEDS_CALIBRATION = ("int8", "int16x8")


def check_precision(precision: str) -> str:
    if precision not in PRECISION_MODES:
        raise ConfigError("unknown precision {!r}; allowed: {}".format(precision, ", ".join(PRECISION_MODES)))
    return precision


def quantize_stage(model, precision: str, feeds: Dict[str, np.ndarray]) -> bytes:
    """model: a stage keras.Model; feeds: float values of its inputs on calibration data, by name."""
    from edgekit.convert.tf import quiet, tensorflow

    tf = tensorflow()
    check_precision(precision)
    names = [t.name for t in model.inputs]
    n = min(CALIBRATION_SAMPLES, len(next(iter(feeds.values()))))

    def representative() -> Iterator[List[np.ndarray]]:
        for i in range(n):
            yield [feeds[name][i:i + 1].astype(np.float32) for name in names]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    PRECISION_MODES[precision](conv, tf)
    if precision in NEEDS_CALIBRATION:
        conv.representative_dataset = representative
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)          # the converter may drop temporary files in the working directory
        try:
            with quiet():
                return bytes(conv.convert())
        except Exception as exc:  # noqa: BLE001 - the converter raises many unrelated types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError("stage {} cannot be converted at {}: {}".format(model.name, precision, first[:300]))
        finally:
            os.chdir(cwd)
