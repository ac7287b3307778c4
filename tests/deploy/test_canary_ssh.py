"""Canary rollouts (`edgekit flash --inventory … --canary N`) on three real loopback sshd boards.

The smoke data's labels are made from the new bundle's own predictions (run here with the same runtime), so
"the canary is right on every sample" and "wrong on every sample" are facts of the data, not of timing."""
import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekit.deploy import flash_fleet
from edgekit.deploy.canary import SmokeTest, canary_rollout
from edgekit.deploy.inventory_ansible import load_fleet_inventory
from edgekit.errors import ConfigError
from edgekit.manifest import read_manifest
from edgekit.runtime.runner import EarlyExitRunner

from .conftest import EDGEKIT, REMOTE_PYTHON, _user, known_hosts_for, link, one_line_error

NO_LATENCY_BOUND = 600000.0        # ms: the latency bound is an option; these tests do not judge speed


@pytest.fixture
def fleet(tmp_path, sshd_factory, client_keys, bundles):
    """Three boards in an Ansible INI inventory, all on bundle A."""
    servers = [sshd_factory() for _ in range(3)]
    kh = known_hosts_for(tmp_path / "known_hosts", *servers)
    dirs = [str(tmp_path / "board-{}".format(i)) for i in range(3)]
    lines = ["[canaries]", "board-0 ansible_port={} edgekit_remote_dir={}".format(servers[0].port, dirs[0]), "",
             "[rest]"] + ["board-{} ansible_port={} edgekit_remote_dir={}".format(i, servers[i].port, dirs[i])
                          for i in (1, 2)]
    lines += ["", "[all:vars]", "ansible_host=127.0.0.1", "ansible_user=" + _user(),
              "ansible_ssh_private_key_file=" + str(client_keys["good"]), "edgekit_remote_python=" + REMOTE_PYTHON]
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("\n".join(lines) + "\n")
    from edgekit.deploy.hosts import BoardDefaults, make_ssh_options

    boards = load_fleet_inventory(str(inventory), BoardDefaults(ssh=make_ssh_options(None, str(kh), False, 10.0)))
    assert flash_fleet(str(bundles["A"]), boards, jobs=3).ok
    return inventory, kh, boards, dirs


def _smoke_data(path: Path, bundle: Path, x_from: Path, right: bool) -> Path:
    x = np.load(x_from)["x"]
    preds = np.asarray(EarlyExitRunner(str(bundle)).run(x).predictions)
    np.savez(path, x=x, y=preds if right else (preds + 1) % 4)
    return path


def test_a_failed_smoke_test_leaves_every_board_on_its_release(fleet, bundles, data_file, tmp_path):
    inventory, kh, boards, dirs = fleet
    old, new = (read_manifest(str(bundles[k])).bundle_id for k in ("A", "B"))
    wrong = _smoke_data(tmp_path / "wrong.npz", bundles["B"], data_file, right=False)
    got = subprocess.run([EDGEKIT, "flash", str(bundles["B"]), "--inventory", str(inventory), "--known-hosts", str(kh),
                          "--canary", "1", "--smoke-data", str(wrong), "--smoke-min-accuracy", "0.5",
                          "--smoke-max-latency-ms", str(NO_LATENCY_BOUND)], capture_output=True, text=True, timeout=180)
    err = one_line_error(got)
    assert "canary rollout stopped: board-0 smoke test: accuracy 0.0000 < 0.5000; rolled back board-0" in err
    assert err.endswith("2 other board(s) not touched")
    assert [link(d) for d in dirs] == [old, old, old]            # every board on its previous release
    assert link(dirs[0], "previous") == new                       # board-0 did switch, then came back
    assert link(dirs[1], "previous") is None and new not in os.listdir(dirs[1] + "/releases")   # never saw B
    assert "smoke board-0: FAILED  accuracy 0.0000" in got.stdout and "rolled back board-0: " + old in got.stdout


def test_a_passing_canary_lets_the_rest_follow(fleet, bundles, data_file, tmp_path):
    _, _, boards, dirs = fleet
    new = read_manifest(str(bundles["B"])).bundle_id
    right = _smoke_data(tmp_path / "right.npz", bundles["B"], data_file, right=True)
    report = canary_rollout(str(bundles["B"]), boards, 1, SmokeTest(str(right), 1.0, NO_LATENCY_BOUND), jobs=2)
    assert report.ok, json.dumps(report.to_dict())[:2000]
    (smoke,) = report.smoke
    assert smoke.board == "board-0" and smoke.result["accuracy"] == 1.0 and smoke.result["samples"] == 20
    assert smoke.result["bundle_id"] == new                       # the smoke test ran the new release
    assert [o.board for o in report.rest.outcomes] == ["board-1", "board-2"]
    assert [link(d) for d in dirs] == [new, new, new] and not report.rolled_back.outcomes


def test_max_fail_tolerates_a_share_of_failed_canaries(fleet, bundles, data_file, tmp_path):
    _, _, boards, dirs = fleet
    old, new = (read_manifest(str(bundles[k])).bundle_id for k in ("A", "B"))
    right = _smoke_data(tmp_path / "right.npz", bundles["B"], data_file, right=True)
    broken = [boards[0], dataclasses.replace(boards[1], remote_python="/nonexistent/python3"), boards[2]]
    smoke = SmokeTest(str(right), 1.0, NO_LATENCY_BOUND)
    stopped = canary_rollout(str(bundles["B"]), broken, 2, smoke, max_fail=0.0)
    assert stopped.rest is None and [o.board for o in stopped.rolled_back.outcomes] == ["board-0"]
    assert [link(d) for d in dirs] == [old, old, old]
    tolerated = canary_rollout(str(bundles["B"]), broken, 2, smoke, max_fail=50.0)
    assert not tolerated.ok and [o.board for o in tolerated.canaries.failed] == ["board-1"]
    assert [link(d) for d in dirs] == [new, old, new]             # the failed canary kept its release


def test_smoke_bounds_and_plan_checks(tmp_path, data_file):
    smoke = SmokeTest(str(data_file), min_accuracy=0.9, max_latency_ms=5.0).check()
    assert smoke.judge({"accuracy": 0.95, "latency_ms": {"p50": 4.0}}) == []
    assert smoke.judge({"accuracy": 0.5, "latency_ms": {"p50": 7.25}}) == [
        "accuracy 0.5000 < 0.9000", "median latency 7.250 ms > 5 ms"]
    assert smoke.judge({"accuracy": None, "latency_ms": {}}) == [
        "no accuracy (the data has no labels)", "median latency ? ms > 5 ms"]
    for bad, message in [(SmokeTest(str(data_file), min_accuracy=1.5), "--smoke-min-accuracy: expected a fraction"),
                         (SmokeTest(str(data_file), max_latency_ms=0.0), "--smoke-max-latency-ms: expected"),
                         (SmokeTest(str(tmp_path / "none.npz"), 0.5), "--smoke-data .*none.npz: expected an existing")]:
        with pytest.raises(Exception, match=message):
            bad.check()


@pytest.mark.parametrize("args, message", [
    (["--canary", "1"], "--canary needs --smoke-data FILE"),
    (["--smoke-min-accuracy", "0.5"], "--smoke-min-accuracy only apply to a staged rollout; add --canary N"),
    (["--canary", "4", "--smoke-data", "{data}", "--smoke-min-accuracy", "0.5"], "--canary: expected 1 to 3"),
    (["--canary", "1", "--smoke-data", "{data}"], "--canary needs a bound"),
    (["--canary", "1", "--max-fail", "101", "--smoke-data", "{data}", "--smoke-min-accuracy", "0.5"],
     "--max-fail: expected a percentage from 0 to 100"),
])
def test_canary_options_are_checked_before_any_board_is_touched(tmp_path, bundles, data_file, args, message):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[pis]\n" + "".join("pi-{0} ansible_host=127.0.0.1 ansible_port={1} edgekit_remote_dir={2}/b{0}\n"
                                             .format(i, 9 + i, tmp_path) for i in range(3)))
    got = subprocess.run([EDGEKIT, "flash", str(bundles["B"]), "--inventory", str(inventory)] +
                         [a.format(data=data_file) for a in args], capture_output=True, text=True, timeout=60)
    assert message in one_line_error(got)
    assert not any((tmp_path / "b{}".format(i)).exists() for i in range(3))


def test_canary_needs_an_inventory(bundles, data_file):
    with pytest.raises(ConfigError, match="needs --inventory"):
        from edgekit.cli.canary import plan_from_options
        plan_from_options("flash", None, 1, 0.0, str(data_file), 0.5, None)
