"""The layer registry for channel pruning: how each Keras layer class relates its channels.

Every layer class the pruner understands is listed in LAYER_RULES (explicit, one place). A layer not
listed, or listed but failing its rule's check, is *unsupported*: the channel groups touching it are left
alone (and reported), and pruning goes on around it.

Kinds:
  producer     makes a new channel set (conv filters, dense units); reads its input's channels
  channelwise  keeps the channel set, maybe with per-channel weights (BatchNorm, depthwise conv, pooling, ...)
  elementwise  ties all its inputs to one channel set (residual add, multiply, ...)
  concat       joins its inputs' channel sets at offsets (channel axis), or ties them (other axes)
  flatten      repeats the channel set once per spatial position (channels fastest)

Weight roles name, per weight axis, whether it indexes the input channels ("in"), the output channels
("out") or neither (None); surgery slices by them, costs scale by them, distortion masks by them.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

Roles = Tuple[Optional[str], ...]


@dataclass(frozen=True)
class LayerRule:
    kind: str
    width_key: Optional[str] = None                      # config key of the output width (producers)
    weights: Tuple[Tuple[str, Roles], ...] = ()           # weight name -> axis roles (last axes)
    check: Optional[Callable[[object, object], Optional[str]]] = None   # (layer, node) -> reason or None

    def roles(self, weight_name: str) -> Optional[Roles]:
        for name, roles in self.weights:
            if name == weight_name:
                return roles
        return None


def _channels_last(layer, node) -> Optional[str]:
    fmt = getattr(layer, "data_format", None)
    if fmt not in (None, "channels_last"):
        return "data_format {!r} (only channels_last is pruned)".format(fmt)
    return None


def _no_softmax(layer, node) -> Optional[str]:
    act = getattr(getattr(layer, "activation", None), "__name__", "")
    if act in ("softmax", "log_softmax"):
        return "{} over the channel axis mixes channels".format(act)
    return None


def _conv(layer, node) -> Optional[str]:
    if getattr(layer, "groups", 1) != 1:
        return "grouped convolution (groups={})".format(layer.groups)
    return _channels_last(layer, node) or _no_softmax(layer, node)


def _depthwise(layer, node) -> Optional[str]:
    if getattr(layer, "depth_multiplier", 1) != 1:
        return "depth_multiplier {} (only 1 is pruned)".format(layer.depth_multiplier)
    return _channels_last(layer, node)


def _batchnorm(layer, node) -> Optional[str]:
    rank = len(node.input_tensors[0].shape)
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    if axis is None or axis not in (-1, rank - 1):
        return "normalises over axis {} (only the last axis is pruned)".format(layer.axis)
    return None


def _activation(layer, node) -> Optional[str]:
    name = getattr(layer.activation, "__name__", str(layer.activation))
    if name in ("softmax", "log_softmax"):
        return "{} over the channel axis mixes channels".format(name)
    return None


def _softmax_axis(layer, node) -> Optional[str]:
    return "softmax over the channel axis mixes channels"


def _prelu(layer, node) -> Optional[str]:
    rank = len(node.input_tensors[0].shape)
    shared = tuple(a % rank for a in (layer.shared_axes or ()))
    if rank - 1 in shared:
        return "alpha shared over the channel axis"
    return None


def _rescaling(layer, node) -> Optional[str]:
    for value in (layer.scale, layer.offset):
        if np.size(value) != 1:
            return "per-channel scale or offset"
    return None


def _flatten(layer, node) -> Optional[str]:
    shape = node.input_tensors[0].shape
    if any(d is None for d in shape[1:]):
        return "flattens a tensor of unknown shape {}".format(tuple(shape))
    return _channels_last(layer, node)


_CONV_W = (("kernel", ("in", "out")), ("bias", ("out",)))
_DW_W = (("kernel", ("in", None)), ("bias", ("in",)))
_BN_W = tuple((n, ("in",)) for n in ("gamma", "beta", "moving_mean", "moving_variance"))

LAYER_RULES: Dict[str, LayerRule] = {
    "Conv1D": LayerRule("producer", "filters", _CONV_W, _conv),
    "Conv2D": LayerRule("producer", "filters", _CONV_W, _conv),
    "Conv3D": LayerRule("producer", "filters", _CONV_W, _conv),
    "Dense": LayerRule("producer", "units", _CONV_W, _no_softmax),
    "DepthwiseConv1D": LayerRule("channelwise", None, _DW_W, _depthwise),
    "DepthwiseConv2D": LayerRule("channelwise", None, _DW_W, _depthwise),
    "BatchNormalization": LayerRule("channelwise", None, _BN_W, _batchnorm),
    "PReLU": LayerRule("channelwise", None, (("alpha", ("in",)),), _prelu),
    "Activation": LayerRule("channelwise", check=_activation),
    "Softmax": LayerRule("channelwise", check=_softmax_axis),
    "Rescaling": LayerRule("channelwise", check=_rescaling),
    "Add": LayerRule("elementwise"),
    "Subtract": LayerRule("elementwise"),
    "Multiply": LayerRule("elementwise"),
    "Average": LayerRule("elementwise"),
    "Maximum": LayerRule("elementwise"),
    "Minimum": LayerRule("elementwise"),
    "Concatenate": LayerRule("concat"),
    "Flatten": LayerRule("flatten", check=_flatten),
}
for _name in ("ReLU", "LeakyReLU", "ELU", "Identity", "Dropout", "GaussianNoise", "GaussianDropout",
              "AlphaDropout", "ActivityRegularization"):
    LAYER_RULES[_name] = LayerRule("channelwise")
for _dims in ("1D", "2D", "3D"):
    for _base in ("MaxPooling", "AveragePooling", "GlobalAveragePooling", "GlobalMaxPooling", "ZeroPadding",
                  "Cropping", "UpSampling", "SpatialDropout"):
        LAYER_RULES[_base + _dims] = LayerRule("channelwise", check=_channels_last)


def rule_for(layer, node) -> Tuple[Optional[LayerRule], str]:
    """The rule for this call of a layer, or (None, reason) when the pruner cannot see through it."""
    kind = type(layer).__name__
    rule = LAYER_RULES.get(kind)
    if rule is None:
        return None, "layer class {} is not in the pruning registry".format(kind)
    if len(node.outputs) != 1:
        return None, "{} outputs".format(len(node.outputs))
    reason = rule.check(layer, node) if rule.check else None
    if reason:
        return None, reason
    for w in layer.weights:
        if rule.roles(w.name) is None:
            return None, "weight {!r} of {} has no pruning rule".format(w.name, kind)
    return rule, ""
