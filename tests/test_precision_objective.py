"""Time in every precision decision: the objectives on fixed op costs, the timing protocol on a fake clock, the
kernel each op runs on, and what convert says about a plan slower than uniform int8."""
import numpy as np
import pytest

from tests.conftest import CALIB, DEMO


def _loss(kl):
    from edgekit.convert.precision.sensitivity import Loss

    return Loss(kl=kl, sqnr_db=30.0, layer_sqnr_db=None)


def _layer(name, params, costs, losses, op="CONV_2D", pinned=""):
    from edgekit.convert.precision.allocate import Layer

    return Layer(stage=0, scope=name, op=op, name=name, params=params, macs=params,
                 rungs=("int4w", "int8", "float32"), losses={r: _loss(v) for r, v in losses.items()},
                 pinned=pinned, costs=dict(costs))


def _layers():
    """conv: 4-bit weights on a slow kernel (+0.2 ms); fc: 4-bit weights faster than int8; fragile: 4-bit
    loses far more than int8 does; pinned: no int8 kernel."""
    return [_layer("conv", 10000, {"int8": 0.0, "int4w": 0.2, "float32": 0.3}, {"int4w": 1e-4, "int8": 1e-5}),
            _layer("fc", 5000, {"int8": 0.0, "int4w": -0.01, "float32": 0.02}, {"int4w": 1e-4, "int8": 1e-5},
                   op="FULLY_CONNECTED"),
            _layer("fragile", 8000, {"int8": 0.0, "int4w": 0.0, "float32": 0.1}, {"int4w": 0.5, "int8": 0.01}),
            _layer("pinned", 100, {}, {}, pinned="no int8 kernel: float fallback")]


def _rungs(choice, layers):
    return {ly.name: choice[ly.key][0] for ly in layers}


def test_latency_objective_takes_a_smaller_rung_only_where_its_kernel_costs_no_time():
    from edgekit.convert.precision import objective as ob

    layers = _layers()
    choice, extra = ob.smallest_fast(layers, 0.0, 1e-3)
    assert _rungs(choice, layers) == {"conv": "int8", "fc": "int4w", "fragile": "int8", "pinned": "float32"}
    assert extra == pytest.approx(-0.01)
    # slack for the slow kernel (e.g. the fastest uniform precision is slower than int8): then it is taken
    choice, extra = ob.smallest_fast(layers, 0.25, 1e-3)
    assert _rungs(choice, layers)["conv"] == "int4w" and extra == pytest.approx(0.19)
    # the fragile op never goes to 4 bits: it would lose more than int8 does, whatever time allows
    assert _rungs(choice, layers)["fragile"] == "int8"
    # moving an op off int8 makes its stage a per-op-recipe build; when that build is slower than the
    # converter's int8 one, the move pays for it (here more than the 4-bit layer saves)
    from edgekit.convert.precision.allocate import StageCost

    stage = StageCost(latency_ms={"int8": 1.0}, size_bytes={}, losses={}, macs=1, fixed_bytes=0, mixed_ms=0.05)
    choice, extra = ob.smallest_fast(layers, 0.0, 1e-3, [stage])
    assert set(_rungs(choice, layers).values()) == {"int8", "float32"} and extra == 0.0
    choice, extra = ob.smallest_fast(layers, 0.05, 1e-3, [stage])
    assert _rungs(choice, layers)["fc"] == "int4w" and extra == pytest.approx(0.04)


def test_size_objective_ignores_time_and_accuracy_objective_spends_only_free_time():
    from edgekit.convert.precision import allocate as al
    from edgekit.convert.precision import objective as ob

    layers = _layers()
    assert _rungs(al.by_tolerance(layers, 1e-3), layers)["conv"] == "int4w"      # slow kernel, still taken
    cost = al.StageCost(latency_ms={"int8": 1.0, "float32": 2.0, "float16": 0.5}, size_bytes={}, losses={}, macs=1,
                        fixed_bytes=0)
    choice, budget = ob.by_objective(layers, [cost], "accuracy", 1e-7, fp16_compute=False)
    assert budget["limit"] == pytest.approx(1.0) and budget["limit_from"] == "uniform int8"
    # least loss within int8's time: the fragile op goes to int8 (free); float32 for conv (+0.3 ms) does not fit
    assert budget["estimated"] <= 1.0 + 1e-9
    got = _rungs(choice, layers)
    assert got["conv"] == "int8" and got["fragile"] == "int8" and got["pinned"] == "float32"
    # on a target with FP16 arithmetic the float16 build (0.5 ms) is the fastest uniform precision
    assert ob.fastest_uniform([cost], fp16_compute=True) == ("float16", 0.5)
    assert ob.fastest_uniform([cost], fp16_compute=False) == ("int8", 1.0)


def test_backoff_for_time_objectives_stops_at_int8():
    from edgekit.convert.precision import allocate as al

    layers = _layers()
    choice = {ly.key: (r, "") for ly, r in zip(layers, ("int4w", "int8", "int4w", "float32"))}
    picked = al.backoff_pick(layers, choice, [], ceiling="int8")
    assert picked is not None and picked.name in ("conv", "fragile")
    assert al.next_rung(picked, "int4w", ceiling="int8") == "int8"
    choice = {ly.key: ("int8", "") for ly in layers}
    assert al.backoff_pick(layers, choice, [], ceiling="int8") is None
    assert al.backoff_pick(layers, choice, []) is not None           # without a ceiling: int8 -> float32


def test_noise_counts_as_no_time():
    from edgekit.convert.precision.costs import op_delta
    from edgekit.runtime.cost_protocol import Cost

    base = Cost(median_ms=1.0, p10_ms=0.98, p25_ms=0.98, p75_ms=1.02, p90_ms=1.02, calls=100, stable=True)
    assert op_delta(Cost(1.015, 1.0, 1.0, 1.03, 1.03, 100, True), base) == 0.0
    assert op_delta(Cost(1.3, 1.25, 1.25, 1.35, 1.35, 100, True), base) == pytest.approx(0.3)
    assert op_delta(Cost(0.9, 0.88, 0.88, 0.92, 0.92, 100, True), base) == pytest.approx(-0.1)


def test_four_bit_fully_connected_runs_on_xnnpack_and_four_bit_conv_on_builtin():
    import keras

    from edgekit.convert.precision.graph import read_ops
    from edgekit.convert.precision.kernels import BUILTIN, XNNPACK, kernels_by_scope
    from edgekit.convert.precision.recipes import quantize_ops
    from edgekit.convert.quantize import quantize_stage

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 8), name="x")
    c = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv")(inp)
    y = keras.layers.Dense(10, name="fc")(keras.layers.GlobalAveragePooling2D(name="pool")(c))
    model = keras.Model(inp, {"y": y})
    x = np.random.default_rng(0).random((32, 8, 8, 8)).astype(np.float32)
    fblob = quantize_stage(model, "float32", {"x": x})
    ops = {o.op: o for o in read_ops(fblob)}
    kernels = {}
    for rung in ("int8", "int4w"):
        blob = quantize_ops(fblob, {o.scope: rung if o.weighted else "int8" for o in ops.values()}, {"x": x})
        got = kernels_by_scope(blob)
        kernels[rung] = (got[ops["CONV_2D"].scope], got[ops["FULLY_CONNECTED"].scope])
    assert kernels["int8"] == (XNNPACK, XNNPACK)
    assert kernels["int4w"] == (BUILTIN, XNNPACK)


def _report(factor, mode="objective-latency"):
    return {"mode": mode, "verification": {"metric": "accuracy", "chosen": [0.98, 0.99], "uniform_int8": [0.97, 0.99]},
            "against_int8": {"plan_ms": 0.2 * factor, "int8_ms": 0.2, "latency_vs_int8": factor,
                             "plan_bytes": 500 * 1024, "int8_bytes": 1000 * 1024, "size_vs_int8": 0.5}}


def test_convert_says_in_one_line_when_a_plan_is_slower_than_int8():
    from edgekit.convert.precision.objective import summary_lines

    fast = summary_lines(_report(1.0), None)
    assert len(fast) == 1
    assert "size 0.50x" in fast[0] and "latency 1.00x" in fast[0] and "98.0%/99.0% vs 97.0%/99.0%" in fast[0]
    slow = summary_lines(_report(6.8, mode="tolerance"), None)
    assert len(slow) == 2 and "6.80x slower than uniform int8" in slow[1] and "--objective size" in slow[1]


def test_objective_bad_inputs_exit_2_and_write_nothing(tmp_path):
    from click.testing import CliRunner

    from edgekit.cli import main

    out = tmp_path / "out"
    base = ["convert", DEMO, "-t", "raspberry-pi-4", "--calib", CALIB, "-o", str(out)]
    cases = [(["--precision", "adaptive", "--objective", "fast"], "unknown objective 'fast'; allowed: latency, "
                                                                   "size, accuracy"),
             (["--precision", "adaptive", "--objective", "size", "--size-budget", "800K"], "an objective or a budget"),
             (["--precision", "int8", "--objective", "size"], "only apply with --precision adaptive")]
    for extra, msg in cases:
        res = CliRunner().invoke(main, base + extra)
        assert res.exit_code == 2, res.output
        assert msg in res.output
        assert not out.exists()


def test_the_stage_slower_than_its_int8_build_beyond_the_noise_is_found():
    from edgekit.convert.precision.objective import slow_stage
    from edgekit.runtime.cost_protocol import Cost

    def c(ms):
        return Cost(ms, ms * 0.99, ms * 0.99, ms * 1.01, ms * 1.01, 100, True)

    int8 = [b"a", b"b", b"c"]
    got = {"int8": [c(1.0), c(1.0), c(1.0)], "plan": [c(1.5), c(1.01), c(3.0)]}
    assert slow_stage(got, [b"x", b"y", b"c"], int8) == 0         # stage 2 is int8's own build: never blamed
    assert slow_stage(got, [b"x", b"y", b"z"], int8) == 2
    got["plan"] = [c(1.01), c(0.9), c(1.0)]
    assert slow_stage(got, [b"x", b"y", b"z"], int8) is None       # within the noise, or faster
    assert slow_stage(got, [b"x", b"y", b"z"], None) is None


def test_leaving_xnnpack_for_a_builtin_kernel_is_never_free_and_is_sent_back_first():
    from edgekit.convert.precision.costs import _cost
    from edgekit.convert.precision.objective import to_int8
    from edgekit.runtime.cost_protocol import Cost

    base = Cost(1.0, 0.99, 0.99, 1.01, 1.01, 100, True)
    same = Cost(1.005, 0.99, 0.99, 1.02, 1.02, 100, True)                      # within the noise
    assert _cost(same, base, 0.0, "xnnpack", "xnnpack") == 0.0
    assert _cost(same, base, 0.05, "builtin", "xnnpack") == pytest.approx(0.05)   # at least the noise
    assert _cost(Cost(0.8, 0.79, 0.79, 0.81, 0.81, 100, True), base, 0.05, "builtin", "xnnpack") == pytest.approx(-0.2)
    assert _cost(same, base, 0.05, "builtin", "builtin") == 0.0     # int8 was builtin too: nothing left
    layers = _layers()
    for ly, k in zip(layers, ("builtin", "xnnpack", "builtin", "")):
        ly.kernels.update({"int8": "xnnpack", "int4w": k})
    choice = {ly.key: (r, "") for ly, r in zip(layers, ("int4w", "int4w", "int8", "float32"))}
    assert [ly.name for ly in to_int8(layers, choice)] == ["conv"]
    choice[layers[0].key] = ("int8", "")
    assert [ly.name for ly in to_int8(layers, choice)] == ["fc"]   # no builtin one left: the costliest
    choice[layers[1].key] = ("int8", "")
    assert to_int8(layers, choice) == []


def test_accuracy_is_won_back_only_within_int8s_time_and_bytes():
    from edgekit.convert.precision.objective import accuracy_for_time

    fc = _layer("fc", 1000, {"int4w": -0.05, "float32": 0.0}, {"int4w": 1e-3, "int8": 1e-5}, op="FULLY_CONNECTED")
    small = _layer("small", 100, {"int4w": 0.01, "float32": 0.0}, {"int4w": 1e-2, "int8": 1e-3})
    big = _layer("big", 5000, {"int4w": 0.2, "float32": 0.0}, {"int4w": 1e-2, "int8": 1e-2})
    slow = _layer("slow", 10, {"int4w": 0.2, "float32": 0.2}, {"int4w": 1e-2, "int8": 1e-1})
    layers = [fc, small, big, slow]
    choice = {ly.key: ("int8", "") for ly in layers}
    choice[fc.key] = ("int4w", "")                 # saves 500 bytes and 0.05 ms
    got = accuracy_for_time(layers, choice, 0.0, 0, [])
    assert got is small                            # big would add 15000 bytes, slow 0.2 ms: neither fits
    assert accuracy_for_time(layers, choice, 0.0, 0, [small.key]) is None
    choice[fc.key] = ("int8", "")                  # nothing saved: no room at all
    assert accuracy_for_time(layers, choice, 0.0, 0, []) is None


def test_latency_objective_spends_int8s_sqnr_headroom_on_four_bit_weights_least_noise_per_byte_first():
    """4-bit weights inside the int8 build cost no time and no per-op-recipe stage; what limits them is the noise
    they add at the exits: up to an SQNR of min(uniform int8's, 30 dB)."""
    from edgekit.convert.precision import objective as ob
    from edgekit.convert.precision.allocate import StageCost
    from edgekit.convert.precision.sensitivity import Loss

    def conv(name, params, db4):
        ly = _layer(name, params, {"int8": 0.0, "int4w": 0.0}, {"int4w": 1e-5, "int8": 1e-6})
        ly.losses = {"int4w": Loss(1e-5, db4, None), "int8": Loss(1e-6, 60.0, None)}
        ly.four_bit = True
        return ly

    layers = [conv("quiet", 1000, 45.0), conv("big", 4000, 38.0), conv("loud", 2000, 31.0)]
    stage = lambda db: StageCost(latency_ms={"int8": 1.0}, size_bytes={}, macs=1, fixed_bytes=0,  # noqa: E731
                                 losses={"int8": Loss(1e-6, db, None)}, mixed_ms=0.5)
    room = ob.noise_room([stage(40.0)])                      # int8 at 40 dB: 1e-3 - 1e-4 of room
    assert room == pytest.approx(9e-4)
    choice, extra = ob.smallest_fast(layers, 0.0, 1e-3, [stage(40.0)], room)
    # quiet (3.2e-5 for 500 bytes) and big (1.6e-4 for 2000) fit; loud (7.9e-4 more) would pass 30 dB
    assert _rungs(choice, layers) == {"quiet": "int4w", "big": "int4w", "loud": "int8"} and extra == 0.0
    assert sum(ob.added_noise(ly, choice[ly.key][0]) for ly in layers) <= room
    # a model whose int8 exits are below 30 dB already gets no 4-bit weights at all
    assert ob.noise_room([stage(28.0)]) == 0.0
    choice, _ = ob.smallest_fast(layers, 0.0, 1e-3, [stage(28.0)], 0.0)
    assert set(_rungs(choice, layers).values()) == {"int8"}
    # without the room, noise decides the order only: everything free is taken
    choice, _ = ob.smallest_fast(layers, 0.0, 1e-3, [stage(40.0)])
    assert set(_rungs(choice, layers).values()) == {"int4w"}
