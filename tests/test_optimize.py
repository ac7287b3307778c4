"""`edgekit optimize`: the Pareto front, the cache (a second run converts nothing), the outputs, and a budget no
candidate meets. Real conversions of a tiny two-exit model over a small search space; nothing here asserts on
measured time."""
import csv
import json
import os
import subprocess
import sys

import pytest

from edgekit.manifest import load_bundle
from edgekit.optimize import Budget, OptimizeOptions, SearchSpace, optimize
from edgekit.optimize.pareto import Point, best_single, choose, pareto_front
from edgekit.optimize.space import NATIVE, Candidate
from tests.conftest import CALIB, ROOT
from tests.optimize_model import tiny_model

EVAL = os.path.join(ROOT, "calibration", "digits_val.npz")
EDGEKIT = os.path.join(os.path.dirname(sys.executable), "edgekit")
SPACE = SearchSpace(exit_counts=(), prune_fractions=(), precisions=("float32",))   # what _cli asks for


def _pt(acc, ms, exits=NATIVE, prune=None, precision="int8", share=0.5):
    return Point(Candidate(exits, prune, precision), share, (0.9,), acc, ms, "stage costs", ms * 5, "estimated",
                 1000, (1.0,), "converting-machine")


def test_pareto_front_keeps_exactly_the_undominated_points_cheapest_first():
    a, b, c = _pt(0.99, 2.0), _pt(0.97, 1.0), _pt(0.95, 0.5)
    dominated = [_pt(0.96, 1.5), _pt(0.99, 2.5), _pt(0.94, 0.5)]
    twin = _pt(0.97, 1.0, precision="float32")
    front = pareto_front([a, *dominated, b, twin, c], "latency_ms")
    assert front == [c, b, a]                                  # the twin of b (equal on both axes) is dropped
    assert pareto_front([a, b, c], "size_bytes") == [a]        # all sizes equal: the most accurate only
    chosen, closest = choose([a, b, c], "latency_ms", 1.5, 0.965)
    assert chosen == b and closest == b                        # cheapest point at >= 96.5%, within 1.5 ms
    chosen, closest = choose([a, b, c], "latency_ms", 0.9, 0.965)
    assert chosen is None and closest == b                     # b is the cheapest accurate-enough one: 1.0 > 0.9
    chosen, closest = choose([b, c], "latency_ms", 5.0, 0.995)
    assert chosen is None and closest == b                     # none accurate enough: the most accurate
    base = Candidate(NATIVE, None, "int8")
    pruned, fp32 = _pt(0.98, 0.8, prune=0.5, share=None), _pt(0.99, 0.7, precision="float32", share=None)
    both = _pt(0.99, 0.1, prune=0.5, precision="float32")
    pts = [a, b, pruned, fp32, both]
    assert best_single(pts, "latency_ms", 0.97, base, "exits") == b
    assert best_single(pts, "latency_ms", 0.97, base, "pruning") == pruned
    assert best_single(pts, "latency_ms", 0.97, base, "precision") == fp32


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(tiny_model(tmp_path_factory.mktemp("tiny-opt") / "tiny.keras", CALIB))


@pytest.fixture(scope="module")
def first_run(model, tmp_path_factory):
    from edgekit.convert import convert

    root = tmp_path_factory.mktemp("optimize")
    calls, phases = [], []

    def counting(opts, progress=None):
        calls.append(opts)
        return convert(opts, progress)

    opts = OptimizeOptions(model, "host-x86_64", CALIB, EVAL, str(root / "out"), Budget("latency_ms", 1000.0),
                           0.02, cache_dir=str(root / "cache"), space=SPACE)
    result = optimize(opts, lambda phase, done, total, what: phases.append(phase), counting)
    return opts, result, calls, phases


def test_outputs_front_report_and_bundle(first_run):
    opts, result, calls, phases = first_run
    assert [c.precision for c in calls] == ["float32"]     # the one precision asked for is the baseline here
    assert {"singles", "end-to-end"} <= set(phases)
    out = opts.out_dir
    assert sorted(os.listdir(out)) == ["host-x86_64", "pareto.csv", "pareto.png", "report.json"]
    with open(os.path.join(out, "pareto.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    report = json.load(open(os.path.join(out, "report.json")))
    rows = list(csv.DictReader(open(os.path.join(out, "pareto.csv"))))
    assert len(rows) == len(report["points"]) and 2 <= len(rows) <= 1 + len(SPACE.drop_shares)
    ths = [tuple(p["thresholds"]) for p in report["points"]]
    assert len(set(ths)) == len(ths)                    # a share that fits the same thresholds adds no point
    front = [Point.from_dict(d) for d in report["front"]]
    assert front == pareto_front([Point.from_dict(d) for d in report["points"]], "latency_ms")
    assert sum(int(r["on_front"]) for r in rows) == len(front) and sum(int(r["chosen"]) for r in rows) == 1
    chosen = result.chosen
    assert chosen.latency_from == "end to end" and chosen.accuracy >= report["min_accuracy"]
    assert report["min_accuracy"] == pytest.approx(report["reference_accuracy"] - 0.02)
    m = load_bundle(result.bundle_dir)
    assert m.target == "host-x86_64" and [s.precision for s in m.stages] == [chosen.candidate.precision] * 2
    want = [1e9] if chosen.drop_share is None else list(chosen.thresholds)
    assert [s.exit.threshold for s in m.stages[:-1]] == pytest.approx(want)
    assert report["baseline_full_depth"]["candidate"]["precision"] == "float32"


def test_second_run_converts_nothing_and_chooses_the_same(first_run, tmp_path):
    opts, result, _, _ = first_run
    calls = []

    def counting(o, progress=None):
        calls.append(o)
        raise AssertionError("converted again")

    again = optimize(OptimizeOptions(**dict(vars(opts), out_dir=str(tmp_path / "again"))), None, counting)
    assert calls == [] and again.conversions == 0 and again.report["search"]["cache_hits"] > 0
    assert again.chosen == result.chosen
    assert load_bundle(again.bundle_dir).bundle_id == load_bundle(result.bundle_dir).bundle_id


def _cli(opts, *args):
    return subprocess.run([EDGEKIT, "optimize", opts.model_path, "--target", "host-x86_64", "--calib", CALIB,
                           "--eval", EVAL, "--max-accuracy-drop", "0.02", "--precisions", "float32",
                           "--exit-counts", "none", "--prune-fractions", "none", "--cache", opts.cache_dir]
                          + [str(a) for a in args], capture_output=True, text=True, timeout=600)


def _one_line(got):
    assert got.returncode == 2, (got.stdout, got.stderr)
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), got.stderr
    return lines[0]


def test_a_budget_no_candidate_meets_names_the_closest_and_writes_nothing(first_run, tmp_path):
    opts, result, _, _ = first_run
    out = tmp_path / "never"
    got = _cli(opts, "--latency-ms", "0.000001", "-o", out, "--json")
    line = _one_line(got)
    assert "no candidate meets latency_ms <= 1e-06" in line and "closest: exits=native" in line
    assert not out.exists() and got.stdout == ""


def test_bad_input_is_one_line_and_out_is_never_overwritten(first_run, tmp_path):
    opts, _, _, _ = first_run
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "never overwrites" in _one_line(_cli(opts, "--latency-ms", "5", "-o", out))
    assert os.listdir(out) == ["keep.txt"]
    assert "exactly one of --latency-ms, --energy-mj, --size" in _one_line(
        _cli(opts, "--latency-ms", "5", "--size", "1M", "-o", tmp_path / "a"))
    assert "--energy-mj -1.0: allowed a number above 0" in _one_line(_cli(opts, "--energy-mj", "-1", "-o", tmp_path / "b"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_command_prints_the_front_and_the_choice(first_run, tmp_path):
    opts, result, _, _ = first_run
    got = _cli(opts, "--latency-ms", "1000", "-o", tmp_path / "cli", "--progress")
    assert got.returncode == 0, got.stderr
    assert "chosen: {}".format(result.chosen.name) in got.stdout and "conversions run: 0," in got.stdout
    assert result.chosen.name.split(" thresholds")[0] in got.stdout.splitlines()[2]     # the front's table
    assert "optimize:" in got.stderr and "singles" in got.stderr       # progress: phase, count, elapsed
    assert (tmp_path / "cli" / "host-x86_64" / "manifest.json").is_file()


def test_a_size_budget_chooses_the_smallest_accurate_enough_point_from_the_cache(first_run, tmp_path):
    opts, _, _, _ = first_run
    got = _cli(opts, "--size", "10M", "-o", tmp_path / "size", "--json")
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    assert report["search"]["conversions_run"] == 0
    assert report["budget"] == {"metric": "size_bytes", "limit": 10 * 1024 * 1024, "relative": False,
                                "resolved": 10 * 1024 * 1024}
    ok = [p for p in report["points"] if p["accuracy"] >= report["min_accuracy"]]
    assert report["chosen"]["size_bytes"] == min(p["size_bytes"] for p in ok)


def test_a_budget_relative_to_the_baseline_uses_the_baseline_timed_in_the_same_run(first_run, tmp_path):
    opts, _, _, _ = first_run
    got = _cli(opts, "--latency-ms", "100%", "-o", tmp_path / "rel", "--json")
    assert got.returncode == 0, got.stderr
    report = json.loads(got.stdout)
    base = report["baseline_full_depth"]
    assert base["latency_from"] == "end to end"
    assert report["budget"]["resolved"] == pytest.approx(base["latency_ms"])
    assert report["chosen"]["latency_ms"] <= base["latency_ms"]
    line = _one_line(_cli(opts, "--latency-ms", "0.001%", "-o", tmp_path / "tiny"))
    assert "(0.001% of uniform int8 at full depth, measured in this run)" in line and "closest: " in line
    assert "allowed a number above 0, or a percentage" in _one_line(_cli(opts, "--latency-ms", "150%", "-o",
                                                                          tmp_path / "x"))
    assert not (tmp_path / "tiny").exists() and not (tmp_path / "x").exists()


def test_exit_placement_is_a_search_dimension_for_a_single_output_model():
    from types import SimpleNamespace

    from edgekit.convert.exits import PLACES
    from edgekit.errors import ConfigError
    from edgekit.optimize.search import baseline, singles
    from edgekit.optimize.space import EXIT_PLACES
    from edgekit.targets import get_target

    assert EXIT_PLACES == PLACES
    lat = Candidate(2, None, "int8", "latency")
    assert lat.key == "exits=auto2@latency prune=- precision=int8"
    assert Candidate(2, None, "int8").key == "exits=auto2 prune=- precision=int8"
    assert Candidate.from_dict(lat.to_dict()) == lat
    assert Candidate.from_dict({"exits": 2, "prune": None, "precision": "int8"}).place == "flops"  # older caches
    space = SearchSpace(exit_counts=(1, 2), prune_fractions=(), precisions=("int8",))
    ctx = SimpleNamespace(opts=SimpleNamespace(space=space, budget=Budget("latency_ms", 0.5, True)),
                          target=get_target("host-x86_64"))
    base = baseline(1, ["int8"])
    got = singles(ctx, base, plain=True)
    assert got == [base, Candidate(2, None, "int8"), Candidate(1, None, "int8", "latency"), lat]
    assert singles(ctx, Candidate(NATIVE, None, "int8"), plain=False) == [Candidate(NATIVE, None, "int8")]
    with pytest.raises(ConfigError, match="exit placements 'time': allowed at least one of flops, latency"):
        SearchSpace(exit_places=("time",)).check()
    from edgekit.cli.optimize import _space

    assert _space(None, None, None, None, "latency").exit_places == ("latency",)
