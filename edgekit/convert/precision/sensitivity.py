"""Measured information loss: quantize one op (or one whole stage) at a rung, run it on calibration samples,
compare with float at the op's own output and at every exit downstream (the later stages run in float).

Loss = mean KL divergence (nats) between the softmax of the float and the quantized exit outputs, the largest
over the exits the op feeds; SQNR (dB) at the same exits (the smallest) and at the op's output (on the
first PROBE_SAMPLES samples: reading an intermediate tensor needs a slow debug interpreter). Results are
cached on disk, keyed by the float stage, the samples and the rung (EDGEKIT_CACHE_DIR, default
~/.cache/edgekit/precision).
"""
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from edgekit.convert.precision.recipes import quantize_ops
from edgekit.runtime.interpreter import load_backend

CACHE_VERSION = 2
PROBE_SAMPLES = 16         # samples for the SQNR at an op's own output (a debug interpreter, slow)
SQNR_CAP = 150.0


@dataclass(frozen=True)
class Loss:
    kl: float                       # nats, mean over samples, max over the exits affected
    sqnr_db: float                  # dB, min over the exits affected
    layer_sqnr_db: Optional[float]  # dB at the op's own output (None for whole stages)

    def to_dict(self) -> Dict:
        return {"kl": self.kl, "sqnr_db": self.sqnr_db, "layer_sqnr_db": self.layer_sqnr_db}


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise <= signal * 10 ** (-SQNR_CAP / 10.0):
        return SQNR_CAP
    return float(10.0 * np.log10(max(signal, 1e-30) / noise))


def kl_nats(ref_logits: np.ndarray, out_logits: np.ndarray) -> float:
    def logsoftmax(z):
        z = np.asarray(z, np.float64).reshape(len(z), -1)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    lp, lq = logsoftmax(ref_logits), logsoftmax(out_logits)
    return float(max(0.0, np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1))))


class Chain:
    """Float TFLite stages on the sensitivity samples: reference exits and each stage's float inputs."""

    def __init__(self, stages: Sequence, float_blobs: Sequence[bytes], x: np.ndarray, input_name: str) -> None:
        self.stages = stages
        self.backend = load_backend()
        self.runners = [self.backend.interpreter(model_content=b, num_threads=2).get_signature_runner()
                        for b in float_blobs]
        env = {input_name: x.astype(np.float32)}
        self.inputs: List[Dict[str, np.ndarray]] = []
        self.exits: List[np.ndarray] = []
        for st, run in zip(stages, self.runners):
            feed = {n: env[n] for n in st.input_names}
            self.inputs.append(feed)
            res = run(**feed)
            env.update({k: np.asarray(v) for k, v in res.items()})
            self.exits.append(np.asarray(res[st.exit_name]))
        self.env = env
        self.float_blobs = list(float_blobs)
        self._float_interp: Dict[int, object] = {}

    def float_tensor(self, k: int, name: str) -> Optional[np.ndarray]:
        """A tensor of float stage k on the samples (one preserve-all-tensors run per stage)."""
        if k not in self._float_interp:
            interp = _probing_interpreter(self.backend, self.float_blobs[k])
            interp.get_signature_runner()(**_head(self.inputs[k]))
            self._float_interp[k] = interp
        interp = self._float_interp[k]
        detail = _tensor_by_name(interp, name)
        return None if detail is None else _read(interp, detail)

    def downstream(self, k: int, outputs: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        """Exit outputs of stages k.. when stage k produced `outputs` (later stages float)."""
        env = dict(self.env)
        env.update(outputs)
        exits = [np.asarray(outputs[self.stages[k].exit_name])]
        for st, run in zip(self.stages[k + 1:], self.runners[k + 1:]):
            res = run(**{n: env[n] for n in st.input_names})
            env.update({n: np.asarray(v) for n, v in res.items()})
            exits.append(np.asarray(res[st.exit_name]))
        return exits

    def loss(self, k: int, outputs: Mapping[str, np.ndarray], layer: Optional[float] = None) -> Loss:
        exits = self.downstream(k, outputs)
        refs = self.exits[k:]
        return Loss(kl=max(kl_nats(r, e) for r, e in zip(refs, exits)),
                    sqnr_db=min(sqnr_db(r, e) for r, e in zip(refs, exits)), layer_sqnr_db=layer)


def _head(feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {n: v[:PROBE_SAMPLES] for n, v in feed.items()}


def _probing_interpreter(backend, blob: bytes):
    """An interpreter that keeps every intermediate tensor (read back by name); its debug-only warning is
    expected here and not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
        return backend.interpreter(model_content=blob, num_threads=2, experimental_preserve_all_tensors=True)


def _tensor_by_name(interp, name: str):
    for d in interp.get_tensor_details():
        if d["name"] == name:
            return d
    return None


def _read(interp, detail) -> np.ndarray:
    v = interp.get_tensor(detail["index"]).astype(np.float64)
    scale, zero = detail.get("quantization", (0.0, 0))
    return (v - zero) * scale if scale else v


def run_stage(backend, blob: bytes, feed: Mapping[str, np.ndarray], probe: Optional[str] = None):
    """Stage outputs (by name) and, when `probe` names a tensor, its dequantized value."""
    interp = _probing_interpreter(backend, blob) if probe else backend.interpreter(model_content=blob, num_threads=2)
    sig = interp.get_signature_runner()
    out = {k: np.asarray(v) for k, v in sig(**feed).items()}
    detail = _tensor_by_name(interp, probe) if probe else None
    return out, (None if detail is None else _read(interp, detail))


class Cache:
    """One JSON file per (float stage, samples): entries 'scope|rung' -> Loss dict."""

    def __init__(self, float_blob: bytes, feeds: Sequence[Mapping[str, np.ndarray]], directory: Optional[str] = None):
        h = hashlib.sha256(float_blob)
        for feed in feeds:
            for k in sorted(feed):
                h.update(k.encode("utf-8"))
                h.update(np.ascontiguousarray(feed[k], np.float32).tobytes())
        h.update(str(CACHE_VERSION).encode("utf-8"))
        self.directory = directory or os.environ.get("EDGEKIT_CACHE_DIR") or os.path.join(
            os.path.expanduser("~"), ".cache", "edgekit", "precision")
        self.path = os.path.join(self.directory, h.hexdigest()[:32] + ".json")
        self.entries: Dict[str, Dict] = {}
        self.hits = 0
        try:
            with open(self.path, "r", encoding="utf-8") as f:
                self.entries = json.load(f)
        except (OSError, ValueError):
            self.entries = {}

    def get(self, scope: str, rung: str) -> Optional[Loss]:
        d = self.entries.get(scope + "|" + rung)
        if d is None:
            return None
        self.hits += 1
        return Loss(kl=float(d["kl"]), sqnr_db=float(d["sqnr_db"]), layer_sqnr_db=d.get("layer_sqnr_db"))

    def put(self, scope: str, rung: str, loss: Loss) -> None:
        self.entries[scope + "|" + rung] = loss.to_dict()

    def save(self) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.entries, f)
            os.replace(tmp, self.path)
        except OSError:
            pass                   # a cache that cannot be written only costs time


def layer_loss(chain: Chain, k: int, float_blob: bytes, op, rung: str, qsvs: Dict, cache: Cache) -> Loss:
    """Quantize only `op` of stage k at `rung` (ai-edge-quantizer recipe) and measure."""
    hit = cache.get(op.scope, rung)
    if hit is not None:
        return hit

    blob = quantize_ops(float_blob, {op.scope: rung}, qsvs=qsvs)
    out, _ = run_stage(chain.backend, blob, chain.inputs[k])
    _, probe = run_stage(chain.backend, blob, _head(chain.inputs[k]), op.scope)
    ref = chain.float_tensor(k, op.scope)
    layer = None if probe is None or ref is None or probe.shape != ref.shape else sqnr_db(ref, probe)
    loss = chain.loss(k, out, layer)
    cache.put(op.scope, rung, loss)
    return loss


def stage_loss(chain: Chain, k: int, blob: bytes) -> Loss:
    out, _ = run_stage(chain.backend, blob, chain.inputs[k])
    return chain.loss(k, out)
