"""The edgekit command line. Each command parses, calls one library function, prints.

One module per command (or family of commands); this is the one place they are registered on `main`. Nothing
below this package (convert, deploy, bench, runtime) imports from it. Heavy imports happen inside commands.
"""
from edgekit.cli.app import main
from edgekit.cli.commands import calibrate_cmd, demo_cmd, inspect_cmd, targets_cmd
from edgekit.cli.convert import convert_cmd
from edgekit.cli.flash import flash
from edgekit.cli.optimize import optimize_cmd
from edgekit.cli.profile import profile
from edgekit.cli.prune import prune_cmd
from edgekit.cli.run import bench_cmd, run_cmd
from edgekit.cli.signing import keygen, sign

COMMANDS = (targets_cmd, convert_cmd, calibrate_cmd, inspect_cmd, run_cmd, bench_cmd, demo_cmd, flash, prune_cmd,
            keygen, sign, profile, optimize_cmd)
for _command in COMMANDS:
    main.add_command(_command)

__all__ = ["main"]
