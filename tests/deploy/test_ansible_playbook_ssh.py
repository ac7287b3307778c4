"""The shipped playbooks (edgekit/deploy/ansible/) run by the real ansible-playbook against three loopback sshd
boards: Ansible's own ssh connection, forks, serial batches and max_fail_percentage; per-host changed/ok/failed."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict

import pytest

from edgekit.manifest import read_manifest

from .conftest import REMOTE_PYTHON, _user, known_hosts_for, link

pytestmark = pytest.mark.ssh
PLAYBOOKS = Path(__file__).resolve().parents[2] / "edgekit" / "deploy" / "ansible"
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
RECAP_RE = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)")


@pytest.fixture
def lab(tmp_path, sshd_factory, client_keys):
    """Three boards in an INI inventory with two groups; Ansible trusts only their recorded host keys."""
    servers = [sshd_factory() for _ in range(3)]
    kh = known_hosts_for(tmp_path / "known_hosts", *servers)
    dirs = {"pi-0": tmp_path / "pi-0", "pi-1": tmp_path / "pi-1", "orin": tmp_path / "orin"}
    ports = dict(zip(dirs, (s.port for s in servers)))
    lines = ["[pis]"] + ["{} ansible_port={} edgekit_remote_dir={}".format(n, ports[n], dirs[n]) for n in ("pi-0", "pi-1")]
    lines += ["", "[jetsons]", "orin ansible_port={} edgekit_remote_dir={}".format(ports["orin"], dirs["orin"]), "",
              "[all:vars]", "ansible_host=127.0.0.1", "ansible_user=" + _user(),
              "ansible_ssh_private_key_file=" + str(client_keys["good"]), "edgekit_remote_python=" + REMOTE_PYTHON,
              "ansible_ssh_common_args='-F /dev/null -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes'".format(kh)]
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("\n".join(lines) + "\n")
    return inventory, {n: str(d) for n, d in dirs.items()}


@pytest.fixture
def playbook():
    """Run one of the shipped playbooks. Ansible's own files (config, temp, ssh control sockets) go to a short
    private dir: ssh's ControlPath has a length limit, and no user or system ansible.cfg may apply."""
    home = tempfile.mkdtemp(prefix="ek-ans-", dir="/tmp")
    Path(home, "ansible.cfg").write_text("[defaults]\n")
    yield lambda inventory, name, *extra: _run_playbook(home, inventory, name, *extra)
    shutil.rmtree(home, ignore_errors=True)


def _run_playbook(home: str, inventory: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_HOME=home, ANSIBLE_LOCAL_TEMP=home + "/tmp", ANSIBLE_NOCOLOR="1",
               ANSIBLE_SSH_CONTROL_PATH_DIR=home + "/cp", ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_CONFIG=home + "/ansible.cfg")
    return subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(inventory), str(PLAYBOOKS / name)] + list(extra),
                          capture_output=True, text=True, timeout=240, env=env, cwd=home)


def recap(got: subprocess.CompletedProcess) -> Dict[str, Dict[str, int]]:
    """PLAY RECAP: {host: {ok, changed, unreachable, failed}}."""
    out = {}
    for line in got.stdout.split("PLAY RECAP")[-1].splitlines():
        m = RECAP_RE.match(line.strip())
        if m:
            out[m.group(1)] = dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups()[1:5])))
    assert out, got.stdout + got.stderr
    return out


def test_playbook_flashes_all_with_forks_then_a_second_run_is_ok(lab, bundles, playbook):
    inventory, dirs = lab
    rid = read_manifest(str(bundles["A"])).bundle_id
    checked = playbook(inventory, "flash.yml", "-e", "bundle=" + str(bundles["A"]), "--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert all(r["changed"] == 1 for r in recap(checked).values())
    assert not any(os.path.exists(d) for d in dirs.values())        # check mode only probed
    first = playbook(inventory, "flash.yml", "-e", "bundle=" + str(bundles["A"]), "-f", "2")
    assert first.returncode == 0, first.stdout + first.stderr
    assert recap(first) == {n: {"ok": 1, "changed": 1, "unreachable": 0, "failed": 0} for n in dirs}
    assert all(link(d) == rid for d in dirs.values())
    stamps = {n: os.stat(os.path.join(d, "releases", rid, "manifest.json")).st_mtime_ns for n, d in dirs.items()}
    second = playbook(inventory, "flash.yml", "-e", "bundle=" + str(bundles["A"]), "-f", "2", "-v")
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second) == {n: {"ok": 1, "changed": 0, "unreachable": 0, "failed": 0} for n in dirs}
    assert second.stdout.count('"uploaded_files": 0') == 3 and "nothing to do" in second.stdout
    assert stamps == {n: os.stat(os.path.join(d, "releases", rid, "manifest.json")).st_mtime_ns
                      for n, d in dirs.items()}                      # nothing was uploaded again
    damaged = Path(dirs["pi-0"], "releases", rid, "stage_1.tflite")
    damaged.write_bytes(b"bit rot")
    repaired = playbook(inventory, "flash.yml", "-e", "bundle=" + str(bundles["A"]), "--limit", "pi-0", "-v")
    assert recap(repaired) == {"pi-0": {"ok": 1, "changed": 1, "unreachable": 0, "failed": 0}}, repaired.stdout
    assert '"uploaded_files": 1' in repaired.stdout
    assert damaged.read_bytes() == (bundles["A"] / "stage_1.tflite").read_bytes()


def test_playbook_rollback_and_limit(lab, bundles, playbook):
    inventory, dirs = lab
    ids = [read_manifest(str(bundles[k])).bundle_id for k in ("A", "B")]
    for bundle in ("A", "B"):
        got = playbook(inventory, "flash.yml", "-e", "bundle=" + str(bundles[bundle]), "--limit", "pis")
        assert got.returncode == 0, got.stdout + got.stderr
    assert link(dirs["pi-0"]) == ids[1] and link(dirs["pi-0"], "previous") == ids[0]
    assert not os.path.exists(dirs["orin"])
    back = playbook(inventory, "rollback.yml", "--limit", "pi-1")
    assert back.returncode == 0, back.stdout + back.stderr
    assert recap(back) == {"pi-1": {"ok": 1, "changed": 1, "unreachable": 0, "failed": 0}}
    assert link(dirs["pi-1"]) == ids[0] and link(dirs["pi-0"]) == ids[1]


def test_a_failing_agent_stops_a_serial_rollout(lab, bundles, tmp_path, playbook):
    inventory, dirs = lab
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\necho 'Segmentation fault' >&2\nexit 139\n")
    broken.chmod(0o755)
    text = inventory.read_text().replace("pi-1 ansible_port", "pi-1 edgekit_remote_python={} ansible_port".format(
        broken))
    inventory.write_text(text)
    got = playbook(inventory, "flash.yml", "-e", "bundle=" + str(bundles["A"]), "-e", "edgekit_serial=1",
                   "-e", "edgekit_max_fail_percentage=0")
    assert got.returncode != 0
    rid = read_manifest(str(bundles["A"])).bundle_id
    assert link(dirs["pi-0"]) == rid, got.stdout + got.stderr   # the first batch went through
    assert "pi-1: {} on the board failed while probing the board (exit 139): Segmentation fault".format(
        broken) in got.stdout
    assert not os.path.exists(dirs["orin"])               # the rollout stopped before the third batch
    assert recap(got)["pi-1"]["failed"] == 1 and "orin" not in recap(got)
    # Batches of two: pi-1 fails in the first one. The percentage decides whether the rollout goes on,
    # so the play keyword really comes from the extra variable.
    stopped = playbook(inventory, "flash.yml", "-e", "bundle=" + str(bundles["B"]), "-e", "edgekit_serial=2",
                       "-e", "edgekit_max_fail_percentage=0")
    assert stopped.returncode != 0 and "orin" not in recap(stopped) and not os.path.exists(dirs["orin"])
    tolerated = playbook(inventory, "flash.yml", "-e", "bundle=" + str(bundles["B"]), "-e", "edgekit_serial=2",
                         "-e", "edgekit_max_fail_percentage=50")
    assert tolerated.returncode != 0                       # a host failed, so ansible-playbook still says so
    assert recap(tolerated)["orin"] == {"ok": 1, "changed": 1, "unreachable": 0, "failed": 0}
    assert link(dirs["orin"]) == read_manifest(str(bundles["B"])).bundle_id
