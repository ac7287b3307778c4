"""Adaptive precision starts from the int8 build convert makes: 4-bit fully connected ops inside that build, and a
plan stage measured slower than that build goes back to it whole."""
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import conv_dense_builds


def test_int4_values_pack_two_to_a_byte_low_nibble_first():
    from edgekit.convert.precision.fc4 import pack_int4, quantize_int4

    assert list(pack_int4(np.array([1, -1, 7, -7, 3], np.int8))) == [0xF1, 0x97, 0x03]
    w = np.array([[0.7, -0.35, 0.0], [0.0, 0.0, 0.0]], np.float32)
    q, scale = quantize_int4(w)
    assert q.tolist() == [[7, -4, 0], [0, 0, 0]] and scale[0] == pytest.approx(0.1) and scale[1] > 0


def _run(blob, x):
    from edgekit.runtime.interpreter import load_backend

    run = load_backend().interpreter(model_content=blob, num_threads=1).get_signature_runner()
    return np.concatenate([run(image=x[i:i + 1])["y"] for i in range(len(x))])


def test_four_bit_fully_connected_inside_the_int8_build_runs_on_xnnpack():
    from edgekit.convert.precision.fc4 import four_bit
    from edgekit.convert.precision.graph import read_ops
    from edgekit.convert.precision.kernels import XNNPACK, kernels_by_scope
    from edgekit.convert.precision.sensitivity import sqnr_db

    model, x, fblob, qblob = conv_dense_builds(16, 64, 64)
    fc = [o.scope for o in read_ops(fblob) if o.op == "FULLY_CONNECTED"]
    blob = four_bit(qblob, fblob, fc)
    assert len(qblob) - len(blob) >= 16 * 64 // 2 - 64            # half the 8-bit weights' bytes, less the scales
    assert set(kernels_by_scope(blob).values()) == {XNNPACK}
    ref = np.asarray(model(x)["y"])
    int8_db, four_db = sqnr_db(ref, _run(qblob, x)), sqnr_db(ref, _run(blob, x))
    assert 15.0 < four_db < int8_db                                # 4-bit weights lose more than 8-bit, not all
    # every other op is the int8 build's: same op list, same conv weights
    assert [o.op for o in read_ops(blob)] == [o.op for o in read_ops(qblob)]


def test_a_plan_stage_slower_than_its_int8_build_goes_back_to_it(monkeypatch):
    from edgekit.convert.precision import plan
    from edgekit.convert.precision.allocate import Layer
    from edgekit.runtime.cost_protocol import Cost

    def fixed(ms):
        return Cost(ms, ms, ms, ms, ms, 100, True)

    def stage_times(candidates, feeds, protocol=None):     # fixed stage costs: the plan's own build is slow
        return {name: [fixed(2.0 if b == b"plan" else 1.0) for b in blobs] for name, blobs in candidates.items()}

    monkeypatch.setattr(plan, "stage_times", stage_times)
    ly = Layer(stage=0, scope="fc", op="FULLY_CONNECTED", name="fc", params=8, macs=8, rungs=("int4w", "float32"))
    prof = SimpleNamespace(stages=[object()], uniform=[{"int8": b"int8", "float32": b"f32"}], layers=[ly],
                           chain=SimpleNamespace(inputs=[{}]))
    choice = {ly.key: ("int4w", "smallest")}
    built, f16, budget = [(b"plan", "mixed")], [""], {"mode": "objective-latency"}
    timing, changed = plan._timed(prof, budget, built, choice, f16, lambda what: None)
    assert changed and built == [(b"int8", "int8")]
    assert timing["latency_vs_int8"] == pytest.approx(1.0)
    plan_ms = {"now": 1.0}                                     # as fast as int8 and no smaller: nothing gained
    monkeypatch.setattr(plan, "stage_times", lambda c, f, protocol=None: {
        name: [fixed(plan_ms["now"] if b == b"plan" else 1.0) for b in blobs] for name, blobs in c.items()})
    built = [(b"plan", "mixed")]
    timing, changed = plan._timed(prof, budget, built, dict(choice), f16, lambda what: None)
    assert changed and built == [(b"int8", "int8")]
    plan_ms["now"] = 0.5                                       # clearly faster: kept
    built = [(b"plan", "mixed")]
    timing, changed = plan._timed(prof, budget, built, dict(choice), f16, lambda what: None)
    assert not changed and built == [(b"plan", "mixed")] and timing["latency_vs_int8"] == pytest.approx(0.5)
    budget = {"mode": "tolerance"}                             # objective size: time does not undo the choice
    built = [(b"plan", "mixed")]
    plan_ms["now"] = 2.0
    timing, changed = plan._timed(prof, budget, built, choice, f16, lambda what: None)
    assert not changed and built == [(b"plan", "mixed")] and timing["latency_vs_int8"] == pytest.approx(2.0)
