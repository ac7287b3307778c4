"""Pick a rung per weighted op: the tolerance rule, or the least total loss under a size or latency budget.

Size of an op at a rung: its weight bytes at that rung. Latency of an op at a rung: the stage's measured
batch-1 latency at that rung (a whole-stage build) times the op's share of the stage's multiply-adds. float16
is a whole-stage rung; on a target without FP16 arithmetic its latency counts as at least float32's, so it is
never chosen for speed there.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from edgekit.convert.precision.ladder import rank, weight_bytes
from edgekit.convert.precision.sensitivity import SQNR_CAP, Loss
from edgekit.rungs import FLOAT16, FLOAT32

ZERO = Loss(kl=0.0, sqnr_db=SQNR_CAP, layer_sqnr_db=SQNR_CAP)


@dataclass
class Layer:
    stage: int
    scope: str
    op: str
    name: str
    params: int
    macs: int
    rungs: Tuple[str, ...]                        # allowed, lowest first, always ends with float32
    losses: Dict[str, Loss] = field(default_factory=dict)
    pinned: str = ""                              # why it must stay float32 (no quantized kernel)
    costs: Dict[str, float] = field(default_factory=dict)    # rung -> measured extra ms over int8 (costs.py)
    kernels: Dict[str, str] = field(default_factory=dict)    # rung -> the kernel that ran the op (kernels.py)
    four_bit: bool = False                        # int4w is built inside the stage's int8 build (fc4.py)

    @property
    def key(self) -> str:
        """Unique across stages (op scopes repeat between stages, e.g. StatefulPartitionedCall_1:0)."""
        return "{}/{}".format(self.stage, self.scope)

    def loss(self, rung: str) -> Loss:
        return ZERO if rung == FLOAT32 else self.losses[rung]


@dataclass
class StageCost:
    latency_ms: Dict[str, float]                  # whole-stage builds, measured here
    size_bytes: Dict[str, int]
    losses: Dict[str, Loss]
    macs: int
    fixed_bytes: int                              # float32 file size minus its weights
    spread_ms: Dict[str, float] = field(default_factory=dict)   # IQR of each whole-stage build's latency
    mixed_ms: float = 0.0                         # an all-int8 per-op-recipe build's extra ms over the converter's


Choice = Tuple[str, str]                          # (rung, reason)


def op_latency(layer: Layer, rung: str, cost: StageCost, fp16_compute: bool) -> float:
    lat = dict(cost.latency_ms)
    if FLOAT16 in lat and not fp16_compute:
        lat[FLOAT16] = max(lat[FLOAT16], lat.get(FLOAT32, lat[FLOAT16]))
    return lat.get(rung, lat[FLOAT32]) * layer.macs / max(1, cost.macs)


def by_tolerance(layers: Sequence[Layer], tolerance: float) -> Dict[str, Choice]:
    out = {}
    for ly in layers:
        if ly.pinned:
            out[ly.key] = (FLOAT32, ly.pinned)
            continue
        pick = next((r for r in ly.rungs if ly.loss(r).kl <= tolerance), FLOAT32)
        out[ly.key] = (pick, "lowest rung with KL <= {:g}".format(tolerance))
    return out


def by_budget(layers: Sequence[Layer], budget: float, cost_of, floor: float, kind: str,
              fixed: float = 0.0) -> Tuple[Dict[str, Choice], float, float]:
    """Greedy: start every op at its cheapest rung (the lowest rung is not always the cheapest: 4-bit weights
    run slower than int8 here), then take the move to another rung with the most loss removed per unit of cost
    that still fits (a move that is cheaper and loses less goes first). Losses at or below `floor` count as
    none. Returns choices, estimated total and the smallest possible total (every op at its cheapest)."""
    eff = lambda ly, r: 0.0 if ly.loss(r).kl <= floor else ly.loss(r).kl  # noqa: E731
    cur = {ly.key: FLOAT32 if ly.pinned else min(ly.rungs, key=lambda r: (cost_of(ly, r), rank(r)))
           for ly in layers}
    total = fixed + sum(cost_of(ly, cur[ly.key]) for ly in layers)
    minimum = total
    while True:
        best: Optional[Tuple[float, Layer, str, float]] = None
        for ly in layers:
            if ly.pinned:
                continue
            r0 = cur[ly.key]
            for r in ly.rungs:
                gain = eff(ly, r0) - eff(ly, r)
                extra = cost_of(ly, r) - cost_of(ly, r0)
                if r == r0 or gain <= 0 or total + extra > budget:
                    continue
                ratio = gain / max(extra, 1e-12) if extra > 0 else float("inf")
                if best is None or ratio > best[0]:
                    best = (ratio, ly, r, extra)
        if best is None:
            break
        _, ly, r, extra = best
        cur[ly.key] = r
        total += extra
    reason = "least loss within the {} budget".format(kind)
    out = {ly.key: (cur[ly.key], ly.pinned or reason) for ly in layers}
    return out, total, minimum


def size_cost(ly: Layer, rung: str) -> float:
    return weight_bytes(rung, ly.params)


def stage_float16(layers: Sequence[Layer], choice: Dict[str, Choice], costs: Sequence[StageCost],
                  allowed: bool, tolerance: float, fp16_compute: bool) -> List[str]:
    """Stages whose every weighted op stayed float32 become float16 when that loses at most `tolerance`."""
    out = []
    for k, cost in enumerate(costs):
        mine = [ly for ly in layers if ly.stage == k]
        if not mine or not allowed or FLOAT16 not in cost.losses:
            out.append("")
            continue
        all_float = all(choice[ly.key][0] == FLOAT32 and not ly.pinned for ly in mine)
        ok = all_float and cost.losses[FLOAT16].kl <= tolerance
        out.append(("float16: halves the weights" + (" and computes in fp16 on this target" if fp16_compute
                                                      else " (this target has no FP16 arithmetic: size only)"))
                   if ok else "")
    return out


def backoff_pick(layers: Sequence[Layer], choice: Dict[str, Choice], done: Sequence[str],
                 ceiling: Optional[str] = None) -> Optional[Layer]:
    """The most sensitive op (largest loss at its chosen rung) that can still go up a rung (below `ceiling`)."""
    top = rank(ceiling) if ceiling is not None else rank(FLOAT32)
    cands = [ly for ly in layers if not ly.pinned and rank(choice[ly.key][0]) < top and ly.key not in done
             and (ceiling is None or ceiling in ly.rungs)]
    if not cands:
        return None
    return max(cands, key=lambda ly: ly.loss(choice[ly.key][0]).kl)


def next_rung(ly: Layer, rung: str, ceiling: Optional[str] = None) -> str:
    higher = [r for r in ly.rungs if rank(r) > rank(rung)]
    if ceiling is not None:
        higher = [r for r in higher if rank(r) <= rank(ceiling)] or [ceiling]
    return higher[0] if higher else FLOAT32
