"""EarlyExitRunner: run a bundle's stages in order and stop each sample at its first confident exit.

numpy + a TFLite interpreter only; Python 3.8 syntax (this file runs on the board).
"""
import os
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from edgekit.errors import BundleError, DataError, first_line
from edgekit.manifest import Manifest, StageSpec
from edgekit.runtime.cost_protocol import resolve_stage_threads
from edgekit.runtime.costs import StageCosts
from edgekit.runtime.budget import run_with_budget
from edgekit.runtime.controller import load_controller
from edgekit.runtime.guard import check_batch, load_checked, resolve_max_batch
from edgekit.runtime.interpreter import Backend, StageCall, load_backend
from edgekit.runtime.policy import QUICK_DECIDE, exit_rule
from edgekit.runtime.result import Batch, Result


_F32 = np.dtype(np.float32)       # numpy's one float32 dtype: an identity test is the cheapest check
_F64 = np.dtype(np.float64)


class Step(NamedTuple):
    """How run() calls one stage, by output index."""
    call: StageCall
    fetch: Tuple[int, ...]           # the carried outputs (in the next stage's input order), exit, score if separate
    fetch_carried: Tuple[int, ...]   # at full depth: the carried outputs only (on the last stage: fetch)
    carried: int                     # how many carried outputs lead fetch
    scored: bool                     # a separate score output follows the exit output (rule "learned")
    rule: Callable[[np.ndarray], np.ndarray]
    quick: Optional[Callable[[np.ndarray, float], Optional[bool]]]   # the rule's one-sample decision, if any


class EarlyExitRunner:
    def __init__(self, bundle_dir: str, backend: Optional[str] = None, num_threads: Optional[int] = None,
                 verify: bool = True, use_delegates: bool = True, trusted_keys: Optional[Sequence[str]] = None,
                 require_signature: bool = False, max_batch: Optional[int] = None) -> None:
        """trusted_keys / require_signature: refuse bundles not signed by a trusted key (edgekit/signing.py; the
        device's own setting, edgekit/device_keys.py, applies in any case).
        max_batch: the most samples one run() accepts (default: the manifest's runtime.max_batch, else 1024).
        Every check on the bundle (runtime/guard.py) happens before the first interpreter is created."""
        self.bundle_dir = bundle_dir
        self.manifest, blobs, self.signed_by = load_checked(bundle_dir, verify, trusted_keys, require_signature)
        self._set_up(blobs, backend, num_threads, use_delegates, max_batch)

    @classmethod
    def in_memory(cls, manifest: Manifest, blobs: Sequence[bytes], backend: Optional[str] = None,
                  num_threads: Optional[int] = None) -> "EarlyExitRunner":
        """A runner over stages the caller built and holds (the converter fits thresholds on them before it writes
        the bundle): nothing is read from disk, nothing is verified."""
        self = cls.__new__(cls)
        self.bundle_dir, self.manifest, self.signed_by = "(in memory)", manifest, None
        self._set_up(list(blobs), backend, num_threads, True, None)
        return self

    def _set_up(self, blobs: List[bytes], backend: Optional[str], num_threads: Optional[int], use_delegates: bool,
                max_batch: Optional[int]) -> None:
        self.backend = load_backend(backend)                          # type: Backend
        rt = self.manifest.extra.get("runtime", {})
        self.max_batch = resolve_max_batch(max_batch, rt)
        self.stage_threads = resolve_stage_threads(rt, len(self.manifest.stages), num_threads)
        self.num_threads = max(self.stage_threads)
        self.delegate_status = []                                     # type: List[str]
        delegates = self._load_delegates(rt.get("delegates", [])) if use_delegates else []
        self._steps = self._make_steps([self._make_runner(st, blob, delegates, t)
                                        for st, blob, t in zip(self.manifest.stages, blobs, self.stage_threads)])
        self.costs = StageCosts([st.latency_ms for st in self.manifest.stages])
        self._manifest_ths = [s.exit.threshold for s in self.manifest.stages]   # the manifest is frozen
        self._locks = [threading.Lock() for _ in self.manifest.stages]   # one interpreter = one caller at a time
        self._sample_shape = tuple(self.manifest.input.shape[1:])
        pre = self.manifest.input.preprocessing
        self._scale, self._offset = float(pre.get("scale", 1.0)), float(pre.get("offset", 0.0))
        self._plain = (self._scale, self._offset) == (1.0, 0.0)
        src = pre.get("source_shape")      # an ONNX model's own layout (e.g. NCHW), accepted and transposed once
        self._source = (tuple(src[1:]), tuple(pre["from_source"])) if src and pre.get("from_source") else None

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
                    name, lib, first_line(exc)))
        if not specs:
            self.delegate_status.append("no delegate in the profile; running on the CPU")
        return loaded

    def _make_runner(self, st: StageSpec, verified: bytes, delegates: List[Any], threads: int) -> StageCall:
        """The interpreter is built from the bytes whose sha256 was checked (the path is never opened again:
        a file rewritten after the check cannot be what runs); it keeps a reference to them."""
        path = os.path.join(self.bundle_dir, st.file)
        try:
            interp = self.backend.interpreter(model_content=verified, num_threads=threads,
                                              experimental_delegates=delegates or None)
            call = StageCall(interp.get_signature_runner())
        except (ValueError, RuntimeError) as exc:
            raise BundleError("stage file {} cannot be loaded by {}: {}".format(path, self.backend.name, exc))
        have_in, have_out = set(call.input_details), set(call.output_details)
        want_in = set(t.name for t in st.inputs)
        want_out = set(t.name for t in st.outputs)
        if have_in != want_in or have_out != want_out:
            raise BundleError("stage file {} has signature inputs {} / outputs {}, the manifest says {} / {}".format(
                path, sorted(have_in), sorted(have_out), sorted(want_in), sorted(want_out)))
        return call

    def _make_steps(self, calls: List[StageCall]) -> List[Step]:
        stages = self.manifest.stages
        if list(calls[0].input_names) != [self.manifest.input.name]:
            raise BundleError("stage 0 ({}) takes {}; the first stage takes the bundle input {!r} alone".format(
                stages[0].file, list(calls[0].input_names), self.manifest.input.name))
        steps = []
        for k, (call, st) in enumerate(zip(calls, stages)):
            nxt = list(calls[k + 1].input_names) if k + 1 < len(stages) else []
            if sorted(nxt) != sorted(t.name for t in st.carried):
                raise BundleError("stage {} ({}) takes {}, stage {} hands on {}; a stage takes exactly what the "
                                  "stage before it carries".format(k + 1, stages[k + 1].file, sorted(nxt), k,
                                                                   sorted(t.name for t in st.carried)))
            fetch = call.indices(nxt + [st.exit.name] + ([st.exit.score] if st.exit.score else []))
            steps.append(Step(call, fetch, fetch[:len(nxt)] if nxt else fetch, len(nxt), bool(st.exit.score),
                              exit_rule(st.exit.rule), None if st.exit.score else QUICK_DECIDE.get(st.exit.rule)))
        return steps

    def invoke_stage(self, k: int, values: List[np.ndarray], fetch: Sequence[int]) -> Tuple[List[np.ndarray], float]:
        """Run stage k on its inputs (in its input order) under its lock: (the fetched outputs, milliseconds).
        run() does the same inline."""
        with self._locks[k]:
            t0 = time.perf_counter()
            try:
                res = self._steps[k].call.invoke(values, fetch)
            except (RuntimeError, ValueError) as exc:
                raise self.stage_failed(k, exc)
            return res, (time.perf_counter() - t0) * 1000.0

    def chain(self, x: Any) -> Iterator[Tuple[int, Step, List[np.ndarray], List[np.ndarray]]]:
        """Every stage at full depth on the batch x, in order: (k, its step, its inputs, its fetched outputs: the
        carried ones first, then the exit, then the score when separate). The stages' one chaining loop besides
        run() and the budget mode, which decide per sample where to stop."""
        values = [self.prepare(x)]
        for k, step in enumerate(self._steps):
            res, _ = self.invoke_stage(k, values, step.fetch)
            yield k, step, values, res
            values = res[:step.carried]

    def stage_failed(self, k: int, exc: BaseException) -> BundleError:
        """The interpreter refused a validated batch: the stage file is at fault, not the caller's data."""
        return BundleError("stage {} ({}) failed in {}: {}".format(
            k, self.manifest.stages[k].file, self.backend.name, first_line(exc)))

    # -- running ------------------------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.manifest.stages)

    def thresholds(self) -> List[float]:
        return list(self._manifest_ths)

    def _thresholds(self, given: Optional[Sequence[float]]) -> Sequence[float]:
        if given is None:
            return self._manifest_ths     # read only below
        try:
            ths = [float(t) for t in given]
        except (TypeError, ValueError):
            raise DataError("thresholds {!r}: expected a list of numbers, one per exit".format(given))
        if len(ths) not in (self.num_stages - 1, self.num_stages):
            raise DataError("{} thresholds given; this bundle has {} exits (the last one always answers)".format(
                len(ths), self.num_stages))
        return ths + [0.0] * (self.num_stages - len(ths))

    def prepare(self, x: Any) -> np.ndarray:
        """Validate a batch against the bundle input and apply the manifest's preprocessing. DataError for a wrong
        dtype or shape, an empty batch, more than max_batch samples, or a NaN/Inf value (guard.check_batch)."""
        if self._plain and type(x) is np.ndarray and x.dtype is _F32 and x.shape[1:] == self._sample_shape \
                and 0 < x.shape[0] <= self.max_batch:
            v = float(np.vdot(x, x))        # the common case: one numpy call, finite unless x holds NaN/Inf
            if v - v == 0.0:                # (or its squares overflow; the slow path then looks at each value)
                return x
        return check_batch(x, self.manifest.input, self.max_batch, self._scale, self._offset, self._source)

    def run(self, x: Any, full_depth: bool = False, thresholds: Optional[Sequence[float]] = None,
            budget_ms: Optional[float] = None, anytime: bool = False) -> Result:
        """Run a batch. A sample leaves at the first exit whose score reaches that exit's threshold;
        the last exit always answers. Exited samples are dropped from the batch that continues.

        budget_ms: run a stage only while it is predicted to fit in what is left of the budget (stage
        costs learnt online); samples still running when the budget stops them answer from the deepest
        exit reached. anytime (with budget_ms): start stages while time is left and return the best
        answer so far when the deadline passes, even in the middle of a stage."""
        if budget_ms is not None or anytime:
            return run_with_budget(self, self.prepare(x), self._thresholds(thresholds), budget_ms, anytime,
                                   full_depth)
        values = [self.prepare(x)]   # type: List[np.ndarray]  # what the next stage takes, for the samples running
        n = values[0].shape[0]
        ths = self._manifest_ths if thresholds is None else self._thresholds(thresholds)
        steps, locks, clock = self._steps, self._locks, time.perf_counter
        last = len(steps) - 1
        batch = None     # type: Optional[Batch]  # where samples left, once some (not all) have
        stage_ms = []    # type: List[float]
        for k, (call, fetch, fetch_carried, nc, scored, rule, quick) in enumerate(steps):
            with locks[k]:                  # invoke_stage(), inline: this loop is the runtime's hot path
                t0 = clock()
                try:
                    res = call.invoke(values, fetch_carried if full_depth else fetch)
                except (RuntimeError, ValueError) as exc:
                    raise self.stage_failed(k, exc)
                stage_ms.append((clock() - t0) * 1000.0)
            if k == last:
                out = res[nc]
                if batch is None:
                    return Result(out, stage_ms, None, rule(res[nc + 1]) if scored else None, rule, last)
                batch.finish(out, rule(res[nc + 1] if scored else out))
                break
            if full_depth:
                values = res
                continue
            out = res[nc]
            if n == 1:
                leaves, score = _one_leaves(out, res[nc + 1] if scored else out, rule, quick, ths[k])
                if leaves:
                    return Result(out, stage_ms, None, score, rule, k)
                values = res[:nc]
                continue
            score = rule(res[nc + 1] if scored else out)
            done = score >= ths[k]
            hits = np.count_nonzero(done)
            if hits == 0:
                values = res[:nc]
                continue
            if batch is None:
                if hits == n:                    # every sample leaves here: no bookkeeping
                    return Result(out, stage_ms, None, score, rule, k)
                batch = Batch(n, out, last)
            if hits == len(done):
                batch.leave(k, out, score, done)
                break
            keep = batch.leave(k, out, score, done)
            values = [c[keep] for c in res[:nc]]
        return Result(batch.outputs, stage_ms, batch.exits, batch.scores, steps[-1].rule, last)


def _one_leaves(out: np.ndarray, scored: np.ndarray, rule: Callable[[np.ndarray], np.ndarray],
                quick: Optional[Callable[[np.ndarray, float], Optional[bool]]], th: float
                ) -> Tuple[bool, Optional[np.ndarray]]:
    """Batch 1: whether the sample leaves at this exit, and its score (None: derived on first use). The rule's
    quick decision on Python floats when it has one and is sure; else the score compared as the batch path
    compares it (an array against a Python float compares in the array's dtype), on Python floats."""
    if quick is not None:
        leaves = quick(out, th)
        if leaves is not None:
            return leaves, None
    score = rule(scored)
    if score.dtype is not _F64:
        th = float(score.dtype.type(th))
    return score.item(0) >= th, score


def exit_outputs(runner: EarlyExitRunner, x: np.ndarray, batch_size: int = 64) -> List[List[np.ndarray]]:
    """Run every stage on every sample: per exit, [exit output, the output its rule scores] (the two are the
    same tensor except for a learned score). Used to fit thresholds."""
    per_exit = [[[], []] for _ in runner.manifest.stages]   # type: List[List[List[np.ndarray]]]
    for i in range(0, len(x), batch_size):
        for k, step, _, res in runner.chain(x[i:i + batch_size]):
            per_exit[k][0].append(res[step.carried])
            per_exit[k][1].append(res[step.carried + 1 if step.scored else step.carried])
    return [[np.concatenate(o), np.concatenate(s)] for o, s in per_exit]


def evaluate(runner: EarlyExitRunner, x: np.ndarray, y: Optional[np.ndarray] = None, full_depth: bool = False,
             batch_size: int = 64, budget_ms: Optional[float] = None, anytime: bool = False,
             target_ms: Optional[float] = None) -> Dict[str, Any]:
    """Predictions, exit per sample, accuracy (None without labels) and the exit histogram.
    With a budget, samples run one at a time (the budget is per call). With target_ms, a LoadController
    (runtime/controller.py) moves the early exits' thresholds while the samples run, one at a time, to hold that
    mean latency per sample; the result carries its final state under "controller"."""
    budgeted = budget_ms is not None or anytime
    ctl = load_controller(runner, target_ms, full_depth, budgeted)
    batch_size = 1 if budgeted or ctl is not None else max(1, min(batch_size, runner.max_batch))
    preds, exits = [], []
    stopped = 0
    for i in range(0, len(x), batch_size):
        if ctl is not None:
            r = ctl.run(x[i:i + batch_size])
        else:
            r = runner.run(x[i:i + batch_size], full_depth=full_depth, budget_ms=budget_ms, anytime=anytime)
        preds.append(r.predictions)
        exits.append(r.exits)
        stopped += getattr(r, "stopped", 0)
    p = np.concatenate(preds)
    e = np.concatenate(exits)
    hist = np.bincount(e, minlength=runner.num_stages)
    acc = None if y is None else float(np.mean(p == np.asarray(y)))
    out = {"predictions": p.tolist(), "exits": e.tolist(), "accuracy": acc, "exit_histogram": hist.tolist()}
    if budgeted:
        out["budget_stopped"] = stopped     # samples the budget stopped before their exit's threshold
    if ctl is not None:
        out["controller"] = ctl.state()
    return out
