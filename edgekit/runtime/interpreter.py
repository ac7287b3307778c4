"""Pick the TFLite interpreter: ai_edge_litert, else tflite_runtime, else tensorflow.lite.

Set EDGEKIT_INTERPRETER to one of BACKENDS to force a choice. No TensorFlow import unless it is the
only interpreter present (or asked for).
"""
import importlib
import os
from typing import Any, Callable, List, NamedTuple, Optional

from edgekit.errors import EdgekitError

BACKENDS = ("ai_edge_litert", "tflite_runtime", "tensorflow")


class Backend(NamedTuple):
    name: str
    version: str
    interpreter: Callable[..., Any]
    load_delegate: Callable[..., Any]


def _import(name: str) -> Backend:
    if name == "tensorflow":
        tf = importlib.import_module("tensorflow")
        return Backend(name, tf.__version__, tf.lite.Interpreter, tf.lite.experimental.load_delegate)
    mod = importlib.import_module(name + ".interpreter")
    try:
        version = importlib.import_module("importlib.metadata").version(name.replace("_", "-"))
    except Exception:  # noqa: BLE001 - version is informational only
        version = "unknown"
    return Backend(name, version, mod.Interpreter, mod.load_delegate)


def available_backends() -> List[str]:
    """Backends importable here, in preference order (imports each candidate once)."""
    found = []
    for name in BACKENDS:
        try:
            if name == "tensorflow":
                if importlib.util.find_spec("tensorflow") is None:
                    continue
            else:
                importlib.import_module(name + ".interpreter")
            found.append(name)
        except ImportError:
            continue
    return found


def load_backend(name: Optional[str] = None) -> Backend:
    name = name or os.environ.get("EDGEKIT_INTERPRETER") or None
    if name is not None:
        if name not in BACKENDS:
            raise EdgekitError("unknown interpreter {!r}; allowed: {}".format(name, ", ".join(BACKENDS)))
        try:
            return _import(name)
        except ImportError as exc:
            raise EdgekitError("interpreter {!r} is not installed here ({})".format(name, exc))
    for cand in BACKENDS:
        try:
            return _import(cand)
        except ImportError:
            continue
    raise EdgekitError("no TFLite interpreter found; install ai-edge-litert (or tflite-runtime on armv7l/Python<=3.11)")
