"""EarlyExitRunner: run a bundle's stages in order and stop each sample at its first confident exit.

numpy + a TFLite interpreter only; Python 3.8 syntax (this file runs on the board).
"""
import os
import threading
import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from edgekit.data import check_input_shape
from edgekit.errors import BundleError, DataError
from edgekit.manifest import Manifest, StageSpec, load_bundle
from edgekit.runtime.interpreter import Backend, load_backend
from edgekit.runtime.policy import exit_score


class Result(NamedTuple):
    outputs: np.ndarray          # (N, classes): the exit output each sample left with
    predictions: np.ndarray      # (N,) argmax of outputs
    exits: np.ndarray            # (N,) index of the exit each sample left at
    scores: np.ndarray           # (N,) exit-rule score at that exit
    stage_ms: List[float]        # wall time of each stage invocation, in stage order (only stages run)


class EarlyExitRunner:
    def __init__(self, bundle_dir: str, backend: Optional[str] = None, num_threads: Optional[int] = None,
                 verify: bool = True, use_delegates: bool = True) -> None:
        self.bundle_dir = bundle_dir
        self.manifest = load_bundle(bundle_dir, verify=verify)      # type: Manifest
        self.backend = load_backend(backend)                          # type: Backend
        rt = self.manifest.extra.get("runtime", {})
        self.num_threads = int(num_threads or rt.get("num_threads") or 1)
        self.delegate_status = []                                     # type: List[str]
        delegates = self._load_delegates(rt.get("delegates", [])) if use_delegates else []
        self._runners = []   # type: List[Any]
        for st in self.manifest.stages:
            self._runners.append(self._make_runner(st, delegates))
        self._lock = threading.Lock()

    # -- set-up -------------------------------------------------------------------------------------
    def _load_delegates(self, specs: Sequence[Dict[str, Any]]) -> List[Any]:
        loaded = []
        for spec in specs:
            lib, name = spec.get("library", ""), spec.get("name", "?")
            try:
                loaded.append(self.backend.load_delegate(lib, dict(spec.get("options") or {})))
                self.delegate_status.append("{}: loaded {}".format(name, lib))
            except (ValueError, OSError, RuntimeError) as exc:
                self.delegate_status.append("{}: {} not available ({}); running on the CPU".format(
                    name, lib, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        if not specs:
            self.delegate_status.append("no delegate in the profile; running on the CPU")
        return loaded

    def _make_runner(self, st: StageSpec, delegates: List[Any]) -> Any:
        path = os.path.join(self.bundle_dir, st.file)
        try:
            interp = self.backend.interpreter(model_path=path, num_threads=self.num_threads,
                                              experimental_delegates=delegates or None)
            runner = interp.get_signature_runner()
        except (ValueError, RuntimeError) as exc:
            raise BundleError("stage file {} cannot be loaded by {}: {}".format(path, self.backend.name, exc))
        have_in = set(runner.get_input_details())
        have_out = set(runner.get_output_details())
        want_in = set(t.name for t in st.inputs)
        want_out = set(t.name for t in st.outputs)
        if have_in != want_in or have_out != want_out:
            raise BundleError("stage file {} has signature inputs {} / outputs {}, the manifest says {} / {}".format(
                path, sorted(have_in), sorted(have_out), sorted(want_in), sorted(want_out)))
        return runner

    # -- running ------------------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.manifest.stages)

    def thresholds(self) -> List[float]:
        return [s.exit.threshold for s in self.manifest.stages]

    def prepare(self, x: Any) -> np.ndarray:
        """Validate a batch against the bundle input and apply the manifest's preprocessing."""
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.number):
            raise DataError("input has dtype {}; allowed: numeric arrays".format(arr.dtype))
        spec = self.manifest.input
        check_input_shape(arr, spec.shape, "input {!r}".format(spec.name))
        arr = arr.astype(np.float32, copy=False)
        pre = spec.preprocessing
        scale, offset = float(pre.get("scale", 1.0)), float(pre.get("offset", 0.0))
        if scale != 1.0 or offset != 0.0:
            arr = arr * np.float32(scale) + np.float32(offset)
        return arr

    def run(self, x: Any, full_depth: bool = False, thresholds: Optional[Sequence[float]] = None) -> Result:
        """Run a batch. A sample leaves at the first exit whose score reaches that exit's threshold;
        the last exit always answers. Exited samples are dropped from the batch that continues."""
        arr = self.prepare(x)
        n = arr.shape[0]
        ths = list(thresholds) if thresholds is not None else self.thresholds()
        stages = self.manifest.stages
        last = len(stages) - 1
        feed = {self.manifest.input.name: arr}                  # carried tensors of the active samples
        active = np.arange(n)
        outputs = None   # type: Optional[np.ndarray]
        exits = np.full(n, last, dtype=np.int64)
        scores = np.zeros(n, dtype=np.float64)
        stage_ms = []    # type: List[float]
        clock = time.perf_counter
        with self._lock:
            for k, st in enumerate(stages):
                t0 = clock()
                res = self._runners[k](**feed)
                stage_ms.append((clock() - t0) * 1000.0)
                out = res[st.exit.name]
                if outputs is None:
                    outputs = np.empty((n,) + out.shape[1:], dtype=np.float32)
                if k == last:
                    outputs[active] = out
                    scores[active] = exit_score(st.exit.rule, out)
                    break
                if full_depth:
                    feed = {t.name: res[t.name] for t in st.carried}
                    continue
                score = exit_score(st.exit.rule, out)
                done = score >= ths[k]
                if done.any():
                    idx = active[done]
                    outputs[idx], exits[idx], scores[idx] = out[done], k, score[done]
                    if done.all():
                        break
                    keep = ~done
                    active = active[keep]
                    feed = {t.name: res[t.name][keep] for t in st.carried}
                else:
                    feed = {t.name: res[t.name] for t in st.carried}
        preds = np.argmax(outputs, axis=-1) if outputs is not None and outputs.ndim == 2 else np.zeros(n, np.int64)
        return Result(outputs=outputs, predictions=preds, exits=exits, scores=scores, stage_ms=stage_ms)


def evaluate(runner: EarlyExitRunner, x: np.ndarray, y: Optional[np.ndarray] = None, full_depth: bool = False,
             batch_size: int = 64) -> Dict[str, Any]:
    """Predictions, exit per sample, accuracy (None without labels) and the exit histogram."""
    preds, exits = [], []
    for i in range(0, len(x), batch_size):
        r = runner.run(x[i:i + batch_size], full_depth=full_depth)
        preds.append(r.predictions)
        exits.append(r.exits)
    p = np.concatenate(preds)
    e = np.concatenate(exits)
    hist = np.bincount(e, minlength=runner.num_stages)
    acc = None if y is None else float(np.mean(p == np.asarray(y)))
    return {"predictions": p.tolist(), "exits": e.tolist(), "accuracy": acc, "exit_histogram": hist.tolist()}
