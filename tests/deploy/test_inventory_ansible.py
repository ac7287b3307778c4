"""Ansible INI/YAML inventories read by ansible-core's own loader, edgekit's YAML still read by edgekit."""
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import yaml

from edgekit.deploy.ansible_task import Link, run_task
from edgekit.deploy.hosts import BoardDefaults, make_ssh_options
from edgekit.deploy.inventory_ansible import inventory_format, load_fleet_inventory
from edgekit.errors import ConfigError
from edgekit.manifest import read_manifest

from .conftest import EDGEKIT, REMOTE_PYTHON, _user, known_hosts_for, link, one_line_error

INI = """\
[pis]
pi-[1:2] ansible_host=127.0.0.1 edgekit_target=raspberry-pi-5

[jetsons]
orin ansible_host=10.0.0.9 ansible_port=2222 ansible_user=nvidia edgekit_remote_python=/usr/bin/python3.8

[boards:children]
pis
jetsons

[boards:vars]
ansible_user=pi
edgekit_remote_dir=/opt/edgekit

[pis:vars]
ansible_python_interpreter=/usr/bin/python3
edgekit_remote_dir="{{ '/srv/' ~ inventory_hostname }}"
"""

YAML = """\
all:
  children:
    lab:
      hosts:
        nano:
          ansible_host: 192.168.1.20
          ansible_port: 2200
          edgekit_target: jetson-nano
      vars:
        ansible_user: jetson
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_ini_groups_children_vars_and_templates(tmp_path):
    boards = {b.name: b for b in load_fleet_inventory(_write(tmp_path, "hosts.ini", INI))}
    assert sorted(boards) == ["orin", "pi-1", "pi-2"]
    pi = boards["pi-2"]
    assert (pi.host.user, pi.host.host, pi.host.port) == ("pi", "127.0.0.1", 22)
    assert pi.remote_dir == "/srv/pi-2"                       # the child group's template wins over boards:vars
    assert pi.remote_python == "/usr/bin/python3" and pi.target == "raspberry-pi-5"
    orin = boards["orin"]
    assert (orin.host.user, orin.host.host, orin.host.port) == ("nvidia", "10.0.0.9", 2222)
    assert orin.remote_dir == "/opt/edgekit" and orin.remote_python == "/usr/bin/python3.8" and orin.target is None


def test_limit_is_an_ansible_host_pattern(tmp_path):
    path = _write(tmp_path, "hosts.ini", INI)
    assert [b.name for b in load_fleet_inventory(path, limit="pis")] == ["pi-1", "pi-2"]
    assert [b.name for b in load_fleet_inventory(path, limit="boards:!pi-1")] == ["pi-2", "orin"]
    assert [b.name for b in load_fleet_inventory(path, limit="orin,pi-2")] == ["pi-2", "orin"]
    with pytest.raises(ConfigError, match="--limit 'nanos' matches no host .*groups: boards, jetsons, pis"):
        load_fleet_inventory(path, limit="nanos")


def test_yaml_inventory_and_defaults_from_the_command_line(tmp_path):
    key = tmp_path / "id_test"
    key.write_text("not read here")
    defaults = BoardDefaults(ssh=make_ssh_options(str(key), str(tmp_path / "kh"), False, 7.0),
                             remote_dir="/data/ek", remote_python="python3.11")
    (nano,) = load_fleet_inventory(_write(tmp_path, "hosts.yml", YAML), defaults)
    assert (nano.name, nano.host.user, nano.host.host, nano.host.port) == ("nano", "jetson", "192.168.1.20", 2200)
    assert (nano.remote_dir, nano.remote_python, nano.target) == ("/data/ek", "python3.11", "jetson-nano")
    assert nano.ssh.identity == str(key) and nano.ssh.timeout_s == 7.0


def test_edgekit_yaml_is_still_read_by_edgekit(tmp_path):
    boards = [{"name": "pi-a", "host": "10.0.0.1", "user": "pi"}, {"name": "pi-b", "host": "10.0.0.2", "user": "pi"},
              {"name": "orin", "host": "10.0.0.3", "user": "nvidia"}]
    path = _write(tmp_path, "hosts.yaml", yaml.safe_dump(boards))
    assert inventory_format(path) == "edgekit"
    assert inventory_format(_write(tmp_path, "wrapped.yaml", yaml.safe_dump({"boards": boards}))) == "edgekit"
    assert inventory_format(_write(tmp_path, "a.yml", YAML)) == "ansible"
    assert inventory_format(_write(tmp_path, "a.ini", INI)) == "ansible"
    assert [b.name for b in load_fleet_inventory(path, limit="pi-*")] == ["pi-a", "pi-b"]
    with pytest.raises(ConfigError, match="--limit 'x-\\*' matches no board"):
        load_fleet_inventory(path, limit="x-*")
    with pytest.raises(ConfigError, match="unknown key"):          # edgekit's own checks still apply
        load_fleet_inventory(_write(tmp_path, "typo.yaml", yaml.safe_dump([{"host": "h", "user": "u", "prot": 1}])))


@pytest.mark.parametrize("text, message", [
    ("all:\n  hosts: [\n", "ansible-core could not parse it"),
    ("[pis]\npi-1 ansible_port=seventy\n", "ansible_port: invalid port 'seventy'"),
    ("[pis]\npi-1 edgekit_remote_dri=/x\n", "unknown variable edgekit_remote_dri; allowed: edgekit_target"),
    ("[pis]\npi-1 edgekit_remote_dir=/x/../y\n", "edgekit_remote_dir: '/x/../y' has a '..' part"),
    ("[pis]\npi-1 ansible_host='bad host'\n", "invalid host 'bad host'"),
    ("[pis]\npi-1 edgekit_remote_dir='{{ nowhere }}'\n", "cannot evaluate edgekit_remote_dir"),
    ("[a]\nh1 ansible_host=10.0.0.1\n[b]\nh2 ansible_host=10.0.0.1\n", "h1 and h2 are the same board"),
])
def test_bad_ansible_inventories_are_one_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace(".", "\\.")):
        load_fleet_inventory(_write(tmp_path, "hosts.ini", text))


def test_without_ansible_core_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ansible.inventory.manager", None)     # as if ansible-core were absent
    with pytest.raises(ConfigError, match=r"needs ansible-core .*edgekit\[ansible\]"):
        load_fleet_inventory(_write(tmp_path, "hosts.ini", INI))


@pytest.mark.ssh
def test_cli_flashes_only_the_limited_group(tmp_path, sshd_factory, client_keys, bundles):
    servers = [sshd_factory() for _ in range(3)]
    kh = known_hosts_for(tmp_path / "known_hosts", *servers)
    dirs = [tmp_path / "board-{}".format(i) for i in range(3)]
    lines = ["[pis]"] + ["pi-{} ansible_port={} edgekit_remote_dir={}".format(i, servers[i].port, dirs[i])
                         for i in (0, 1)]
    lines += ["", "[jetsons]", "orin ansible_port={} edgekit_remote_dir={}".format(servers[2].port, dirs[2]), "",
              "[all:vars]", "ansible_host=127.0.0.1", "ansible_user=" + _user(),
              "ansible_ssh_private_key_file=" + str(client_keys["good"]), "edgekit_remote_python=" + REMOTE_PYTHON]
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("\n".join(lines) + "\n")
    rid = read_manifest(str(bundles["A"])).bundle_id
    base = [EDGEKIT, "flash", "--inventory", str(inventory), "--known-hosts", str(kh)]
    got = subprocess.run(base + [str(bundles["A"]), "--limit", "pis", "--json"], capture_output=True, text=True,
                         timeout=120)
    assert got.returncode == 0, got.stderr
    assert [b["board"] for b in yaml.safe_load(got.stdout)["boards"]] == ["pi-0", "pi-1"]
    assert link(str(dirs[0])) == rid and link(str(dirs[1])) == rid
    assert not os.path.exists(dirs[2])                         # the jetsons group was left alone
    err = one_line_error(subprocess.run(base + [str(bundles["A"]), "--limit", "nanos"], capture_output=True,
                                        text=True, timeout=60))
    assert "--limit 'nanos' matches no host" in err and not os.path.exists(dirs[2])


class _NoLink(Link):
    """A task refused on its arguments never reaches the board."""

    def run(self, argv, stdin, timeout_s):
        raise AssertionError("the board was contacted: {}".format(argv))


@pytest.mark.parametrize("args, message", [
    ({"bundle": "x", "keeep": 3}, "unknown argument(s) keeep; allowed: state, bundle"),
    ({"state": "present"}, "state 'present'; allowed: flashed, rolled_back, listed"),
    ({"state": "flashed"}, "state=flashed needs bundle"),
    ({"bundle": "x", "remote_dir": "/"}, "remote_dir: '/' is too broad"),
    ({"bundle": "x", "remote_python": "python3; rm -rf /"}, "remote_python: invalid interpreter"),
    ({"bundle": "x", "force": "yes"}, "force: expected true or false, got 'yes'"),
])
def test_the_ansible_action_refuses_bad_arguments_before_connecting(args, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_task("pi-0", args, _NoLink())


def test_an_inventory_directory_with_group_vars_and_host_vars(tmp_path):
    inv = tmp_path / "inventory"
    (inv / "group_vars").mkdir(parents=True)
    (inv / "host_vars").mkdir()
    (inv / "hosts.ini").write_text("[pis]\npi-1 ansible_host=10.0.0.1\npi-2 ansible_host=10.0.0.2\n")
    (inv / "group_vars" / "pis.yml").write_text("edgekit_remote_dir: /srv/edgekit\nedgekit_target: raspberry-pi-4\n")
    (inv / "host_vars" / "pi-2.yml").write_text("edgekit_target: raspberry-pi-5\nansible_user: admin\n")
    boards = {b.name: b for b in load_fleet_inventory(str(inv))}
    assert (boards["pi-1"].remote_dir, boards["pi-1"].target) == ("/srv/edgekit", "raspberry-pi-4")
    assert (boards["pi-2"].target, boards["pi-2"].host.user) == ("raspberry-pi-5", "admin")   # host_vars win


def test_the_action_documentation_lists_exactly_its_arguments():
    from edgekit.deploy.ansible_task import ARGS

    library = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "edgekit", "deploy", "ansible", "library")
    got = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-doc"), "-M", library, "--json",
                          "edgekit_release"], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    doc = json.loads(got.stdout)["edgekit_release"]["doc"]
    assert sorted(doc["options"]) == sorted(ARGS)
    assert doc["options"]["state"]["choices"] == ["flashed", "rolled_back", "listed"]
