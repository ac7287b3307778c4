"""What the bench records per call and per run: per-stage times and the exit of every call, first-call and init
times, the spread, peak memory; the report's plots stay readable; a bundle made for a board says on this machine
what it borrowed from the board's profile.

Times come from a simulated clock and the bundle's fixed stage costs (tests/simulated.py), never from how fast
this machine happens to be.
"""
import csv
import itertools

import numpy as np
import pytest

from edgekit.bench import plots
from edgekit.bench.command import borrowed_from_profile
from edgekit.bench.latency import MODES, Protocol, bench, measure, timed_runner
from edgekit.bench.report import write_report
from edgekit.bench.run import startup_lines, text_lines
from edgekit.runtime import EarlyExitRunner
from edgekit.targets import get_target
from tests.bundle_edit import copy_bundle, set_stage_costs
from tests.simulated import CostedRunner, SimulatedClock

STAGE_MS = (1.0, 2.0, 4.0)             # fixed stage costs written into the test bundle
CUM_MS = np.cumsum(STAGE_MS)


@pytest.fixture(scope="module")
def bundle(demo_bundles, tmp_path_factory):
    b = copy_bundle(demo_bundles("float32", "host-x86_64"), str(tmp_path_factory.mktemp("latency") / "b"))
    set_stage_costs(b, STAGE_MS)
    return b


@pytest.fixture(scope="module")
def x(test_split):
    return test_split.x[:48]


def test_every_call_is_timed_with_its_exit_and_stages_on_fixed_costs(bundle, x):
    sim = SimulatedClock()
    costed = CostedRunner(EarlyExitRunner(bundle), sim)
    raw = measure(costed, x, Protocol(runs=30, warmup=4), sim.now)
    assert costed.calls == 2 * (4 + 30)                      # the first calls are part of the warm-up
    for mode in MODES:
        rec = raw[mode]
        assert len(rec["ms"]) == len(rec["exits"]) == len(rec["stage_ms"]) == 30
        assert rec["ms"] == pytest.approx([CUM_MS[e] for e in rec["exits"]])    # a call costs its stages
        assert [len(s) for s in rec["stage_ms"]] == [e + 1 for e in rec["exits"]]
        assert rec["first_call_ms"] == pytest.approx(CUM_MS[rec["exits"][0]] if mode == "early_exit" else CUM_MS[-1])
    assert set(raw["full_depth"]["exits"]) == {2} and len(set(raw["early_exit"]["exits"])) > 1


def test_std_first_call_init_and_peak_rss_reach_the_result_and_the_text(bundle, x):
    ticks = itertools.count()
    runner, init_ms = timed_runner(bundle, clock=lambda: next(ticks) * 0.0125)
    assert init_ms == pytest.approx(12.5)                      # one tick of the injected clock
    sim = SimulatedClock()
    result = bench(CostedRunner(runner, sim), x, None, Protocol(runs=30, warmup=2), sim.now)
    ee = np.asarray(result["raw_ms"]["early_exit"])
    assert result["early_exit"]["latency_ms"]["std"] == pytest.approx(ee.std(ddof=1))
    assert result["full_depth"]["latency_ms"]["std"] == pytest.approx(0.0)      # every full-depth call: 7 ms
    assert result["startup"]["first_call_ms"]["full_depth"] == pytest.approx(CUM_MS[-1])
    assert result["memory"]["peak_rss_mb"] > 1.0
    result["startup"]["init_ms"] = init_ms
    line = startup_lines(result)[0]
    assert line.startswith("startup: init 12.5 ms") and "first call {:.3f} ms".format(
        result["startup"]["first_call_ms"]["early_exit"]) in line and "7.000 ms full depth" in line
    assert "MiB" in line


def test_latency_raw_csv_has_each_calls_exit_and_stage_times(bundle, x, tmp_path):
    sim = SimulatedClock()
    result = bench(CostedRunner(EarlyExitRunner(bundle), sim), x, None, Protocol(runs=20, warmup=1), sim.now)
    write_report(result, str(tmp_path / "rep"))
    with open(str(tmp_path / "rep" / "latency_raw.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["mode", "call", "ms", "exit", "stage0_ms", "stage1_ms", "stage2_ms"]
    assert len(rows) == 40
    for row in rows:
        k = int(row["exit"])
        filled = [row["stage{}_ms".format(i)] != "" for i in range(3)]
        assert filled == [i <= k for i in range(3)]
        assert float(row["ms"]) == pytest.approx(CUM_MS[k], abs=1e-6)
        i = int(row["call"])
        assert k == result["raw_calls"][row["mode"]]["exits"][i]
        assert float(row["stage0_ms"]) == pytest.approx(result["raw_calls"][row["mode"]]["stage_ms"][i][0], abs=1e-6)
    with open(str(tmp_path / "rep" / "latency.csv"), newline="") as f:
        lat = {r["mode"]: r for r in csv.DictReader(f)}
    assert float(lat["early_exit"]["std_ms"]) == pytest.approx(result["early_exit"]["latency_ms"]["std"], abs=1e-6)


def _result(spread_ms):
    """A bench result with heavy-tailed latencies from 0.15 ms to spread_ms (made up: only the plots read it)."""
    rng = np.random.default_rng(0)
    ee = np.concatenate([rng.lognormal(np.log(0.25), 0.15, 170), rng.uniform(1.0, spread_ms, 10), [0.15]])
    fd = np.concatenate([rng.lognormal(np.log(0.8), 0.1, 170), rng.uniform(1.0, spread_ms, 10)])

    def mode(a):
        return {"latency_ms": {"p50": float(np.median(a)), "p99": float(np.percentile(a, 99))}}

    energy = {m: {"joules_total": t, "joules_above_idle": a} for m, t, a in
              (("early_exit", 0.0031, 0.0012), ("full_depth", 0.0085, 0.0041))}
    energy.update(meter="power-model", kind="estimated", measured=False, idle={"mean_watts": 11.2})
    return {"early_exit": mode(ee), "full_depth": mode(fd), "raw_ms": {"early_exit": ee, "full_depth": fd},
            "environment": {"machine": "x86_64", "interpreter": {"name": "ai_edge_litert", "version": "2.1.0"},
                            "threads": 1}, "bundle": {"model_name": "demo"}, "energy": energy}


@pytest.mark.parametrize("spread_ms", [4.0, 6.0, 40.0, 900.0])
def test_log_scale_tick_labels_do_not_overlap(spread_ms):
    fig = plots.latency_figure(_result(spread_ms))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    lo, hi = ax.get_xlim()
    boxes = []
    for which in ("major", "minor"):
        for label, loc in zip(ax.xaxis.get_ticklabels(which=which), ax.xaxis.get_ticklocs(minor=which == "minor")):
            if label.get_visible() and label.get_text() and lo <= loc <= hi:
                boxes.append((label.get_text(), label.get_window_extent(renderer)))
    assert len(boxes) >= 2
    boxes.sort(key=lambda b: b[1].x0)
    for (a, box_a), (b, box_b) in zip(boxes, boxes[1:]):
        assert box_a.x1 < box_b.x0, "tick labels {!r} and {!r} overlap".format(a, b)


def test_energy_legend_colours_are_the_bars_colours():
    ax = plots.energy_figure(_result(6.0)).axes[0]
    legend = ax.get_legend()
    handles = getattr(legend, "legend_handles", None) or legend.legendHandles
    shown = {t.get_text(): tuple(h.get_facecolor()) for t, h in zip(legend.get_texts(), handles)}
    assert set(shown) == {"early exit", "full depth"}
    for container in ax.containers:
        assert {tuple(p.get_facecolor()) for p in container.patches} == {shown[container.get_label()]}


def test_a_board_bundle_benchmarked_here_says_what_it_borrowed():
    pi5 = get_target("raspberry-pi-5")
    result = {"environment": {"stage_threads": [4, 4, 4]}, "energy": {"meter": "power-model"}}
    notes = borrowed_from_profile(pi5, {"costs": {"measured_on": "converting-machine"}}, result, None, "x86_64")
    assert len(notes) == 3 and "made for raspberry-pi-5 (aarch64" in notes[0]
    assert "threads per stage [4, 4, 4] come from the bundle" in notes[1] and "default_threads 4" in notes[1]
    assert "raspberry-pi-5's power model ({:g} W idle, {:g} W active)".format(
        pi5.power_model.idle_w, pi5.power_model.active_w) in notes[2]
    # --threads chose the threads; a sensor measured the energy; the same arch borrows nothing
    assert len(borrowed_from_profile(pi5, {}, dict(result, energy={"meter": "rapl"}), 2, "x86_64")) == 1
    assert borrowed_from_profile(pi5, {}, result, None, "aarch64") == []
    assert borrowed_from_profile(get_target("host-x86_64"), {}, result, None, "x86_64") == []


def test_the_borrowed_notes_are_on_screen(demo_bundles, test_split, tmp_path):
    """A Raspberry Pi 5 bundle benchmarked on this x86 machine, end to end through `local_bench`."""
    from edgekit.bench.command import local_bench, this_arch
    from edgekit.bench.energy import EnergyOptions

    if this_arch() == "aarch64":
        pytest.skip("this machine has the Pi's arch: nothing is borrowed")
    np.savez(str(tmp_path / "d.npz"), x=test_split.x[:16], y=test_split.y[:16])
    result = local_bench(demo_bundles("float32"), str(tmp_path / "d.npz"), Protocol(runs=5, warmup=1),
                         EnergyOptions(meter="power-model", blocks=1, idle_seconds=0.2))
    text = "\n".join(text_lines(result))
    assert "note: this is an {} machine and the bundle was made for raspberry-pi-5".format(this_arch()) in text
    assert "note: threads per stage" in text and "note: energy is ESTIMATED with raspberry-pi-5's power model" in text
    assert result["startup"]["init_ms"] is not None and "startup: init" in text
