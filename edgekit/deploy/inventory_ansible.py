"""Fleet inventories in Ansible's formats (INI, YAML, directories), read by ansible-core's own inventory loader.

`load_fleet_inventory` is what `--inventory` calls: edgekit's own YAML (a list of boards, or `boards:` holding
one) goes to hosts.load_inventory; anything else is handed to ansible-core (the `ansible` extra), so groups,
children, ranges, group_vars/ and host_vars/ mean exactly what they mean to `ansible-playbook`.

Per host: ansible_host, ansible_port, ansible_user (ansible_ssh_* spellings too), ansible_ssh_private_key_file,
and edgekit_target, edgekit_remote_dir, edgekit_remote_python (else ansible_python_interpreter when it is a
path, else the command line's value). A private key path is used as Ansible uses it: relative to the current
directory. Unknown edgekit_* variables are refused, so a misspelt one does not silently fall back.
"""
import contextlib
import fnmatch
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from edgekit.deploy.hosts import (Board, BoardDefaults, HostSpec, check_hostname, check_port, check_remote_dir,
                                  check_remote_python, check_user, load_inventory, make_ssh_options)
from edgekit.errors import ConfigError, first_line

EDGEKIT_VARS = ("edgekit_target", "edgekit_remote_dir", "edgekit_remote_python")
_USED_VARS = ("ansible_host", "ansible_ssh_host", "ansible_port", "ansible_ssh_port", "ansible_user",
              "ansible_ssh_user", "ansible_ssh_private_key_file", "ansible_python_interpreter") + EDGEKIT_VARS
INSTALL_HINT = "pip install -c constraints.txt 'edgekit[ansible]'"


def inventory_format(path: str) -> str:
    """'edgekit' for edgekit's own YAML (a list of board mappings, or {boards: [...]}), else 'ansible'."""
    import yaml

    if os.path.isdir(path):
        return "ansible"
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError("cannot read inventory {}: {}".format(path, exc))
    except yaml.YAMLError:
        return "ansible"                      # INI ("[group]" then "host key=value" lines) is not YAML
    if isinstance(data, dict) and set(data) == {"boards"}:
        return "edgekit"
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        return "edgekit"
    return "ansible"


def load_fleet_inventory(path: str, defaults: BoardDefaults = BoardDefaults(),
                         limit: Optional[str] = None) -> List[Board]:
    """The boards of an edgekit or Ansible inventory, narrowed by `limit` (an Ansible host pattern)."""
    if not os.path.exists(path):
        raise ConfigError("inventory not found: {}".format(path))
    if limit is not None and (not isinstance(limit, str) or not limit.strip()):
        raise ConfigError("--limit: expected a host pattern (e.g. 'pis' or 'pis:!pi-3'), got {!r}".format(limit))
    if inventory_format(path) == "edgekit":
        return limit_boards(load_inventory(path, defaults), limit, path)
    return load_ansible_inventory(path, defaults, limit)


def limit_boards(boards: Sequence[Board], limit: Optional[str], path: str) -> List[Board]:
    """edgekit's own YAML has no groups: --limit is a comma-separated list of shell-style name patterns."""
    if limit is None:
        return list(boards)
    patterns = [p.strip() for p in limit.split(",") if p.strip()]
    kept = [b for b in boards if any(fnmatch.fnmatchcase(b.label, p) or fnmatch.fnmatchcase(b.host.host, p)
                                     for p in patterns)]
    if not kept:
        raise ConfigError("--limit {!r} matches no board in {} (boards: {}); in edgekit's own inventory format it "
                          "takes comma-separated name patterns such as 'pi-*'".format(
                              limit, path, ", ".join(b.label for b in boards)))
    return kept


def _ansible() -> Any:
    try:
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.template import Templar
        from ansible.vars.manager import VariableManager
    except ImportError as exc:
        raise ConfigError("this inventory is in Ansible's format, which needs ansible-core ({}); install the "
                          "ansible extra: {}, or write edgekit's own YAML list of boards".format(exc, INSTALL_HINT))
    return InventoryManager, DataLoader, Templar, VariableManager


@contextlib.contextmanager
def _captured_warnings() -> Iterator[List[str]]:
    """Keep ansible-core's inventory warnings off stderr; the caller turns them into one error line."""
    from ansible.utils.display import Display

    display = Display()
    said: List[str] = []

    def warning(msg: Any, *args: Any, **kwargs: Any) -> None:
        said.append(first_line(msg))

    def error_as_warning(msg: Any, exception: BaseException, *args: Any, **kwargs: Any) -> None:
        said.append("{} {}".format(first_line(msg or ""), first_line(exception)).strip())

    display.warning, display.error_as_warning = warning, error_as_warning
    try:
        yield said
    finally:
        del display.warning, display.error_as_warning


def load_ansible_inventory(path: str, defaults: BoardDefaults = BoardDefaults(),
                           limit: Optional[str] = None) -> List[Board]:
    InventoryManager, DataLoader, Templar, VariableManager = _ansible()
    from ansible.errors import AnsibleError

    loader = DataLoader()
    with _captured_warnings() as said:
        try:
            inventory = InventoryManager(loader=loader, sources=[os.path.abspath(path)])
        except AnsibleError as exc:
            raise ConfigError("inventory {}: ansible-core could not read it: {}".format(path, first_line(exc)))
    failed = [w for w in said if "unable to parse" in w.lower() or "failed to parse" in w.lower()]
    if failed:
        raise ConfigError("inventory {}: ansible-core could not parse it as an inventory ({}); allowed: edgekit's "
                          "YAML list of boards, or an Ansible INI/YAML inventory".format(path, failed[0]))
    hosts = _select(inventory, limit, path, AnsibleError)
    variables = VariableManager(loader=loader, inventory=inventory)
    boards = []
    for host in hosts:
        all_vars = variables.get_vars(host=host, include_hostvars=False)
        values = _templated(Templar(loader=loader, variables=all_vars), all_vars, host.name, path)
        boards.append(board_from_vars(host.name, values, defaults, "{} host {}".format(path, host.name)))
    _check_distinct(boards, path)
    return boards


def _select(inventory: Any, limit: Optional[str], path: str, error_type: type) -> List[Any]:
    everyone = inventory.get_hosts("all")
    if not everyone:
        raise ConfigError("inventory {}: ansible-core found no hosts in it".format(path))
    if limit is None:
        return everyone
    with _captured_warnings():
        try:
            inventory.subset(limit)
            chosen = inventory.get_hosts("all")
        except error_type as exc:
            raise ConfigError("--limit {!r}: {}".format(limit, first_line(exc)))
    if not chosen:
        raise ConfigError("--limit {!r} matches no host in {} (groups: {})".format(
            limit, path, ", ".join(sorted(g for g in inventory.groups if g not in ("all", "ungrouped")))))
    return chosen


def _templated(templar: Any, all_vars: Dict[str, Any], host: str, path: str) -> Dict[str, Any]:
    """The variables edgekit reads, with Jinja2 expressions evaluated as Ansible would; plain Python values."""
    out: Dict[str, Any] = {}
    for name in sorted(all_vars):
        if name.startswith("edgekit_") and name not in EDGEKIT_VARS:
            raise ConfigError("{} host {}: unknown variable {}; allowed: {}".format(
                path, host, name, ", ".join(EDGEKIT_VARS)))
    for name in _USED_VARS:
        if all_vars.get(name) is None:
            continue
        try:
            value = templar.template(all_vars[name])
        except Exception as exc:  # noqa: BLE001 - ansible-core raises many kinds for an undefined or bad template
            raise ConfigError("{} host {}: cannot evaluate {}: {}".format(path, host, name, first_line(exc)))
        out[name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    """ansible-core hands back tagged str/int subclasses; edgekit keeps plain values in its frozen dataclasses."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    return value


def board_from_vars(name: str, v: Dict[str, Any], defaults: BoardDefaults, where: str) -> Board:
    """A Board from one host's (templated) Ansible variables; what they leave out comes from `defaults`."""
    address = v.get("ansible_host", v.get("ansible_ssh_host", name))
    user = v.get("ansible_user", v.get("ansible_ssh_user"))
    host = HostSpec(user=check_user(user if user is not None else _local_user(where), where + " ansible_user"),
                    host=check_hostname(address, where + " ansible_host"),
                    port=check_port(v.get("ansible_port", v.get("ansible_ssh_port", 22)), where + " ansible_port"))
    ssh = defaults.ssh
    key = v.get("ansible_ssh_private_key_file")
    if key is not None:
        if not isinstance(key, str):
            raise ConfigError("{} ansible_ssh_private_key_file: expected a path, got {!r}".format(where, key))
        ssh = make_ssh_options(key, ssh.known_hosts, ssh.accept_new_host_key, ssh.timeout_s,
                               where + " ansible_ssh_private_key_file: ")
    target = v.get("edgekit_target", defaults.target)
    if target is not None and not isinstance(target, str):
        raise ConfigError("{} edgekit_target: expected a target name, got {!r}".format(where, target))
    python = v.get("edgekit_remote_python")
    interp = v.get("ansible_python_interpreter")
    if python is None and isinstance(interp, str) and interp.startswith("/"):
        python = interp                       # "auto", "auto_silent" etc. are Ansible's discovery, not a path
    return Board(host=host, ssh=ssh, name=name, target=target,
                 remote_dir=check_remote_dir(v.get("edgekit_remote_dir", defaults.remote_dir),
                                             where + " edgekit_remote_dir"),
                 remote_python=check_remote_python(python if python is not None else defaults.remote_python,
                                                   where + " edgekit_remote_python"))


def _local_user(where: str) -> str:
    """Ansible's default remote user is the local login name; so is edgekit's."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise ConfigError("{}: no ansible_user and the local user name is unknown; set ansible_user".format(where))


def _check_distinct(boards: Sequence[Board], path: str) -> None:
    seen: Dict[Tuple[str, int, str], str] = {}
    for b in boards:
        key = (b.host.host, b.host.port, b.remote_dir)
        if key in seen:
            raise ConfigError("inventory {}: hosts {} and {} are the same board and directory ({}:{} {}); give one "
                              "of them another edgekit_remote_dir".format(path, seen[key], b.label, b.host.host,
                                                                        b.host.port, b.remote_dir))
        seen[key] = b.label
