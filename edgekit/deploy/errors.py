"""Deploy failures. Each is an EdgekitError, so the CLI prints one line and exits with code 2.

(edgekit/errors.py is shared; these live here until they are moved beside the other subclasses.)
"""
from edgekit.errors import EdgekitError


class DeployError(EdgekitError):
    """Flashing, probing or running on a board failed; the message names the host."""


class HostKeyError(DeployError):
    """The board's host key is unknown (and not accepted) or differs from the recorded one."""


class BoardMismatchError(DeployError):
    """The board cannot run the bundle: wrong arch, no interpreter, old Python, too little disk."""


class VerifyError(DeployError):
    """A file on the board does not have the sha256 the bundle lists."""
