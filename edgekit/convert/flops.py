"""Count multiply-accumulate FLOPs (2 per MAC) of a Keras functional model, per sample."""
from typing import Iterable

import numpy as np

from edgekit.convert.split import _graph_nodes


def _prod(shape: Iterable) -> int:
    return int(np.prod([d for d in shape if d is not None], dtype=np.int64))


def model_flops(model) -> int:
    total = 0
    for node in _graph_nodes(model):
        op = node.operation
        kind = type(op).__name__
        if not node.outputs or not node.input_tensors:
            continue
        out_shape = node.outputs[0].shape[1:]
        in_shape = node.input_tensors[0].shape[1:]
        if kind in ("Conv2D", "Conv1D", "Conv3D"):
            kernel = _prod(op.kernel_size)
            cin = in_shape[-1] // max(getattr(op, "groups", 1), 1)
            total += 2 * _prod(out_shape) * kernel * cin
        elif kind == "DepthwiseConv2D":
            total += 2 * _prod(out_shape) * _prod(op.kernel_size)
        elif kind == "Dense":
            total += 2 * _prod(out_shape) * in_shape[-1]
        elif kind in ("Add", "Multiply", "Subtract", "Average", "Maximum", "Minimum"):
            total += _prod(out_shape) * (len(node.input_tensors) - 1)
    return int(total)
