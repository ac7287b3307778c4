"""Time every op at every rung, as built, on this machine: the latency side of each precision decision.

Per stage, one interleaved measurement (runtime.cost_protocol.measure_candidates) of: the whole-stage builds at each rung, a
baseline with every op at int8 (ai-edge-quantizer recipes, as mixed stages are built), and for each weighted op
and each of its other rungs the baseline with only that op moved. An op's cost at a rung is its build's median
minus the baseline's (ms, batch 1, 1 thread); a difference within the noise (the baseline's spread) counts as
none. An op that takes 4-bit weights inside the stage's int8 build (fc4.py: a fully connected op with INT4
weights, a convolution with 4-bit values in its int8 filter) is timed as it is built, that build with only the op
at 4 bits against the int8 build itself; its model is the one the interpreter runs (a bundle stores such a filter
packed and the runtime restores it before the interpreter exists, so packing costs no time here). The kernel
that ran the op (XNNPACK or builtin) is read from the interpreter of each build. Builds that
do not convert or run cost infinity: the rung is never chosen for time.
"""
import math
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from edgekit.convert.precision.fc4 import OPS as FOUR_BIT_OPS, four_bit, int8_op_index
from edgekit.convert.precision.kernels import BUILTIN, kernels_by_index, kernels_by_scope
from edgekit.convert.evaluate import DECISION_PROTOCOL
from edgekit.convert.precision.graph import op_rungs
from edgekit.convert.precision.recipes import quantize_ops
from edgekit.runtime.cost_protocol import Cost, CostProtocol, measure_candidates
from edgekit.errors import ModelError
from edgekit.runtime.interpreter import StageCall, load_backend
from edgekit.rungs import INT4W, INT8

NOISE_FRACTION = 0.02         # a difference below this share of the baseline (or half its IQR) is noise
BASE = "int8 baseline"
BASE_COPIES = 3               # the baseline is timed this many times (separate interpreters): its spread is noise
GROUP = 12                    # candidates timed together (with their own baseline copies)
PROTOCOL = DECISION_PROTOCOL  # the project-wide protocol, bounded for decisions made while converting
OP_PROTOCOL = CostProtocol(warmup=3, max_seconds=4.0)


def noise_ms(base: Cost, spread: float = 0.0) -> float:
    return max(0.5 * base.iqr_ms, NOISE_FRACTION * base.median_ms, spread)


def op_delta(cost: Cost, base: Cost, spread: float = 0.0) -> float:
    """Extra ms of a build over the baseline; 0 within the noise (spread: how far identical copies of the
    baseline measured apart)."""
    d = cost.median_ms - base.median_ms
    return 0.0 if abs(d) <= noise_ms(base, spread) else d


def _baseline(measured: Dict) -> Tuple[Cost, float]:
    """The baseline copies' median copy, and the range of their medians."""
    copies = sorted((measured[(BASE, str(i))] for i in range(BASE_COPIES)), key=lambda c: c.median_ms)
    return copies[len(copies) // 2], copies[-1].median_ms - copies[0].median_ms


def _caller(blob: bytes, feed: Mapping[str, np.ndarray]) -> Callable[[], object]:
    call = StageCall(load_backend().interpreter(model_content=blob, num_threads=1).get_signature_runner())
    one = {k: np.asarray(v[:1], np.float32) for k, v in feed.items()}
    call(**one)
    return lambda: call(**one)


def time_stage(fblob: bytes, ops: Sequence, layers: Sequence, pinned: Sequence[str], qsvs, feed,
               uniform: Dict[str, bytes], protocol: CostProtocol = OP_PROTOCOL
               ) -> Tuple[Dict[str, Cost], Cost]:
    """Fills each layer's `costs` (rung -> extra ms over int8) and `kernels` (rung -> kernel); returns the
    whole-stage costs by rung and the baseline's cost. Candidates are timed in groups of GROUP, each group with
    its own copies of the baseline: fewer interpreters in turn keep the caches as warm as one stage's are."""
    weighted = {o.scope: "float32" if o.scope in pinned else "int8" for o in ops if o.weighted}
    plain = [o.scope for o in ops if o.scope in pinned and not o.weighted]
    # ops without weights read at their producers' width: an int8 op between two float ones is not built right
    rungs_with = lambda scope, r: op_rungs(ops, dict(weighted, **{scope: r}), plain)  # noqa: E731
    base_rungs = op_rungs(ops, weighted, plain)
    base_blob = quantize_ops(fblob, base_rungs, qsvs=qsvs)
    base_kernels = kernels_by_scope(base_blob)
    builds: Dict[Tuple[str, str], bytes] = {}
    four = _four_bit_builds(fblob, layers, feed, uniform.get(INT8))
    for ly in layers:
        ly.costs["int8"], ly.kernels["int8"] = 0.0, base_kernels.get(ly.scope, BUILTIN)
        for r in ly.rungs:
            if r == "int8" or ly.pinned or (ly.scope, r) in four:
                continue
            try:
                builds[(ly.scope, r)] = quantize_ops(fblob, rungs_with(ly.scope, r), qsvs=qsvs)
                _caller(builds[(ly.scope, r)], feed)
            except (ModelError, RuntimeError, ValueError):
                builds.pop((ly.scope, r), None)
                ly.costs[r] = math.inf
    keys = [("stage", r) for r in uniform] + list(builds)
    builds.update({("stage", r): b for r, b in uniform.items()})
    whole: Dict[str, Cost] = {}
    base = None
    for g in range(0, max(1, len(keys)), GROUP):
        measured, gbase, spread = _group(keys[g:g + GROUP], builds, base_blob, feed, protocol)
        base = base or gbase
        for key, cost in measured.items():
            if key[0] == "stage":
                whole[key[1]] = cost
                continue
            ly = next(x for x in layers if x.scope == key[0])
            ly.kernels[key[1]] = kernels_by_scope(builds[key]).get(ly.scope, BUILTIN)
            ly.costs[key[1]] = _cost(cost, gbase, spread, ly.kernels[key[1]], ly.kernels["int8"])
    _time_four_bit(four, fblob, layers, feed, uniform.get(INT8), protocol)
    return whole, base


def _four_bit_builds(fblob: bytes, layers: Sequence, feed, int8_blob) -> Dict[Tuple[str, str], bytes]:
    """The int8 build with one op at 4-bit weights, for each op that takes them there (fc4.py); the ops are
    marked (Layer.four_bit). An op whose build fails is timed from a per-op recipe instead."""
    out: Dict[Tuple[str, str], bytes] = {}
    if int8_blob is None:
        return out
    for ly in layers:
        if ly.pinned or ly.op not in FOUR_BIT_OPS or INT4W not in ly.rungs:
            continue
        try:
            out[(ly.scope, INT4W)] = four_bit(int8_blob, fblob, [ly.scope])
            _caller(out[(ly.scope, INT4W)], feed)
            ly.four_bit = True
        except (ModelError, RuntimeError, ValueError):
            out.pop((ly.scope, INT4W), None)
    return out


def _time_four_bit(four: Dict[Tuple[str, str], bytes], fblob: bytes, layers: Sequence, feed, int8_blob,
                   protocol: CostProtocol) -> None:
    """Each build of _four_bit_builds against the int8 build (its baseline here), in groups of GROUP; the
    kernel is read from the op's own index in that build."""
    if not four:
        return
    where = int8_op_index(fblob, int8_blob)
    keys = list(four)
    for g in range(0, len(keys), GROUP):
        measured, gbase, spread = _group(keys[g:g + GROUP], four, int8_blob, feed, protocol)
        for key, cost in measured.items():
            ly = next(x for x in layers if x.scope == key[0])
            ly.kernels[key[1]] = _kernel_at(four[key], where.get(ly.scope))
            ly.costs[key[1]] = _cost(cost, gbase, spread, ly.kernels[key[1]], ly.kernels[INT8])


def _kernel_at(blob: bytes, index) -> str:
    return BUILTIN if index is None else kernels_by_index(blob).get(index, BUILTIN)


def _group(keys, builds, base_blob: bytes, feed, protocol: CostProtocol):
    """Time `keys` interleaved with BASE_COPIES copies of the baseline spread through the order."""
    spaced = list(keys)
    for i in range(BASE_COPIES):
        spaced.insert(i * (len(keys) + i) // BASE_COPIES, (BASE, str(i)))
    blobs = dict(builds)
    blobs.update({(BASE, str(i)): base_blob for i in range(BASE_COPIES)})
    measured = measure_candidates({key: _caller(blobs[key], feed) for key in spaced}, protocol)
    base, spread = _baseline(measured)
    return {k: c for k, c in measured.items() if k[0] != BASE}, base, spread


def _cost(cost: Cost, base: Cost, spread: float, kernel: str, int8_kernel: str) -> float:
    """op_delta; an op that leaves XNNPACK for a builtin kernel costs at least the noise unless it measured
    clearly faster: a slow kernel must not pass for a free one because the noise hid it."""
    d = op_delta(cost, base, spread)
    if kernel == BUILTIN and int8_kernel != BUILTIN and d >= 0.0:
        return max(d, noise_ms(base, spread))
    return d


def stage_times(candidates: Dict[str, Sequence[bytes]], feeds: Sequence[Mapping[str, np.ndarray]],
                protocol: CostProtocol = PROTOCOL) -> Dict[str, List[Cost]]:
    """Bundles (one blob per stage, float stage interfaces) timed stage by stage, every stage of every bundle
    interleaved in one measurement; a bundle's full-depth time is the sum of its stages' medians."""
    calls = {(name, k): _caller(b, f) for name, blobs in candidates.items() for k, (b, f) in
             enumerate(zip(blobs, feeds))}
    got = measure_candidates(calls, protocol)
    return {name: [got[(name, k)] for k in range(len(blobs))] for name, blobs in candidates.items()}


def chain_caller(blobs: Sequence[bytes], feeds: Sequence[Mapping[str, np.ndarray]]) -> Callable[[], None]:
    """Full depth at batch 1: every stage once on its own (float) input sample."""
    calls = [_caller(b, f) for b, f in zip(blobs, feeds)]

    def run() -> None:
        for c in calls:
            c()
    return run


def full_depth(candidates: Dict[str, Sequence[bytes]], feeds: Sequence[Mapping[str, np.ndarray]],
               protocol: CostProtocol = PROTOCOL) -> Dict[str, Cost]:
    """Whole bundles (one blob per stage) timed interleaved at full depth."""
    return measure_candidates({k: chain_caller(b, feeds) for k, b in candidates.items()}, protocol)
