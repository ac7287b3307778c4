"""Flash bundles to boards over SSH (verified, atomic, reversible), run them there, and do it for a fleet.

paramiko is imported only when a connection is made.
"""
from edgekit.deploy.errors import BoardMismatchError, DeployError, HostKeyError, VerifyError
from edgekit.deploy.fleet import FleetReport, flash_fleet, list_fleet, rollback_fleet
from edgekit.deploy.hosts import Board, BoardDefaults, HostSpec, SshOptions, load_inventory, parse_host
from edgekit.deploy.releases import FlashResult, ReleaseList, SwitchResult, flash, list_releases, rollback
from edgekit.deploy.remote import run_remote

__all__ = ["Board", "BoardDefaults", "BoardMismatchError", "DeployError", "FlashResult", "FleetReport", "HostKeyError",
           "HostSpec", "ReleaseList", "SshOptions", "SwitchResult", "VerifyError", "flash", "flash_fleet",
           "list_fleet", "list_releases", "load_inventory", "parse_host", "rollback", "rollback_fleet", "run_remote"]
