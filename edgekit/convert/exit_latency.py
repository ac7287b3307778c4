"""Where the time goes along a backbone: the measured latency of its prefix up to each candidate cut point, so that
`auto:N` exits can be placed by time rather than by FLOPs (ExitOptions.place = "latency").

FLOPs fractions misplace exits wherever time is not proportional to FLOPs. Measured on the plain digits CNN (int8,
ai-edge-litert 2.1.0 XNNPACK, one thread, x86 with AVX-512): an int8 3x3 convolution there costs about 55 ns per
output pixel whatever its channels (8 or 32 channels at 32x32, int8 in and out: 0.060 and 0.057 ms), so its first
block (27% of the FLOPs) took 57% of the full-depth time and the stem alone 18%. A prefix is the backbone up to
the cut followed by a global average pool (standing in for the head, which pools too), built as convert builds a
stage at the precision converted (int8: quantize.uniform_stage, stem kept float32 when that is faster); all
prefixes and the whole backbone are timed together, interleaved, under the cost protocol. A cut's position is its
prefix's median over the whole backbone's. Costs are this machine's (a proxy for the board's).
"""
import hashlib
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from edgekit.rungs import INT8, PRECISIONS

PREFIX_SAMPLES = 64          # calibration samples for the prefixes' quantization ranges
_MEMO: Dict[Tuple, List[float]] = {}   # one measurement per model, cuts, precision and target in a process


def _digest(model) -> str:
    h = hashlib.sha256(model.to_json().encode("utf-8"))
    for w in model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _prefix(model, cut):
    import keras

    pools = {3: keras.layers.GlobalAveragePooling1D, 4: keras.layers.GlobalAveragePooling2D,
             5: keras.layers.GlobalAveragePooling3D}   # by rank with the batch axis
    t = cut.tensor
    out = pools[len(t.shape)](name="prefix_pool")(t) if len(t.shape) in pools else t
    return keras.Model(model.inputs, out, name="prefix_{}".format(cut.layer))


def prefix_times(model, cuts: Sequence[Any], x: np.ndarray, precision: str, target) -> Tuple[List[float], float]:
    """(median batch-1 ms of the prefix up to each cut, of the whole backbone), timed together here."""
    from edgekit.convert.evaluate import interleaved_ms
    from edgekit.convert.quantize import host_timing, uniform_stage

    rung = precision if precision in PRECISIONS else INT8          # adaptive: placed by its int8 base
    key = (_digest(model), tuple((c.layer, c.index) for c in cuts), rung, target.name)
    if key not in _MEMO:
        feeds = {model.inputs[0].name: np.asarray(x[:PREFIX_SAMPLES], np.float32)}
        blobs = [uniform_stage(m, rung, feeds, target)[0] for m in [_prefix(model, c) for c in cuts] + [model]]
        backend, threads = host_timing(target)
        _MEMO[key] = list(interleaved_ms(blobs, feeds, threads, backend=backend))
    got = _MEMO[key]
    return got[:-1], got[-1]


def latency_positions(model, x: np.ndarray, precision: str, target):
    """A `positions` function for exits.choose_auto: each cut's measured prefix time over the whole backbone's."""
    def positions(cuts: Sequence[Any]) -> List[float]:
        times, full = prefix_times(model, cuts, x, precision, target)
        return [min(1.0, t / max(full, 1e-12)) for t in times]
    return positions
