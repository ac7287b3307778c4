"""What adaptive precision optimises: the objective, and the time each op's rung costs on the target.

- latency (default): no slower than the target's fastest uniform precision; within that, the smallest size
  whose ops each lose no more than int8 would (or the tolerance), so accuracy stays at uniform int8's. 4-bit
  weights add noise at the exits: they are taken, least noise per byte saved first, while the exits' estimated
  SQNR against float stays at least min(uniform int8's, HEADROOM_DB) (noise powers of single ops add up).
- accuracy: the least loss within the latency of the fastest uniform precision.
- size: the lowest rung within the tolerance per op, whatever its kernel costs (the plan then says how much
  slower than uniform int8 it is).
Time is measured per op and rung (costs.py): the op's extra ms over an all-int8 build of its stage. A rung
whose kernel is slow on the target costs that time and is left out unless the objective is size.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

from edgekit.convert.precision.allocate import Choice, Layer, StageCost, by_budget
from edgekit.convert.precision.costs import noise_ms
from edgekit.convert.precision.kernels import BUILTIN
from edgekit.convert.precision.ladder import rank, weight_bytes
from edgekit.rungs import INT4W
from edgekit.runtime.cost_protocol import machine
from edgekit.errors import ConfigError

OBJECTIVES = ("latency", "size", "accuracy")
DEFAULT_OBJECTIVE = "latency"
SLOWER = 0.03        # a plan more than this fraction slower than uniform int8 is reported as slower
HEADROOM_DB = 30.0   # exit SQNR against float that still counts as int8-like: a model whose int8 exits are above
                     # it may spend the difference on 4-bit weights; one below it gets no extra noise at all


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ConfigError("objective {!r} is unknown; allowed: {}".format(objective, ", ".join(OBJECTIVES)))
    return objective


def measured_cost(ly: Layer, rung: str) -> float:
    """Extra ms of the op at `rung` over int8, as measured (a rung not measured or not built: infinity). An op
    without an int8 kernel is float in the int8 build as well: no extra time."""
    if ly.pinned:
        return 0.0
    if rung == "int8":
        return ly.costs.get("int8", 0.0)
    return ly.costs.get(rung, math.inf)


def uniform_ms(costs: Sequence[StageCost], fp16_compute: bool) -> Dict[str, float]:
    """Full-depth ms of each uniform precision every stage was built at (float16 counts as float32 at least on
    a target without FP16 arithmetic: there it does not compute faster)."""
    common = set.intersection(*(set(c.latency_ms) for c in costs)) if costs else set()
    out = {r: sum(c.latency_ms[r] for c in costs) for r in common if r != "int4w"}
    if "float16" in out and "float32" in out and not fp16_compute:
        out["float16"] = max(out["float16"], out["float32"])
    return out


def fastest_uniform(costs: Sequence[StageCost], fp16_compute: bool) -> Tuple[str, float]:
    by = uniform_ms(costs, fp16_compute)
    name = min(by, key=by.get)
    return name, by[name]


def acceptable(ly: Layer, rung: str, floor: float) -> bool:
    """A rung at or above int8, or one that loses no more than int8 does for this op (or the floor)."""
    if rung == "float32" or rank(rung) >= rank("int8"):
        return True
    ref = ly.losses["int8"].kl if "int8" in ly.losses else 0.0
    return rung in ly.losses and ly.losses[rung].kl <= max(floor, ref)


def needs_recipes(ly: Layer, rung: str) -> bool:
    """Whether the op at `rung` takes its stage off the converter's int8 build (to per-op recipes); 4-bit weights
    on an op that takes them inside that build (fc4.py) do not."""
    return rung != "int8" and not ly.pinned and not (rung == INT4W and ly.four_bit)


def stage_cost(ly: Layer, rung: str, costs: Sequence[StageCost]) -> float:
    """measured_cost, plus what moving any op of the stage off int8 costs: the stage is then built from per-op
    recipes instead of by the converter (StageCost.mixed_ms; counted for each op moved, so on the safe side)."""
    extra = costs[ly.stage].mixed_ms if costs and needs_recipes(ly, rung) else 0.0
    return measured_cost(ly, rung) + max(0.0, extra)


def noise(db: float) -> float:
    """Noise power relative to the signal at an SQNR of `db`."""
    return 10.0 ** (-db / 10.0)


def added_noise(ly: Layer, rung: str) -> float:
    """Noise the op adds at the exits at `rung` over int8, from its measured sensitivity (each op alone)."""
    if rung in ("int8", "float32") or rank(rung) >= rank("int8") or ly.pinned or rung not in ly.losses:
        return 0.0
    ref = noise(ly.losses["int8"].sqnr_db) if "int8" in ly.losses else 0.0
    return max(0.0, noise(ly.losses[rung].sqnr_db) - ref)


def noise_room(costs: Sequence[StageCost]) -> float:
    """Noise the latency objective may add at the exits: up to an SQNR of min(uniform int8's, HEADROOM_DB), uniform
    int8's estimated from its stages' own (each stage alone at int8, the noises added)."""
    int8 = sum(noise(c.losses["int8"].sqnr_db) for c in costs if "int8" in c.losses)
    return max(0.0, noise(HEADROOM_DB) - int8)


def smallest_fast(layers: Sequence[Layer], slack_ms: float, floor: float,
                  costs: Sequence[StageCost] = (), room: float = math.inf) -> Tuple[Dict[str, Choice], float]:
    """Latency objective: every op at int8 (its fastest acceptable rung when int8 is not allowed), then the
    moves to smaller acceptable rungs that add the least time per byte saved (free or faster ones first, then the
    least added noise per byte) while the total extra time over all-int8 stays within `slack_ms` and the noise
    added at the exits within `room` (added_noise). A stage's first op taking it off the converter's int8 build
    also pays the stage's mixed_ms. Returns the choices and the estimated extra ms."""
    size = lambda ly, r: weight_bytes(r, ly.params)  # noqa: E731
    ok = {ly.key: [r for r in ly.rungs if acceptable(ly, r, floor) and measured_cost(ly, r) < math.inf]
          for ly in layers}
    cur, moved = {}, set()
    for ly in layers:
        cands = ok[ly.key] or ["float32"]
        cur[ly.key] = "float32" if ly.pinned else "int8" if "int8" in cands else \
            min(cands, key=lambda r: (measured_cost(ly, r), size(ly, r)))
        if needs_recipes(ly, cur[ly.key]):
            moved.add(ly.stage)
    extra = sum(measured_cost(ly, cur[ly.key]) for ly in layers if not ly.pinned)
    noisy = sum(added_noise(ly, cur[ly.key]) for ly in layers)
    extra += sum(max(0.0, costs[k].mixed_ms) for k in moved) if costs else 0.0
    while True:
        best: Optional[Tuple[Tuple[float, float], Layer, str, float]] = None
        for ly in layers:
            if ly.pinned:
                continue
            r0 = cur[ly.key]
            for r in ok[ly.key]:
                saved = size(ly, r0) - size(ly, r)
                more = measured_cost(ly, r) - measured_cost(ly, r0)
                if costs and ly.stage not in moved and needs_recipes(ly, r):
                    more += max(0.0, costs[ly.stage].mixed_ms)
                louder = added_noise(ly, r) - added_noise(ly, r0)
                if saved <= 0 or extra + more > slack_ms + 1e-12 or noisy + louder > room:
                    continue
                key = (max(0.0, more) / saved, louder / saved, -saved)
                if best is None or key < best[0]:
                    best = (key, ly, r, more)
        if best is None:
            break
        _, ly, r, more = best
        noisy += added_noise(ly, r) - added_noise(ly, cur[ly.key])
        cur[ly.key] = r
        if needs_recipes(ly, r):
            moved.add(ly.stage)
        extra += more
    reason = "smallest acceptable rung within the latency of the fastest uniform precision"
    return {ly.key: (cur[ly.key], ly.pinned or reason) for ly in layers}, extra


def by_objective(layers: Sequence[Layer], costs: Sequence[StageCost], objective: str, floor: float,
                 fp16_compute: bool) -> Tuple[Dict[str, Choice], Dict]:
    """Choices for the latency or accuracy objective and the budget record (limit = fastest uniform ms)."""
    name, limit = fastest_uniform(costs, fp16_compute)
    int8 = uniform_ms(costs, fp16_compute).get("int8", limit)
    budget = {"limit": limit, "limit_from": "uniform " + name, "unit": "ms", "int8_ms": int8}
    if objective == "latency":
        room = noise_room(costs)
        choice, extra = smallest_fast(layers, limit - int8, floor, costs, room)
        budget.update(estimated=int8 + extra, smallest=int8 + extra, noise_room=room, headroom_db=HEADROOM_DB)
        return choice, budget
    choice, est, low = by_budget(layers, limit, lambda ly, r: stage_cost(ly, r, costs), floor, "latency",
                                 fixed=int8)
    budget.update(estimated=est, smallest=low)
    return choice, budget


def accuracy_for_time(layers: Sequence[Layer], choice: Dict[str, Choice], allowed_ms: float, last_stage: int,
                      done: Sequence[str]) -> Optional[Layer]:
    """Time objectives, when the built plan is below uniform int8's accuracy: an op at int8 to raise to float32
    while the estimated time over all-int8 stays within allowed_ms (4-bit moves that measured faster leave
    room) and the weights stay within int8's bytes (4-bit moves leave room): the one that loses most at int8
    (KL, alone) per ms its float32 costs, in the stages up to the exit that fell short. None when none fits."""
    extra = sum(measured_cost(ly, choice[ly.key][0]) for ly in layers if not ly.pinned)
    spare = sum(weight_bytes("int8", ly.params) - weight_bytes(choice[ly.key][0], ly.params)
                for ly in layers if not ly.pinned)
    best: Optional[Tuple[float, Layer]] = None
    for ly in layers:
        if ly.pinned or ly.stage > last_stage or ly.key in done or choice[ly.key][0] != "int8" or \
                "int8" not in ly.losses or not ly.losses["int8"].kl > 0:
            continue
        more = measured_cost(ly, "float32") - measured_cost(ly, "int8")
        if not math.isfinite(more) or extra + more > allowed_ms + 1e-12 or \
                weight_bytes("float32", ly.params) - weight_bytes("int8", ly.params) > spare:
            continue
        gain = ly.losses["int8"].kl / max(more, 1e-4)
        if best is None or gain > best[0]:
            best = (gain, ly)
    return best[1] if best else None


def backoff_ceiling(objective: Optional[str]) -> Optional[str]:
    """The highest rung a held-out back-off may raise an op to: int8 when time decides (higher rungs run on
    slower kernels), none otherwise."""
    return "int8" if objective in ("latency", "accuracy") else None


MAX_SLOW = 3         # plan ops sent back to int8 when the built plan measures slower than its limit


def to_int8(layers: Sequence[Layer], choice: Dict[str, Choice]) -> List[Layer]:
    """The ops to send back to int8 when their stage measured slower than its int8 build: those that left
    XNNPACK for a builtin kernel, else the one with the most measured time over int8 (none: nothing to do)."""
    cands = [ly for ly in layers if not ly.pinned and "int8" in ly.rungs and choice[ly.key][0] != "int8"]
    slow = [ly for ly in cands if ly.kernels.get(choice[ly.key][0]) == BUILTIN != ly.kernels.get("int8")]
    if slow or not cands:
        return slow
    return [max(cands, key=lambda ly: measured_cost(ly, choice[ly.key][0]))]


def slow_stage(got: Dict, plan: Sequence[bytes], int8: Optional[Sequence[bytes]]) -> Optional[int]:
    """The stage of the plan most slower than its int8 build beyond the noise (None: none is)."""
    if not int8:
        return None
    excess = {k: got["plan"][k].median_ms - got["int8"][k].median_ms - noise_ms(got["int8"][k])
              for k in range(len(plan)) if plan[k] != int8[k]}
    worst = max(excess, key=excess.get) if excess else None
    return worst if worst is not None and excess[worst] > 0 else None


def against_int8(got: Dict, plan_sizes: Sequence[int], prof, loaded: Sequence[int] = ()) -> Dict:
    """Plan vs uniform builds: full-depth ms (sum of the stages' medians) of each, per stage, and size and
    latency factors vs int8. plan_sizes: the stage files' bytes; loaded: the models' (4-bit convolution filters
    are stored packed and restored to int8 at load)."""
    total = {k: sum(c.median_ms for c in costs) for k, costs in got.items()}
    out = {"plan_ms": total["plan"], "plan_bytes": int(sum(plan_sizes)),
           "plan_loaded_bytes": int(sum(loaded or plan_sizes)),
           "uniform_ms": {k: v for k, v in total.items() if k != "plan"},
           "stage_ms": {k: [c.median_ms for c in costs] for k, costs in got.items()},
           "stage_iqr_ms": {k: [c.iqr_ms for c in costs] for k, costs in got.items()},
           "measured": "each stage at batch 1, 1 thread, every stage of every candidate interleaved call by call, "
                       "median; full depth = the sum over the stages",
           "machine": machine()}
    if "int8" in got:
        int8_bytes = sum(len(u["int8"]) for u in prof.uniform)
        out.update(int8_ms=total["int8"], int8_bytes=int(int8_bytes),
                   latency_vs_int8=total["plan"] / max(total["int8"], 1e-9),
                   size_vs_int8=sum(plan_sizes) / float(max(int8_bytes, 1)))
    return out


def summary_lines(report: Dict, options) -> Sequence[str]:
    """What convert prints on stdout for an adaptive plan: one line against uniform int8, and one more when the
    plan is slower than uniform int8."""
    t, v = report.get("against_int8") or {}, report["verification"]
    if "latency_vs_int8" not in t:
        return ["adaptive precision: no uniform int8 build to compare with; full depth {:.3f} ms".format(
            t.get("plan_ms", float("nan")))]
    acc = "held-out {} {} vs {} (per exit)".format(v["metric"], _pcts(v["chosen"]), _pcts(v["uniform_int8"] or []))
    label = {"tolerance": "objective size", "size": "size budget", "latency": "latency budget"}.get(
        report["mode"], report["mode"].replace("-", " "))
    packed = "" if t.get("plan_loaded_bytes", t["plan_bytes"]) == t["plan_bytes"] else \
        " on disk; 4-bit convolution weights stored packed, {:.1f} KiB in memory after load".format(
            t["plan_loaded_bytes"] / 1024.0)
    lines = ["adaptive precision ({}) vs uniform int8: size {:.2f}x ({:.1f} vs {:.1f} KiB{}), {}, latency {:.2f}x "
             "({:.3f} vs {:.3f} ms full depth, batch 1, 1 thread, interleaved on this machine)".format(
                 label, t["size_vs_int8"], t["plan_bytes"] / 1024.0, t["int8_bytes"] / 1024.0, packed, acc,
                 t["latency_vs_int8"], t["plan_ms"], t["int8_ms"])]
    if t["latency_vs_int8"] > 1.0 + SLOWER:
        why = {"tolerance": "--objective size ignores time", "size": "a size budget ignores time"}.get(
            report["mode"], "the op kernels measured slower than int8")
        lines.append("adaptive precision: this plan is {:.2f}x slower than uniform int8 ({}; --objective latency "
                     "keeps it no slower)".format(t["latency_vs_int8"], why))
    return lines


def _pcts(values: Sequence[float]) -> str:
    return "/".join("{:.1%}".format(x) for x in values) or "-"
