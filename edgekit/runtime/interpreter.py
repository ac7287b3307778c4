"""Pick the TFLite interpreter: ai_edge_litert, else tflite_runtime, else tensorflow.lite.

Set EDGEKIT_INTERPRETER to one of BACKENDS to force a choice. No TensorFlow import unless it is the
only interpreter present (or asked for).
"""
import importlib
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

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


class StageCall:
    """Call one stage's signature: set the inputs, invoke, copy the outputs out.

    The interpreters' signature runner resizes every input and re-plans the tensors on each call, and copies out
    every output; this makes the same calls on the same interpreter wrapper (ai_edge_litert, tflite_runtime and
    tensorflow.lite share it) but re-plans only when an input's shape changes (a new batch size) and copies out
    only the outputs asked for: most of the per-call overhead of a small stage. A backend without that wrapper
    goes through its signature runner. Not thread-safe (nor is the interpreter): the caller holds the stage's
    lock."""

    def __init__(self, runner: Any) -> None:
        self.input_details = runner.get_input_details()     # name -> details (dtype, quantization, ...)
        self.output_details = runner.get_output_details()
        self.input_names = tuple(self.input_details)        # the order invoke() takes its values in
        self._runner = runner
        self._in = tuple(int(d["index"]) for d in self.input_details.values())
        self._out_index = {n: int(d["index"]) for n, d in self.output_details.items()}
        self._out_name = {i: n for n, i in self._out_index.items()}
        self._all = tuple(self._out_index.values())
        self._shapes = {}   # type: Dict[int, Any]
        self._wrapper = getattr(runner, "_interpreter_wrapper", None)
        self._subgraph = getattr(runner, "_subgraph_index", None)
        if not isinstance(self._subgraph, int) or not all(
                hasattr(self._wrapper, m) for m in ("ResizeInputTensor", "AllocateTensors", "SetTensor", "Invoke",
                                                     "GetTensor")):
            self._wrapper = None

    def indices(self, names: Sequence[str]) -> Tuple[int, ...]:
        """What invoke() takes as `fetch` for these output names."""
        return tuple(self._out_index[n] for n in names)

    def __call__(self, **feed: Any) -> Dict[str, Any]:
        """Like the signature runner: inputs by name in, every output by name out."""
        try:
            values = [feed[n] for n in self.input_names]
        except KeyError as exc:
            raise ValueError("no input {} given; expected {}".format(exc, list(self.input_names)))
        if len(feed) != len(values):
            raise ValueError("expected inputs {}, got {}".format(list(self.input_names), sorted(feed)))
        return dict(zip(self._out_index, self.invoke(values, self._all)))

    def invoke(self, values: Sequence[Any], fetch: Sequence[int]) -> List[Any]:
        """values: one array per input, in input_names order; fetch: output indices (indices()) to copy out."""
        w, sub, shapes = self._wrapper, self._subgraph, self._shapes
        if w is None:
            res = self._runner(**dict(zip(self.input_names, values)))
            return [res[self._out_name[i]] for i in fetch]
        ins = self._in
        if len(values) != len(ins):
            raise ValueError("expected {} inputs {}, got {}".format(len(ins), list(self.input_names), len(values)))
        if len(ins) == 1:                # the common case, kept short: this runs between two interpreter calls
            i, v = ins[0], values[0]
            if v.shape != shapes.get(i):
                self._replan(values)
            w.SetTensor(i, v, sub)
        else:
            for i, v in zip(ins, values):
                if v.shape != shapes.get(i):
                    self._replan(values)
                    break
            for i, v in zip(ins, values):
                w.SetTensor(i, v, sub)
        w.Invoke(sub)
        if len(fetch) == 1:
            return [w.GetTensor(fetch[0], sub)]
        if len(fetch) == 2:             # carried + exit, the most common stage
            return [w.GetTensor(fetch[0], sub), w.GetTensor(fetch[1], sub)]
        return [w.GetTensor(i, sub) for i in fetch]

    def _replan(self, values: Sequence[Any]) -> None:
        w, sub, shapes = self._wrapper, self._subgraph, self._shapes
        shapes.clear()                  # a failure below leaves the planning to the next call
        for i, v in zip(self._in, values):
            w.ResizeInputTensor(i, np.array(v.shape, dtype=np.int32), False, sub)
        w.AllocateTensors(sub)
        shapes.update((i, v.shape) for i, v in zip(self._in, values))
