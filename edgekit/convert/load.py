"""Load a Keras model file (.keras or .h5) as a functional model that can be split at its exits."""
import os
import zipfile

import keras

from edgekit.errors import ModelError, first_line

FORMATS = (".keras", ".h5")


def load_model(path: str):
    """Return a keras.Model; a missing, corrupt, or non-functional model is a ModelError."""
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise ModelError("model file not found: {}".format(path))
    if ext == ".onnx":          # `edgekit convert` takes ONNX through edgekit/convert/onnx.py (onnx2tf)
        raise ModelError("{}: an ONNX model does not load as a Keras model (onnx2tf gives a TensorFlow graph); "
                         "this step needs one of: {}".format(path, ", ".join(FORMATS)))
    if ext not in FORMATS:
        raise ModelError("{}: unsupported model format {!r}; allowed: {} (and .onnx for convert)".format(
            path, ext, ", ".join(FORMATS)))

    try:
        model = keras.models.load_model(path, compile=False)
    except (ValueError, OSError, zipfile.BadZipFile, KeyError, TypeError) as exc:
        raise ModelError("{} is not a readable Keras model: {}".format(path, first_line(exc, 300)))
    if isinstance(model, keras.Sequential):           # traced into the functional graph of the same layers
        try:
            model = keras.Model(model.inputs, model.outputs, name=model.name)
        except (AttributeError, ValueError) as exc:
            raise ModelError("{}: a Sequential model that cannot be traced ({}); edgekit needs a functional model "
                             "(keras.Model(inputs, outputs)) or a Sequential one with an Input".format(path, exc))
    if not hasattr(model, "_nodes_by_depth"):
        raise ModelError("{}: a {} model cannot be split; edgekit needs a functional model "
                         "(keras.Model(inputs, outputs))".format(path, type(model).__name__))
    if len(model.inputs) != 1:
        raise ModelError("{}: the model has {} inputs; allowed: exactly one input".format(path, len(model.inputs)))
    return model
