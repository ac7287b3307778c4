"""Ansible action plugin `edgekit_release`: flash, roll back or list edgekit releases on a board.

Runs on the controller (where edgekit is installed beside ansible-core) and talks to the board only through
the task's connection: it copies the bundle's files with the connection plugin and runs edgekit's board agent
with the board's Python, so forks, serial, max_fail_percentage, --limit, --check, become-less SSH settings and
retries are Ansible's own. The logic lives in edgekit/deploy/ansible_task.py; this file adapts the connection.
Documentation: ../library/edgekit_release.py (ansible-doc) and ../README.md.
"""
import shlex

from ansible.plugins.action import ActionBase


class _ConnectionLink:
    """edgekit.deploy.ansible_task.Link over this task's connection plugin."""

    def __init__(self, action: ActionBase) -> None:
        self.action = action

    def run(self, argv, stdin, timeout_s):
        from edgekit.deploy.ssh import CommandResult

        command = " ".join(shlex.quote(a) for a in argv)
        res = self.action._low_level_execute_command(command, sudoable=False, in_data=stdin)
        return CommandResult(int(res.get("rc", 1)), res.get("stdout", ""), res.get("stderr", ""))

    def put(self, local, remote):
        self.action._connection.put_file(local, remote)

    def fetch(self, remote, local):
        self.action._connection.fetch_file(remote, local)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False          # files go straight into the release's staging dir, not Ansible's tmp dir
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        try:
            from edgekit.deploy.ansible_task import run_task
            from edgekit.errors import EdgekitError
        except ImportError as exc:
            result.update(failed=True, msg="edgekit is not importable by ansible-playbook's Python ({}); install "
                                           "edgekit in the same environment as ansible-core".format(exc))
            return result
        host = (task_vars or {}).get("inventory_hostname") or self._play_context.remote_addr
        try:
            result.update(run_task(str(host), dict(self._task.args), _ConnectionLink(self),
                                   check_mode=bool(self._task.check_mode)))
        except EdgekitError as exc:
            result.update(failed=True, changed=False, msg=str(exc))
        return result
