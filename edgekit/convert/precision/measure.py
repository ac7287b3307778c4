"""Profile every stage: float builds, whole-stage builds at each rung, per-op sensitivity, kernel fallbacks."""
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from edgekit.convert.precision.allocate import Layer, StageCost
from edgekit.convert.precision.graph import OpInfo, read_ops
from edgekit.convert.precision.ladder import INT4_OPS, LAYER_RUNGS
from edgekit.errors import ModelError
from edgekit.convert.precision.sensitivity import Cache, Chain, latency_ms, layer_loss, stage_loss

_IO_OPS = ("QUANTIZE", "DEQUANTIZE")


@dataclass
class Profile:
    stages: Sequence                    # split.Stage
    feeds: List[Dict[str, np.ndarray]]  # float stage inputs on the range samples
    float_blobs: List[bytes]
    ops: List[List[OpInfo]]
    layers: List[Layer]                 # weighted ops of every stage, in order
    costs: List[StageCost]
    uniform: List[Dict[str, bytes]]     # whole-stage builds by rung
    chain: Chain
    cache_hits: int
    fallbacks: List[Dict[str, str]]     # ops without a quantized kernel


def _float_ops_in(blob: bytes) -> List[OpInfo]:
    """Ops of an int8 build that compute in float (no int8 kernel; the converter fell back)."""
    from edgekit.runtime.interpreter import load_backend

    interp = load_backend().interpreter(model_content=blob)
    out = []
    for op in read_ops(blob):
        if op.op in _IO_OPS or not op.outputs:
            continue
        if interp.get_tensor_details()[op.outputs[0]]["dtype"] == np.float32:
            out.append(op)
    return out


def _uniform_builds(st, feed: Dict[str, np.ndarray], fblob: bytes, ops: List[OpInfo], rungs: Sequence[str],
                    qsvs) -> Dict[str, bytes]:
    from edgekit.convert.precision.recipes import quantize_ops
    from edgekit.convert.quantize import quantize_stage

    builds = {"float32": fblob}
    for r in rungs:
        if r in ("float16", "int16x8"):
            try:
                builds[r] = quantize_stage(st.model, r, feed)
            except ModelError:          # e.g. an op with no 16x8 kernel: no whole-stage build at this rung
                continue
        elif r == "int8":
            builds[r] = quantize_stage(st.model, "mixed", feed, {})     # int8 with float fallback
        elif r == "int4w":
            builds[r] = quantize_ops(fblob, {o.scope: ("int4w" if o.op in INT4_OPS else "int8") for o in ops},
                                     qsvs=qsvs)
    return builds


def profile(stages: Sequence, data: Dict, rungs: Sequence[str], input_name: str,
            say: Callable[[str], None]) -> Profile:
    from edgekit.convert.precision.recipes import calibrate, supported
    from edgekit.convert.quantize import quantize_stage
    from edgekit.convert.split import stage_inputs

    feeds = stage_inputs(stages, data["ranges"], input_name)
    fblobs = [quantize_stage(st.model, "float32", f) for st, f in zip(stages, feeds)]
    chain = Chain(stages, fblobs, data["sens"], input_name)
    all_ops, layers, costs, uniform, fallbacks, hits = [], [], [], [], [], 0
    for k, st in enumerate(stages):
        known = [ly.name for ly in st.model.layers] + [st.exit_name]
        ops = read_ops(fblobs[k], known)
        all_ops.append(ops)
        qsvs = calibrate(fblobs[k], feeds[k])
        builds = _uniform_builds(st, feeds[k], fblobs[k], ops, rungs, qsvs)
        uniform.append(builds)
        no_kernel = {o.scope for o in _float_ops_in(builds["int8"])} if "int8" in builds else set()
        for o in ops:
            if o.scope in no_kernel:
                fallbacks.append({"stage": str(k), "op": o.op, "layer": o.layer,
                                  "note": "no int8 kernel: kept float32"})
        costs.append(StageCost(
            latency_ms={r: latency_ms(chain.backend, b, chain.inputs[k]) for r, b in builds.items()},
            size_bytes={r: len(b) for r, b in builds.items()},
            losses={r: stage_loss(chain, k, b) for r, b in builds.items() if r != "float32"},
            macs=sum(o.macs for o in ops),
            fixed_bytes=max(0, len(fblobs[k]) - 4 * sum(o.params for o in ops if o.weighted))))
        cache = Cache(fblobs[k], [feeds[k], chain.inputs[k]])
        for o in ops:
            if not o.weighted:
                continue
            allowed = tuple(r for r in LAYER_RUNGS if r in rungs and
                            (r == "float32" or supported(o.op, r)))
            ly = Layer(stage=k, scope=o.scope, op=o.op, name=o.layer, params=o.params, macs=o.macs,
                       rungs=allowed if "float32" in allowed else allowed + ("float32",),
                       pinned="no int8 kernel: float fallback" if o.scope in no_kernel else "")
            for r in ly.rungs:
                if r != "float32" and not ly.pinned:
                    ly.losses[r] = layer_loss(chain, k, fblobs[k], o, r, qsvs, cache)
            layers.append(ly)
        cache.save()
        hits += cache.hits
        say("stage {}: {} ops measured at {}".format(k, sum(o.weighted for o in ops), ",".join(rungs)))
    return Profile(stages=stages, feeds=feeds, float_blobs=fblobs, ops=all_ops, layers=layers, costs=costs,
                   uniform=uniform, chain=chain, cache_hits=hits, fallbacks=fallbacks)


def op_rungs(ops: Sequence[OpInfo], weighted: Dict[str, str], pinned_float: Sequence[str]) -> Dict[str, str]:
    """A rung for every op of a mixed stage: weighted ops as chosen; an op without weights takes the
    activation width of what feeds it (the widest of its producers; int4w counts as int8)."""
    from edgekit.convert.precision.graph import producers

    prod = producers(ops)
    out: Dict[str, str] = {}
    counts: Dict[str, int] = {}
    for r in weighted.values():
        counts[r] = counts.get(r, 0) + 1
    default = max(counts, key=counts.get) if counts else "int8"
    order = ("int8", "int16x8", "float32")
    for o in ops:
        if o.scope in weighted:
            out[o.scope] = weighted[o.scope]
        elif o.scope in pinned_float:
            out[o.scope] = "float32"
        else:
            src = [out.get(prod[t].scope) for t in o.inputs if t in prod and prod[t].scope in out]
            src = ["int8" if r == "int4w" else r for r in src if r]
            out[o.scope] = max(src, key=order.index) if src else ("int8" if default == "int4w" else default)
    return out


def stage_label(rungs: Sequence[str]) -> str:
    uniq = set(rungs)
    return uniq.pop() if len(uniq) == 1 and next(iter(uniq)) != "int4w" else "mixed"


def weighted_choices(layers: Sequence[Layer], choice: Dict[str, Tuple[str, str]], k: int) -> Dict[str, str]:
    return {ly.scope: choice[ly.key][0] for ly in layers if ly.stage == k}
