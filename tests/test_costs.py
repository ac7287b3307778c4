"""The shared cost protocol, threads per stage, `edgekit profile` and calibrate on measured costs.

Nothing here asserts on measured time: the protocol runs on a fake clock, and bundles carry fixed costs.
"""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.bench.profile import apply_costs, write_costs
from edgekit.cli import main
from edgekit.fit.threshold_fit import stage_costs
from edgekit.errors import BundleError, ConfigError
from edgekit.manifest import Manifest, load_bundle, read_manifest
from edgekit.runtime import EarlyExitRunner
from edgekit.runtime.cost_protocol import (BOARD, CONVERTING_MACHINE, Cost, CostProtocol, choose_threads,
                                           costs_section, machine, measure_candidates, resolve_stage_threads)
from edgekit.runtime.profile import profile_bundle
from tests.deploy.bundles import IN_DIM, tflite_stages, write_bundle, write_data


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, ms: float) -> None:
        self.now += ms / 1000.0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A real two-stage bundle (tiny dense stages) and data for it."""
    root = tmp_path_factory.mktemp("tiny")
    stages = tflite_stages(root)[0]
    write_bundle(root / "bundle", stages, target="raspberry-pi-5")
    return root / "bundle", write_data(root / "x.npz")


def _copy(tiny, tmp_path):
    """A copy of the tiny bundle with the raspberry-pi-5 profile's 4 threads as its upper bound."""
    import shutil

    from tests.bundle_edit import edit_manifest

    bundle = str(shutil.copytree(str(tiny[0]), str(tmp_path / "b")))
    edit_manifest(bundle, lambda d: d.update(runtime={"num_threads": 4}))
    return bundle


def _candidates(clock, costs, order):
    def make(key, ms):
        def call():
            order.append(key)
            clock.spend(ms() if callable(ms) else ms)
        return call
    return {k: make(k, ms) for k, ms in costs.items()}


def test_protocol_interleaves_warms_up_and_stops_when_the_median_is_stable():
    clock, order = FakeClock(), []
    spikes = iter([9.0] + [3.0] * 10000)                  # a stall on the first timed call of b only
    proto = CostProtocol(warmup=2, chunk=5, min_rounds=10, max_rounds=100)
    got = measure_candidates(_candidates(clock, {"a": 1.0, "b": lambda: next(spikes), "c": 2.0}, order), proto,
                             clock)
    assert order[:6] == ["a", "b", "c"] * 2              # warm-up: every candidate, discarded
    timed = order[6:]
    rounds = [timed[i:i + 3] for i in range(0, len(timed), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)           # each round calls every candidate
    assert len({tuple(r) for r in rounds}) > 1                         # ... in an order that changes
    before_a = {r[r.index("a") - 1] for r in rounds if r.index("a") > 0}
    assert before_a == {"b", "c"}                                      # no candidate always follows the same one
    assert got["a"].median_ms == pytest.approx(1.0) and got["c"].median_ms == pytest.approx(2.0)
    assert got["b"].median_ms == pytest.approx(3.0) and got["b"].p90_ms == pytest.approx(3.0)
    assert all(c.stable and c.calls == 10 for c in got.values())       # stable at the first check
    assert got["b"].to_dict()["iqr_ms"] == pytest.approx(0.0)


def test_protocol_is_bounded_when_the_median_keeps_moving():
    clock, order = FakeClock(), []
    drift = iter(1.1 ** np.arange(2000.0))              # every call 10% slower than the last
    got = measure_candidates(_candidates(clock, {"a": lambda: float(next(drift))}, order),
                             CostProtocol(warmup=0, chunk=5, min_rounds=10, max_rounds=40, max_seconds=1e9), clock)
    assert got["a"].calls == 40 and not got["a"].stable
    clock2 = FakeClock()
    slow = measure_candidates(_candidates(clock2, {"a": lambda: float(next(drift))}, []),
                              CostProtocol(warmup=0, chunk=5, min_rounds=10, max_rounds=400, max_seconds=0.5),
                              clock2)
    assert slow["a"].calls < 400 and not slow["a"].stable             # the time bound stopped it


def test_fewer_threads_win_unless_more_are_clearly_faster():
    c = lambda ms: Cost(ms, ms, ms, ms, ms, 10, True)   # noqa: E731
    assert choose_threads({1: c(1.0), 2: c(0.97), 4: c(0.99)}) == 1
    assert choose_threads({1: c(1.0), 2: c(0.5), 4: c(0.48)}) == 2
    section = costs_section([{1: c(1.0), 2: c(0.5)}], BOARD, CostProtocol(), {"hostname": "pi"})
    assert section["measured_on"] == "board" and section["stages"][0]["threads"] == 2
    assert section["stages"][0]["by_threads"]["1"]["median_ms"] == 1.0 and section["machine"] == {"hostname": "pi"}
    with pytest.raises(ConfigError, match="measured_on 'laptop'"):
        costs_section([{1: c(1.0)}], "laptop", CostProtocol())
    assert set(machine()) >= {"hostname", "cpu_model", "arch", "cores"}


def test_stage_threads_are_measured_counts_capped_by_the_profile_and_the_cores():
    rt = {"num_threads": 4, "stage_threads": [1, 4, 2]}
    assert resolve_stage_threads(rt, 3, cores=2) == [1, 2, 2]
    assert resolve_stage_threads(rt, 3, cores=8) == [1, 4, 2]
    assert resolve_stage_threads({"num_threads": 4}, 2, cores=2) == [2, 2]     # unmeasured: profile, capped
    assert resolve_stage_threads(rt, 3, override=3, cores=2) == [3, 3, 3]     # explicit: as given
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ConfigError, match="allowed an integer from 1 to 256"):
            resolve_stage_threads(rt, 3, override=bad)


def test_manifest_refuses_malformed_stage_threads(tiny):
    d = read_manifest(str(tiny[0])).to_dict()
    for bad in ([1], [1, 0], [1, "2"], [1, True], "1,1"):
        d["runtime"] = {"num_threads": 2, "stage_threads": bad}
        with pytest.raises(BundleError, match="stage_threads"):
            Manifest.from_dict(d)


def test_runner_uses_the_threads_measured_per_stage(tiny, tmp_path):
    bundle = _copy(tiny, tmp_path)
    m = load_bundle(bundle)
    fixed = costs_section([{1: Cost(1.0, 1, 1, 1, 1, 9, True), 2: Cost(2.0, 2, 2, 2, 2, 9, True)},
                           {1: Cost(4.0, 4, 4, 4, 4, 9, True), 2: Cost(1.0, 1, 1, 1, 1, 9, True)}],
                          CONVERTING_MACHINE, CostProtocol())
    write_costs(bundle, fixed)
    m = load_bundle(bundle)
    assert m.extra["runtime"]["stage_threads"] == [1, 2] and [s.latency_ms for s in m.stages] == [1.0, 1.0]
    cores = os.cpu_count() or 1
    assert EarlyExitRunner(bundle).stage_threads == [1, min(2, cores)]
    assert EarlyExitRunner(bundle, num_threads=3).stage_threads == [3, 3]
    assert stage_costs(m, None) == ([1.0, 1.0], "measured on the converting-machine")
    assert stage_costs(m, 2)[0] == [2.0, 1.0]                    # calibrate --threads 2: the costs at 2 threads
    with pytest.raises(ConfigError, match="edgekit profile BUNDLE --threads 3"):
        stage_costs(m, 3)


def test_profile_measures_every_thread_count_and_writes_the_bundle_atomically(tiny, tmp_path):
    bundle = _copy(tiny, tmp_path)
    x = np.random.default_rng(0).normal(size=(2, IN_DIM)).astype(np.float32)
    proto = CostProtocol(warmup=1, chunk=2, min_rounds=2, max_rounds=4)
    section = profile_bundle(bundle, x, None, BOARD, proto, cores=2)
    assert section["measured_on"] == "board" and len(section["stages"]) == 2
    for st in section["stages"]:
        assert sorted(st["by_threads"]) == ["1", "2"] and st["threads"] in (1, 2)
        assert all(c["calls"] >= 2 and c["p10_ms"] <= c["median_ms"] <= c["p90_ms"] for c in st["by_threads"].values())
    before = os.listdir(tmp_path)
    (tmp_path / "b" / "manifest.sig").write_text("{}")
    assert write_costs(bundle, section) is True                  # was signed: the stale signature is dropped
    assert not (tmp_path / "b" / "manifest.sig").exists() and os.listdir(tmp_path) == before
    m = load_bundle(bundle)
    assert m.extra["costs"]["measured_on"] == "board"
    assert [s.latency_ms for s in m.stages] == [st["latency_ms"] for st in section["stages"]]
    with pytest.raises(BundleError, match="1 stage\\(s\\) measured on 'board', the bundle has 2"):
        apply_costs(m, dict(section, stages=section["stages"][:1]))
    assert load_bundle(bundle).to_dict() == m.to_dict()          # a refused write changed nothing


def test_profile_command_writes_costs_and_refuses_bad_threads(tiny, tmp_path):
    bundle = _copy(tiny, tmp_path)
    got = CliRunner().invoke(main, ["profile", bundle, "--threads", "1", "--data", str(tiny[1]), "--json"])
    assert got.exit_code == 0, got.output
    section = json.loads(got.output)
    assert section["measured_on"] == "converting-machine"
    assert [list(s["by_threads"]) for s in section["stages"]] == [["1"], ["1"]]
    assert load_bundle(bundle).extra["runtime"]["stage_threads"] == [1, 1]
    bad = CliRunner().invoke(main, ["profile", bundle, "--threads", "0"])
    assert bad.exit_code == 2 and bad.output.strip().startswith("edgekit: error: --threads 0")
    got = CliRunner().invoke(main, ["calibrate", bundle, "--data", str(tiny[1]), "--max-accuracy-drop", "0.5",
                                    "--threads", "2", "--objective", "agreement"])
    assert got.exit_code == 2 and "edgekit profile BUNDLE --threads 2" in got.output
