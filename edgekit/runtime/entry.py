"""How every board-side command ends (python -m edgekit.runtime, edgekit.runtime.smoke, edgekit.runtime.profile,
edgekit.bench): its result printed as one JSON object or as text; bad input as one line `edgekit: error: ...` on
stderr and exit code 2. Standard library only, Python 3.8 syntax.
"""
import json
import sys
from typing import Any, Callable, Dict

from edgekit.errors import EdgekitError


def finish(work: Callable[[], Dict[str, Any]], as_json: bool, text: Callable[[Dict[str, Any]], str]) -> int:
    """Run work(); print what it returns (JSON, or text(result)); the exit code."""
    try:
        result = work()
    except EdgekitError as exc:
        print("edgekit: error: {}".format(exc), file=sys.stderr)
        return 2
    print(json.dumps(result) if as_json else text(result))
    return 0
