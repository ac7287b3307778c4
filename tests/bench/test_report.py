"""The bench report (JSON, CSV, PNG, atomic) and `edgekit bench` end to end on the demo bundle."""
import csv
import json
import os
import subprocess
import sys

import pytest

from edgekit.bench.energy import EnergyOptions, profile_from_target
from edgekit.bench.latency import Protocol
from edgekit.bench.report import PLOTS, ReportError, write_report
from edgekit.bench.run import PROTOCOL_STEPS, run_bench, text_lines
from edgekit.runtime import EarlyExitRunner
from edgekit.targets import get_target
from tests.conftest import ROOT, TEST

PNG = b"\x89PNG\r\n\x1a\n"
CSVS = ("latency.csv", "latency_raw.csv", "energy.csv", "curve.csv", "exits.csv")


@pytest.fixture(scope="module")
def bundle(demo_bundles):
    return demo_bundles("float32", "host-x86_64")


@pytest.fixture(scope="module")
def result(bundle, test_split):
    runner = EarlyExitRunner(bundle)
    return run_bench(runner, test_split.x[:120], test_split.y[:120], Protocol(runs=40, warmup=5),
                     EnergyOptions(blocks=1, block_seconds=1.0, idle_seconds=0.4),
                     profile_from_target(get_target("host-x86_64")))


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_result_holds_both_modes_energy_protocol_and_environment(result):
    for mode in ("early_exit", "full_depth"):
        assert result[mode]["calls"] == 40 and len(result["raw_ms"][mode]) == 40
        assert result["energy"][mode]["inferences"] >= 1
    assert result["protocol"]["steps"] == list(PROTOCOL_STEPS)
    assert result["protocol"]["latency"]["runs"] == 40 and result["protocol"]["energy"]["blocks"] == 1
    assert result["protocol"]["profile"]["name"] == "host-x86_64"
    env = result["environment"]
    assert {"cpu_governor", "cpu_temp_c", "cpu_temp_c_end", "threads", "interpreter"} <= set(env)
    text = "\n".join(text_lines(result))
    assert "energy: meter {} ({})".format(result["energy"]["meter"], result["energy"]["kind"].upper()) in text
    assert "mJ above idle" in text and "speedup" in text


def test_report_files_agree_with_the_result(tmp_path, result):
    out = tmp_path / "rep"
    names = write_report(result, str(out))
    assert set(names) == set(CSVS + PLOTS + ("report.json",))
    assert os.listdir(tmp_path) == ["rep"]                     # no temp dir left beside it
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(result))
    for p in PLOTS:
        data = (out / p).read_bytes()
        assert data.startswith(PNG) and len(data) > 10000, p
    lat = {r["mode"]: r for r in _rows(out / "latency.csv")}
    for mode in ("early_exit", "full_depth"):
        # written with 6 decimals: within half a unit of the last one, whatever the size (the demo's p99 can be
        # 0.043 ms, where a relative 1e-5 is finer than the file holds)
        assert float(lat[mode]["p99_ms"]) == pytest.approx(result[mode]["latency_ms"]["p99"], rel=0, abs=5.0001e-7)
        assert int(lat[mode]["calls"]) == 40
    en = {r["mode"]: r for r in _rows(out / "energy.csv")}
    assert en["full_depth"]["meter"] == result["energy"]["meter"]
    assert en["early_exit"]["measured_or_estimated"] == result["energy"]["kind"]
    assert float(en["full_depth"]["joules_per_inference_above_idle"]) == pytest.approx(
        result["energy"]["full_depth"]["joules_above_idle"], abs=1e-8)
    raw = _rows(out / "latency_raw.csv")
    assert len(raw) == 80 and float(raw[3]["ms"]) == pytest.approx(result["raw_ms"]["early_exit"][3], abs=1e-6)
    curve = _rows(out / "curve.csv")
    assert curve[-1]["point"] == "chosen" and len(curve) == len(result["curve"]["points"]) + 1


def test_existing_dir_refused_force_replaces_file_refused(tmp_path, result):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ReportError, match="already exists; allowed: a new directory, or --force"):
        write_report(result, str(out))
    assert os.listdir(out) == ["keep.txt"]
    write_report(result, str(out), force=True)
    assert not (out / "keep.txt").exists() and (out / "report.json").is_file()
    assert sorted(os.listdir(tmp_path)) == ["rep"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ReportError, match="is a file"):
        write_report(result, str(afile), force=True)
    assert afile.read_text() == "x"


def test_a_failed_report_leaves_nothing(tmp_path, result):
    broken = dict(result, curve={"points": [{"bad": 1}], "chosen": None})
    with pytest.raises(KeyError):
        write_report(broken, str(tmp_path / "rep"))
    assert os.listdir(tmp_path) == []
    with pytest.raises(ReportError, match="has no 'raw_ms'"):
        write_report({k: v for k, v in result.items() if k != "raw_ms"}, str(tmp_path / "rep"))
    assert os.listdir(tmp_path) == []


def edgekit(*args):
    exe = os.path.join(os.path.dirname(sys.executable), "edgekit")
    return subprocess.run([exe] + [str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def one_line_error(got):
    assert got.returncode == 2, (got.stdout, got.stderr)
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: "), got.stderr
    return lines[0]


def test_edgekit_bench_prints_and_writes_latency_and_energy(tmp_path, bundle):
    from edgekit.bench.meters import RaplMeter

    out = tmp_path / "rep"
    got = edgekit("bench", bundle, "--data", TEST, "--runs", "30", "--warmup", "3", "--blocks", "1",
                  "--idle-seconds", "0.4", "--report", out)
    assert got.returncode == 0, got.stderr
    meter, kind = ("rapl", "MEASURED") if RaplMeter().available()[0] else ("power-model", "ESTIMATED")
    lines = got.stdout.splitlines()
    assert any(ln.startswith("energy: meter {} ({})".format(meter, kind)) for ln in lines), got.stdout
    for mode in ("early_exit", "full_depth"):
        assert sum(1 for ln in lines if ln.split()[:1] == [mode]) == 2       # latency row and energy row
    rep = json.loads((out / "report.json").read_text())
    assert rep["energy"]["meter"] == meter and rep["energy"]["kind"] == kind.lower()
    assert rep["bundle"]["target"] == "host-x86_64" and rep["schema"] == "edgekit.bench/1"
    assert "report: {}".format(out) in got.stdout

    msg = one_line_error(edgekit("bench", bundle, "--data", TEST, "--report", out))
    assert "already exists" in msg
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "is a file" in one_line_error(edgekit("bench", bundle, "--data", TEST, "--report", afile))


@pytest.mark.parametrize("args, needle", [
    (["--runs", "0"], "--runs must be at least 1, got 0"),
    (["--meter", "nope"], "unknown energy meter 'nope'; allowed: auto, rapl"),
    (["--block-seconds", "0.5"], "--block-seconds must be from 1"),
    (["--meter", "jetson-ina3221"], "energy meter 'jetson-ina3221' is not available here"),
])
def test_bench_bad_input_is_one_line(bundle, args, needle):
    got = edgekit("bench", bundle, "--data", TEST, "--runs", "5", "--warmup", "0", "--blocks", "1",
                  "--idle-seconds", "0.2", *args)
    assert needle in one_line_error(got)
