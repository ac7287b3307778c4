"""Fleet flash to four real sshd servers, one of them stopped: three succeed, one is reported failed."""
import os
import subprocess
import sys
import time

import pytest
import yaml

from edgekit.deploy import BoardDefaults, flash_fleet, list_fleet, load_inventory
from edgekit.deploy.hosts import make_ssh_options
from edgekit.manifest import read_manifest

from .conftest import REMOTE_PYTHON, _user, known_hosts_for, link

pytestmark = pytest.mark.ssh
EDGEKIT = os.path.join(os.path.dirname(sys.executable), "edgekit")


@pytest.fixture
def fleet(tmp_path, sshd_factory, client_keys):
    servers = [sshd_factory() for _ in range(4)]
    kh = known_hosts_for(tmp_path / "known_hosts", *servers)
    servers[2].stop()                                          # board-2 is switched off
    boards = [{"name": "board-{}".format(i), "host": "127.0.0.1", "port": s.port, "user": _user(),
               "key": str(client_keys["good"]), "remote_dir": str(tmp_path / "board-{}".format(i)),
               "target": "host-x86_64"} for i, s in enumerate(servers)]
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(yaml.safe_dump(boards, sort_keys=False))
    return inventory, kh, boards


def test_fleet_flash_from_the_command_line(fleet, bundles):
    inventory, kh, boards = fleet
    rid = read_manifest(str(bundles["A"])).bundle_id
    t0 = time.monotonic()
    got = subprocess.run([EDGEKIT, "flash", str(bundles["A"]), "--inventory", str(inventory), "--known-hosts", str(kh),
                          "--remote-python", REMOTE_PYTHON, "--jobs", "4"], capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert got.returncode == 2
    assert got.stderr.strip() == "edgekit: error: 1 of 4 boards failed (flash): board-2"
    rows = {line.split()[0]: line for line in got.stdout.splitlines()[2:]}
    assert sorted(rows) == ["board-0", "board-1", "board-2", "board-3"]
    for name in ("board-0", "board-1", "board-3"):
        assert rows[name].split()[1:3] == ["ok", rid]
    assert rows["board-2"].split()[1] == "FAILED" and "cannot connect to 127.0.0.1:{}".format(
        boards[2]["port"]) in rows["board-2"]
    for i in (0, 1, 3):
        assert link(boards[i]["remote_dir"]) == rid
    assert not os.path.exists(boards[2]["remote_dir"])
    print("\nfleet flash of 4 boards (1 down): {:.2f} s wall\n{}".format(elapsed, got.stdout))


def test_fleet_library_report(fleet, bundles):
    inventory, kh, _ = fleet
    defaults = BoardDefaults(ssh=make_ssh_options(None, str(kh), False, 5.0), remote_python=REMOTE_PYTHON)
    boards = load_inventory(str(inventory), defaults)
    report = flash_fleet(str(bundles["B"]), boards, jobs=2)
    assert not report.ok and [o.board for o in report.failed] == ["board-2"]
    assert [o.ok for o in report.outcomes] == [True, True, False, True]
    assert report.to_dict()["succeeded"] == 3
    listed = list_fleet(boards, jobs=4)
    assert [o.ok for o in listed.outcomes] == [True, True, False, True]
    assert listed.outcomes[0].result["current"] == read_manifest(str(bundles["B"])).bundle_id
