"""Profile every stage: float builds, whole-stage builds at each rung, per-op sensitivity, kernel fallbacks."""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.convert.precision.allocate import Layer, StageCost
from edgekit.convert.precision.costs import op_delta, time_stage
from edgekit.convert.precision.graph import OpInfo, read_ops
from edgekit.convert.precision.recipes import calibrate, supported
from edgekit.convert.precision.sensitivity import Cache, Chain, layer_loss, stage_loss
from edgekit.convert.quantize import quantize_stage, uniform_stage, whole_stage
from edgekit.convert.split import stage_inputs
from edgekit.errors import ModelError, first_line
from edgekit.rungs import FLOAT32, INT8, INT16X8, LAYER_RUNGS, MIXED, RUNG
from edgekit.runtime.interpreter import load_backend

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
    kept_float: List[Tuple[str, ...]]   # per stage: op scopes the int8 build keeps float32 (measured faster here)
    pin_kept: bool                      # those ops stay float32 in every build (when time decides)
    skipped: List[Dict[str, str]]       # (stage or op, rung) builds that did not convert or run: rung left out
    qsvs: List[Dict]                    # per stage: activation ranges for the per-op recipes
    caches: List[Cache]                 # per stage: the on-disk sensitivity cache

    def ensure(self, ly: Layer, rung: str) -> bool:
        """Measure `ly` at `rung` if that was not done yet (measure="needed"); False if the rung cannot be
        built or run for this op (it is then dropped from ly.rungs)."""
        if rung == FLOAT32 or rung in ly.losses:
            return True
        op = next(o for o in self.ops[ly.stage] if o.scope == ly.scope)
        _measure(ly, self.chain, self.float_blobs[ly.stage], op, self.qsvs[ly.stage], self.caches[ly.stage],
                 self.skipped, only=rung)
        self.caches[ly.stage].save()
        return rung in ly.losses


def _float_ops_in(blob: bytes) -> List[OpInfo]:
    """Ops of an int8 build that compute in float (no int8 kernel; the converter fell back)."""
    interp = load_backend().interpreter(model_content=blob)
    out = []
    for op in read_ops(blob):
        if op.op in _IO_OPS or not op.outputs:
            continue
        if interp.get_tensor_details()[op.outputs[0]]["dtype"] == np.float32:
            out.append(op)
    return out


def _uniform_builds(st, feed: Dict[str, np.ndarray], fblob: bytes, ops: List[OpInfo], rungs: Sequence[str],
                    qsvs, skipped: List[Dict[str, str]], target) -> Tuple[Dict[str, bytes], Tuple[str, ...]]:
    """Whole-stage builds by rung, and the op scopes the int8 build keeps float32; a rung that does not convert
    or does not run is left out (and noted). int8 is the build `convert --precision int8` makes for the target
    (quantize.uniform_stage): the plan starts from it."""
    builds = {FLOAT32: fblob}
    kept: Tuple[str, ...] = ()
    for r in rungs:
        try:
            if r == INT8:
                builds[r], record = uniform_stage(st.model, INT8, feed, target)
                kept = tuple(record["float32_ops"]) if record else ()
            else:
                builds[r] = whole_stage(st.model, r, feed, fblob, ops, qsvs)
            runs(builds[r], feed)
        except (ModelError, RuntimeError, ValueError) as exc:   # e.g. an op with no 16x8 kernel
            builds.pop(r, None)
            skipped.append({"stage": str(st.index), "rung": r, "scope": "whole stage", "why": first_line(exc, 200)})
    return builds, kept if INT8 in builds else ()


def runs(blob: bytes, feed: Dict[str, np.ndarray]) -> None:
    """Raise RuntimeError when the interpreter cannot prepare or run `blob` on one sample of `feed`."""
    sig = load_backend().interpreter(model_content=blob, num_threads=1).get_signature_runner()
    sig(**{k: np.asarray(v[:1], np.float32) for k, v in feed.items()})


def profile(stages: Sequence, data: Dict, rungs: Sequence[str], input_name: str, target,
            say: Callable[[str], None], stop_at: Optional[float] = None, pin_kept: bool = False) -> Profile:
    """stop_at: measure each op's rungs lowest first only until one loses at most this (KL nats); None: all.
    pin_kept: the ops the int8 build keeps float32 stay float32 (the plan starts from that build)."""
    feeds = stage_inputs(stages, data["ranges"], input_name)
    fblobs = [quantize_stage(st.model, FLOAT32, f) for st, f in zip(stages, feeds)]
    chain = Chain(stages, fblobs, data["sens"], input_name)
    all_ops, layers, costs, uniform, fallbacks, hits = [], [], [], [], [], 0
    skipped: List[Dict[str, str]] = []
    all_qsvs, caches, kept_float = [], [], []
    for k, st in enumerate(stages):
        known = [ly.name for ly in st.model.layers] + [st.exit_name]
        ops = read_ops(fblobs[k], known)
        all_ops.append(ops)
        qsvs = calibrate(fblobs[k], feeds[k])
        all_qsvs.append(qsvs)
        builds, kept = _uniform_builds(st, feeds[k], fblobs[k], ops, rungs, qsvs, skipped, target)
        uniform.append(builds)
        kept_float.append(kept)
        pinned_kept = set(kept) if pin_kept else set()
        no_kernel = {o.scope for o in _float_ops_in(builds[INT8])} - set(kept) if INT8 in builds else set()
        for o in ops:
            if o.scope in no_kernel:
                fallbacks.append({"stage": str(k), "op": o.op, "layer": o.layer,
                                  "note": "no int8 kernel: kept float32"})
        cache = Cache(fblobs[k], [feeds[k], chain.inputs[k]])
        caches.append(cache)
        weighted = [o for o in ops if o.weighted]
        mine = [_layer(k, o, rungs, no_kernel, pinned_kept) for o in weighted]
        for i, (ly, o) in enumerate(zip(mine, weighted)):
            say("stage {}: sensitivity of {} {}/{}".format(k, o.layer, i + 1, len(weighted)))
            _measure(ly, chain, fblobs[k], o, qsvs, cache, skipped, stop_at=stop_at)
        layers.extend(mine)
        cache.save()
        say("stage {}: timing {} ops at each rung (interleaved, batch 1, 1 thread)".format(k, len(mine)))
        whole, base = time_stage(fblobs[k], ops, mine, sorted(no_kernel | pinned_kept), qsvs, feeds[k],
                                 builds)
        costs.append(StageCost(
            latency_ms={r: c.median_ms for r, c in whole.items()},
            size_bytes={r: len(b) for r, b in builds.items()},
            losses={r: stage_loss(chain, k, b) for r, b in builds.items() if r != FLOAT32},
            macs=sum(o.macs for o in ops),
            fixed_bytes=max(0, len(fblobs[k]) - 4 * sum(o.params for o in ops if o.weighted)),
            spread_ms={r: c.iqr_ms for r, c in whole.items()},
            mixed_ms=op_delta(base, whole[INT8]) if INT8 in whole else 0.0))
        hits += cache.hits
        say("stage {}: {} ops measured at {}".format(k, sum(o.weighted for o in ops), ",".join(rungs)))
    return Profile(stages=stages, feeds=feeds, float_blobs=fblobs, ops=all_ops, layers=layers, costs=costs,
                   uniform=uniform, chain=chain, cache_hits=hits, fallbacks=fallbacks, kept_float=kept_float,
                   pin_kept=pin_kept,
                   skipped=skipped, qsvs=all_qsvs, caches=caches)


def _layer(k: int, o: OpInfo, rungs: Sequence[str], no_kernel, kept_float) -> Layer:
    """The allocation record of weighted op `o` of stage k: its rungs, and why it stays float32 if it must."""
    allowed = tuple(r for r in LAYER_RUNGS if r in rungs and (r == FLOAT32 or supported(o.op, r)))
    return Layer(stage=k, scope=o.scope, op=o.op, name=o.layer, params=o.params, macs=o.macs,
                 rungs=allowed if FLOAT32 in allowed else allowed + (FLOAT32,),
                 pinned="no int8 kernel: float fallback" if o.scope in no_kernel else
                 "float32 in the int8 build (measured faster here)" if o.scope in kept_float else "")


def _measure(ly: Layer, chain, fblob: bytes, o: OpInfo, qsvs, cache, skipped: List[Dict[str, str]],
             stop_at: Optional[float] = None, only: str = "") -> None:
    """Loss of op `o` alone at its rungs, lowest first (all of them; up to the first within `stop_at`; or
    `only` one); a rung whose build fails to convert or run is dropped for this op."""
    if ly.pinned:
        return
    failed = set()
    for r in ly.rungs:
        if r == FLOAT32 or r in ly.losses or (only and r != only):
            continue
        try:
            ly.losses[r] = layer_loss(chain, ly.stage, fblob, o, r, qsvs, cache)
        except (ModelError, RuntimeError, ValueError) as exc:
            failed.add(r)
            skipped.append({"stage": str(ly.stage), "rung": r, "scope": o.scope, "layer": o.layer,
                            "why": first_line(exc, 200)})
            continue
        if stop_at is not None and ly.losses[r].kl <= stop_at:
            break
    ly.rungs = tuple(r for r in ly.rungs if r not in failed)


def _width(rung: str) -> int:
    return RUNG[rung].activation_width


def harmonize(ops: Sequence[OpInfo], rungs: Dict[str, str], can16: Callable[[OpInfo], bool]) -> Dict[str, str]:
    """One activation width per tensor: ai-edge-quantizer (0.1.0) refuses a tensor read by both an 8-bit and a
    16-bit activation op. Raise the 8-bit readers of such a tensor to int16x8 (float32 where `can16` says the
    op has no 16-bit recipe), until no tensor is read at two widths. float32 readers mix with either."""
    out = dict(rungs)
    readers: Dict[int, List[OpInfo]] = {}
    for o in ops:
        for t in set(o.inputs) - set(o.constants):     # constants get one copy per op before quantizing
            readers.setdefault(t, []).append(o)
    changed = True
    while changed:
        changed = False
        for group in readers.values():
            widths = {_width(out[o.scope]) for o in group}
            if 8 in widths and 16 in widths:
                for o in group:
                    if _width(out[o.scope]) == 8:
                        out[o.scope] = INT16X8 if can16(o) else FLOAT32
                        changed = True
    return out


def stage_label(rungs: Sequence[str]) -> str:
    uniq = set(rungs)
    return uniq.pop() if len(uniq) == 1 and RUNG[next(iter(uniq))].converter else MIXED


def weighted_choices(layers: Sequence[Layer], choice: Dict[str, Tuple[str, str]], k: int) -> Dict[str, str]:
    return {ly.scope: choice[ly.key][0] for ly in layers if ly.stage == k}
