"""Count multiply-accumulate FLOPs (2 per MAC) of a Keras functional model, per sample."""
from typing import Iterable

import numpy as np

from edgekit.convert.keras_graph import graph_nodes

COMPUTE_LAYERS = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "Dense")


def prod(shape: Iterable) -> int:
    return int(np.prod([d for d in shape if d is not None], dtype=np.int64))


def node_flops(node) -> int:
    """FLOPs of one graph node: convolutions, dense layers and element-wise merges; 0 for everything else."""
    op = node.operation
    kind = type(op).__name__
    if not node.outputs or not node.input_tensors:
        return 0
    out_shape = node.outputs[0].shape[1:]
    in_shape = node.input_tensors[0].shape[1:]
    if kind in ("Conv2D", "Conv1D", "Conv3D"):
        cin = in_shape[-1] // max(getattr(op, "groups", 1), 1)
        return 2 * prod(out_shape) * prod(op.kernel_size) * cin
    if kind == "DepthwiseConv2D":
        return 2 * prod(out_shape) * prod(op.kernel_size)
    if kind == "Dense":
        return 2 * prod(out_shape) * in_shape[-1]
    if kind in ("Add", "Multiply", "Subtract", "Average", "Maximum", "Minimum"):
        return prod(out_shape) * (len(node.input_tensors) - 1)
    return 0


def model_flops(model) -> int:
    return int(sum(node_flops(node) for node in graph_nodes(model)))
