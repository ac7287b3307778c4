"""Adaptive precision: sensitivity ordering, allocation under each budget, kernel fallback, bad inputs."""
import os

import numpy as np
import pytest

from tests.conftest import CALIB, DEMO


def _tiny_model(fragile: bool = True, with_sin: bool = False):
    """Two exits; conv 'b' is deliberately fragile: channel 0 of its output is pushed to ~1000 and then capped
    at 3 (a MINIMUM op after it), so b's output tensor spans [0, ~1000] while what the next layer reads spans
    [0, 3]. 8-bit activations at b's output (step ~4) wipe out every other channel; 16-bit ones (step ~0.03)
    keep them; c, which reads the capped tensor, stays robust. The exit layers' weights are scaled up so their
    softmax is peaked and the KL divergence at the exits registers what is lost."""
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 1), name="image")
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="a")(inp)
    e0 = keras.layers.Dense(5, name="exit0")(keras.layers.GlobalAveragePooling2D(name="p0")(a))
    b = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="b")(a)
    b = keras.layers.Lambda(lambda t: keras.ops.minimum(t, 3.0), name="cap")(b)
    if with_sin:
        b = keras.layers.Lambda(keras.ops.sin, name="sine")(b)
    c = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c")(b)
    e1 = keras.layers.Dense(5, name="exit1")(keras.layers.GlobalAveragePooling2D(name="p1")(c))
    model = keras.Model(inp, [e0, e1], name="tiny")
    for name in ("exit0", "exit1"):
        w, bias = model.get_layer(name).get_weights()
        model.get_layer(name).set_weights([w * 10.0, bias])
    if fragile:
        w, bias = model.get_layer("b").get_weights()
        bias[0] = 1000.0
        model.get_layer("b").set_weights([w, bias])
    return model


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("precision-cache"))
    old = os.environ.get("EDGEKIT_CACHE_DIR")
    os.environ["EDGEKIT_CACHE_DIR"] = path
    yield path
    if old is None:
        os.environ.pop("EDGEKIT_CACHE_DIR", None)
    else:
        os.environ["EDGEKIT_CACHE_DIR"] = old


def _x(n=160, seed=0):
    return np.random.default_rng(seed).random((n, 8, 8, 1)).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_plan(cache_dir):
    from edgekit.convert.precision import PrecisionOptions
    from edgekit.convert.precision.choose import choose_precision
    from edgekit.convert.split import split_model
    from edgekit.targets import get_target

    stages = split_model(_tiny_model())
    plan = choose_precision(stages, get_target("raspberry-pi-4"), _x(), None,
                            PrecisionOptions(tolerance=1e-3, sensitivity_samples=64, objective="size"), "image")
    return stages, plan


def _row(plan, layer):
    return next(r for r in plan.layers if r["layer"] == layer)


def test_fragile_layer_is_most_sensitive_and_gets_a_higher_rung(tiny_plan):
    from edgekit.convert.precision.ladder import rank

    _, plan = tiny_plan
    frag = _row(plan, "b")
    others = [r for r in plan.layers if r["layer"] != "b"]
    assert len(others) == 4
    for r in others:
        assert frag["sensitivity"]["int8"]["kl"] > r["sensitivity"]["int8"]["kl"]
    assert frag["sensitivity"]["int8"]["kl"] > frag["sensitivity"]["int16x8"]["kl"]
    # the choices differ where the sensitivities differ
    assert rank(frag["rung"]) > min(rank(r["rung"]) for r in others)
    assert len({r["rung"] for r in plan.layers}) >= 2
    # the plan is real: float stage interfaces, report and plot present
    assert plan.report["boundaries"].startswith("float32")
    assert plan.plot_png and plan.plot_png[:4] == b"\x89PNG"
    assert plan.report["verification"]["metric"] == "top-1 agreement with float"


def test_sensitivity_is_cached(tiny_plan, cache_dir):
    from edgekit.convert.precision import PrecisionOptions
    from edgekit.convert.precision.choose import choose_precision
    from edgekit.targets import get_target

    stages, plan = tiny_plan
    assert os.listdir(cache_dir)
    again = choose_precision(stages, get_target("raspberry-pi-4"), _x(), None,
                             PrecisionOptions(tolerance=1e-3, sensitivity_samples=64, objective="size"), "image")
    assert again.report["cache_hits"] >= len(plan.layers)
    assert [r["rung"] for r in again.layers] == [r["rung"] for r in plan.layers]


def _profile_layers(plan):
    """Rebuild allocate.Layer records from the report (real measured losses)."""
    from edgekit.convert.precision.allocate import Layer, StageCost
    from edgekit.convert.precision.sensitivity import Loss

    layers = []
    for i, r in enumerate(plan.layers):
        rungs = tuple(r["sensitivity"]) + ("float32",)
        layers.append(Layer(stage=r["stage"], scope="op{}".format(i), op=r["op"], name=r["layer"],
                            params=r["params"], macs=max(1, r["params"]), rungs=rungs,
                            losses={k: Loss(**v) for k, v in r["sensitivity"].items()}))
    costs = [StageCost(latency_ms={k: v["latency_ms"] for k, v in s["whole_stage"].items()},
                       size_bytes={k: v["size_bytes"] for k, v in s["whole_stage"].items()}, losses={},
                       macs=sum(ly.macs for ly in layers if ly.stage == s["index"]), fixed_bytes=0)
             for s in plan.report["stages"]]
    return layers, costs


def test_size_budget_allocation_fits_and_spends_on_the_sensitive_layer(tiny_plan):
    from edgekit.convert.precision import allocate as al
    from edgekit.convert.precision.ladder import rank

    _, plan = tiny_plan
    layers, _ = _profile_layers(plan)
    smallest = sum(al.size_cost(ly, ly.rungs[0]) for ly in layers)
    losses = []
    for budget in (smallest, smallest * 1.3, smallest * 8):
        choice, est, low = al.by_budget(layers, budget, al.size_cost, 1e-6, "size")
        assert low == pytest.approx(smallest)
        assert est <= budget + 1e-6
        assert est == pytest.approx(sum(al.size_cost(ly, choice[ly.key][0]) for ly in layers))
        losses.append(sum(ly.loss(choice[ly.key][0]).kl for ly in layers))
    assert losses[0] >= losses[1] >= losses[2]
    assert losses[2] < losses[0]
    # 50% over the smallest affords raising b (288 weights) or c (576 weights, robust) but not both:
    # the bytes go to the fragile layer
    choice, _, _ = al.by_budget(layers, smallest * 1.5, al.size_cost, 1e-6, "size")
    frag = next(ly for ly in layers if ly.name == "b")
    robust = next(ly for ly in layers if ly.name == "c")
    assert rank(choice[frag.key][0]) > rank(frag.rungs[0])
    assert frag.loss(choice[frag.key][0]).kl < frag.loss(frag.rungs[0]).kl / 10
    assert choice[robust.key][0] == robust.rungs[0]


def test_latency_budget_allocation_and_no_fp16_for_speed_without_fp16_cores(tiny_plan):
    from edgekit.convert.precision import allocate as al

    _, plan = tiny_plan
    layers, costs = _profile_layers(plan)
    cost_of = lambda ly, r: al.op_latency(ly, r, costs[ly.stage], False)  # noqa: E731
    low = sum(min(cost_of(ly, r) for r in ly.rungs) for ly in layers)     # the fastest rung is not always the lowest
    high = sum(cost_of(ly, "float32") for ly in layers)
    budget = max(low, high) * 1.01
    choice, est, smallest = al.by_budget(layers, budget, cost_of, 1e-6, "latency")
    assert smallest == pytest.approx(low)
    assert est <= budget + 1e-9
    tight, est2, _ = al.by_budget(layers, low, cost_of, 1e-6, "latency")
    assert est2 <= low + 1e-9
    # float16 is never cheaper than float32 in time on a target without FP16 arithmetic
    for ly in layers:
        c = costs[ly.stage]
        if "float16" in c.latency_ms:
            assert al.op_latency(ly, "float16", c, False) >= al.op_latency(ly, "float32", c, False)
            assert al.op_latency(ly, "float16", c, True) == pytest.approx(
                c.latency_ms["float16"] * ly.macs / c.macs)


def test_size_and_latency_budget_plans_end_to_end(tiny_plan):
    """Whole plans in each budget mode (sensitivities from the cache): the size budget holds for the built files,
    the spare bytes go to the fragile layer, the latency plan reports what it measured; an impossible budget is
    refused before anything is built."""
    from edgekit.convert.precision import PrecisionOptions
    from edgekit.convert.precision.choose import choose_precision
    from edgekit.errors import ConfigError
    from edgekit.targets import get_target

    stages, plan = tiny_plan
    pi4 = get_target("raspberry-pi-4")
    # about the int8 bundle's size (5% more: on this tiny model per-op builds carry more fixed bytes than the
    # int8 builds, which keep their thin convolutions float32 where that is faster)
    limit = int(1.05 * sum(s["whole_stage"]["int8"]["size_bytes"] for s in plan.report["stages"]))
    sized = choose_precision(stages, pi4, _x(), None, PrecisionOptions(size_budget=limit, sensitivity_samples=64),
                             "image")
    b = sized.report["budget"]
    assert sized.report["mode"] == "size" and b["limit"] == limit
    assert b["built_bytes"] == sum(len(x) for x in sized.blobs) <= limit and b["holds"]
    assert _row(sized, "b")["rung"] not in ("int4w", "int8")         # 8-bit activations lose b's channels
    # a budget no machine's measured latencies come near (these stages take microseconds): what is checked
    # is how the plan spends it, not how fast this machine is
    generous_ms = 60000.0
    timed = choose_precision(stages, pi4, _x(), None,
                             PrecisionOptions(latency_budget_ms=generous_ms, sensitivity_samples=64), "image")
    b = timed.report["budget"]
    assert timed.report["mode"] == "latency" and b["estimated"] <= generous_ms and b["measured_ms"] > 0
    # a generous budget lets whole stages stay float; pi-4 has no FP16 arithmetic, so float16 there is for size
    for row in timed.layers:
        assert ("size only" in row["reason"]) if row["rung"] == "float16" else ("latency budget" in row["reason"])
    with pytest.raises(ConfigError, match="below the least this model can take"):
        choose_precision(stages, pi4, _x(), None, PrecisionOptions(size_budget=100, sensitivity_samples=64), "image")


def test_fp16_measured_faster_here_is_not_faster_on_a_target_without_fp16_compute():
    """The converting machine may run fp16 faster than float32; a target without FP16 arithmetic does not, so
    neither the latency cost nor the stage choice may count fp16 as a speed-up there."""
    from edgekit.convert.precision import allocate as al
    from edgekit.convert.precision.sensitivity import Loss

    cost = al.StageCost(latency_ms={"float32": 2.0, "float16": 0.5, "int8": 1.0},
                        size_bytes={"float32": 4000, "float16": 2000, "int8": 1000},
                        losses={"float16": Loss(kl=1e-9, sqnr_db=80.0, layer_sqnr_db=None)}, macs=100, fixed_bytes=0)
    ly = al.Layer(stage=0, scope="s", op="CONV_2D", name="conv", params=1000, macs=100, rungs=("int8", "float32"),
                  losses={"int8": Loss(kl=0.5, sqnr_db=10.0, layer_sqnr_db=10.0)})
    assert al.op_latency(ly, "float16", cost, fp16_compute=False) == pytest.approx(2.0)
    assert al.op_latency(ly, "float16", cost, fp16_compute=True) == pytest.approx(0.5)
    keep_float = {ly.key: ("float32", "int8 loses too much")}
    without, with_fp16 = (al.stage_float16([ly], keep_float, [cost], True, 1e-3, fp16)[0] for fp16 in (False, True))
    assert without.startswith("float16") and "size only" in without and "computes in fp16" not in without
    assert "computes in fp16" in with_fp16
    # a 1.5 ms budget: fp16 would fit if it counted as 0.5 ms; without FP16 compute only int8 (1.0 ms) fits
    cost_of = lambda layer, r: al.op_latency(layer, r, cost, False)  # noqa: E731
    choice, est, _ = al.by_budget([ly], 1.5, cost_of, 1e-6, "latency")
    assert choice[ly.key][0] == "int8" and est == pytest.approx(1.0)


def test_latency_budget_starts_from_the_fastest_rung_not_the_lowest():
    """4-bit weights run slower than int8 here: a budget that int8 meets must not be called impossible."""
    from edgekit.convert.precision import allocate as al
    from edgekit.convert.precision.sensitivity import Loss

    cost = al.StageCost(latency_ms={"int4w": 1.5, "int8": 1.0, "int16x8": 9.0, "float32": 2.0}, size_bytes={},
                        losses={}, macs=100, fixed_bytes=0)
    loss = {"int4w": 0.02, "int8": 0.004, "int16x8": 0.0005}
    ly = al.Layer(stage=0, scope="s", op="CONV_2D", name="conv", params=1000, macs=100,
                  rungs=("int4w", "int8", "int16x8", "float32"),
                  losses={r: Loss(kl=v, sqnr_db=20.0, layer_sqnr_db=None) for r, v in loss.items()})
    cost_of = lambda layer, r: al.op_latency(layer, r, cost, False)  # noqa: E731
    picks = {b: al.by_budget([ly], b, cost_of, 1e-6, "latency") for b in (1.0, 1.9, 2.5, 10.0)}
    assert picks[1.0][2] == pytest.approx(1.0)                     # smallest possible: every op at its fastest
    assert [picks[b][0][ly.key][0] for b in (1.0, 1.9, 2.5, 10.0)] == ["int8", "int8", "float32", "float32"]


def test_one_activation_width_per_tensor(cache_dir):
    """ai-edge-quantizer refuses a tensor read by an 8-bit and a 16-bit activation op; harmonize raises the
    8-bit reader, and the stage then builds, runs and matches float."""
    import keras

    from edgekit.convert.precision.graph import read_ops
    from edgekit.convert.precision.measure import harmonize
    from edgekit.convert.precision.recipes import quantize_ops
    from edgekit.convert.quantize import quantize_stage
    from edgekit.errors import ModelError
    from edgekit.runtime.interpreter import load_backend

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), name="x")
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inp)
    b = keras.layers.Conv2D(4, 3, padding="same", name="b")(a)
    c = keras.layers.Conv2D(4, 1, padding="same", name="c")(a)
    model = keras.Model(inp, {"y": keras.layers.Add(name="s")([b, c])})
    x = np.random.default_rng(0).random((32, 8, 8, 3)).astype(np.float32)
    fblob = quantize_stage(model, "float32", {"x": x})
    ops = read_ops(fblob, ["a", "b", "c", "s"])
    by = {o.layer: o.scope for o in ops if o.weighted}
    rungs = {o.scope: "int8" for o in ops}
    rungs[by["b"]] = "int16x8"
    with pytest.raises(ModelError, match="same quantization parameters"):
        quantize_ops(fblob, rungs, {"x": x})
    fixed = harmonize(ops, rungs, lambda o: True)
    assert (fixed[by["a"]], fixed[by["b"]], fixed[by["c"]]) == ("int8", "int16x8", "int16x8")
    assert harmonize(ops, rungs, lambda o: False)[by["c"]] == "float32"
    got = load_backend().interpreter(model_content=quantize_ops(fblob, fixed, {"x": x})).get_signature_runner()(x=x)
    want = np.asarray(model(x)["y"])
    assert np.abs(got["y"] - want).max() < 0.05 * np.abs(want).max()


def test_op_without_quantized_kernel_falls_back_to_float(cache_dir):
    from edgekit.convert.precision import PrecisionOptions
    from edgekit.convert.precision.choose import choose_precision
    from edgekit.convert.split import split_model
    from edgekit.runtime.interpreter import load_backend
    from edgekit.targets import get_target

    stages = split_model(_tiny_model(fragile=False, with_sin=True))
    plan = choose_precision(stages, get_target("raspberry-pi-4"), _x(), None,
                            PrecisionOptions(tolerance=1e-2, sensitivity_samples=48), "image")
    fallbacks = plan.report["kernel_fallbacks"]
    assert any(f["op"] == "SIN" for f in fallbacks), fallbacks
    blob = plan.blobs[1]
    interp = load_backend().interpreter(model_content=blob)
    ops = {d["op_name"] for d in interp._get_ops_details()}
    assert "SIN" in ops
    out = interp.get_signature_runner()(**{n: np.zeros((2,) + tuple(t.shape[1:]), np.float32)
                                           for n, t in zip(stages[1].input_names, stages[1].model.inputs)})
    assert all(np.all(np.isfinite(v)) for v in out.values())


def test_bad_inputs(cache_dir):
    from edgekit.convert.precision import PrecisionOptions, check_options, check_samples
    from edgekit.errors import ConfigError, DataError
    from edgekit.targets import get_target

    pi4 = get_target("raspberry-pi-4")
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError, match="must be above 0"):
            check_options(PrecisionOptions(tolerance=bad), pi4)
    with pytest.raises(ConfigError, match="one budget at a time"):
        check_options(PrecisionOptions(size_budget=1000, latency_budget_ms=1.0), pi4)
    with pytest.raises(ConfigError, match="unknown rung 'int3'"):
        check_options(PrecisionOptions(rungs=("int3", "float32")), pi4)
    nano = get_target("jetson-nano")            # tflite-runtime 2.14: no 4-bit weight kernels
    with pytest.raises(ConfigError, match="not available on jetson-nano; it runs: int8, int16x8, float16, float32"):
        check_options(PrecisionOptions(rungs=("int4w", "float32")), nano)
    with pytest.raises(DataError, match="needs at least 128"):
        check_samples(100)


def test_cli_bad_inputs_exit_2_and_write_nothing(tmp_path):
    from click.testing import CliRunner

    from edgekit.cli import main

    out = tmp_path / "out"
    base = ["convert", DEMO, "-t", "raspberry-pi-4", "--calib", CALIB, "-o", str(out)]
    cases = [(["--precision", "adaptive", "--tolerance", "0"], "tolerance 0.0 must be above 0"),
             (["--precision", "int8", "--size-budget", "800K"], "only apply with --precision adaptive"),
             (["--precision", "adaptive", "--size-budget", "lots"], "is not a size"),
             (["--precision", "adaptive", "--rungs", "int4w,float32", "-t", "jetson-nano"], "it runs:")]
    for extra, msg in cases:
        res = CliRunner().invoke(main, base + extra)
        assert res.exit_code == 2, res.output
        assert msg in res.output
        assert not out.exists()


@pytest.mark.slow
def test_demo_adaptive_bundle_small_and_accurate(tmp_path, cache_dir):
    from edgekit.convert import ConvertOptions, convert
    from edgekit.data import load_data
    from edgekit.runtime import EarlyExitRunner, evaluate
    from tests.conftest import TEST

    test = load_data(TEST)
    res = {}
    for p in ("float32", "adaptive"):
        r = convert(ConvertOptions(DEMO, "raspberry-pi-5", CALIB, str(tmp_path / p), precision=p))
        acc = evaluate(EarlyExitRunner(r.bundle_dir), test.x, test.y, full_depth=True)["accuracy"]
        res[p] = (r.report["bundle_size_bytes"], acc, r)
    assert res["adaptive"][0] <= 0.30 * res["float32"][0]
    assert res["adaptive"][1] >= res["float32"][1] - 0.003
    assert os.path.isfile(os.path.join(res["adaptive"][2].bundle_dir, "precision.png"))
    assert {s.precision for s in res["adaptive"][2].manifest.stages} <= {"mixed", "int8", "int16x8", "float16",
                                                                          "float32"}
