"""Measure converted stages in memory with the TFLite interpreter: parity, accuracy per exit, latency."""
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgekit.runtime.interpreter import load_backend


def _runners(blobs: Sequence[bytes], threads: int, backend_name: Optional[str] = None) -> List[Any]:
    backend = load_backend(backend_name)
    return [backend.interpreter(model_content=b, num_threads=threads).get_signature_runner() for b in blobs]


def full_depth_outputs(blobs: Sequence[bytes], stages: Sequence[Any], x: np.ndarray, input_name: str,
                       threads: int = 1) -> List[np.ndarray]:
    """Every exit's output on x, running all stages (stages: split.Stage, for names)."""
    runners = _runners(blobs, threads)
    env = {input_name: x.astype(np.float32)}
    exits = []
    for st, run in zip(stages, runners):
        res = run(**{n: env[n] for n in st.input_names})
        env.update({k: np.asarray(v) for k, v in res.items()})
        exits.append(np.asarray(res[st.exit_name]))
    return exits


def stage_latency_ms(blobs: Sequence[bytes], stages: Sequence[Any], x: np.ndarray, input_name: str,
                     threads: int = 1, repeats: int = 30) -> List[float]:
    """Median batch-1 latency of each stage on this machine."""
    runners = _runners(blobs, threads)
    env = {input_name: x[:1].astype(np.float32)}
    out = []
    for st, run in zip(stages, runners):
        feed = {n: env[n] for n in st.input_names}
        res = run(**feed)                                    # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(**feed)
            times.append((time.perf_counter() - t0) * 1000.0)
        env.update({k: np.asarray(v) for k, v in res.items()})
        out.append(float(np.median(times)))
    return out


def exit_accuracies(outputs: Sequence[np.ndarray], y: Optional[np.ndarray]) -> List[Optional[float]]:
    if y is None:
        return [None for _ in outputs]
    return [float(np.mean(np.argmax(o, axis=-1) == y)) for o in outputs]


def max_abs_error(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> List[float]:
    return [float(np.max(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)))) for p, q in zip(a, b)]


def interleaved_ms(blobs: Sequence[bytes], feed: Dict[str, np.ndarray], threads: int = 1,
                   backend: Optional[str] = None) -> List[float]:
    """Median batch-1 milliseconds of each blob (same signature) on feed, under the precision decisions' protocol
    (convert/precision/timing.py: warmed up, interleaved in a new random order each round, until the medians
    settle). backend: the interpreter package (default: the first found)."""
    from edgekit.convert.precision.timing import measure_candidates

    runners = _runners(blobs, threads, backend)
    one = {n: v[:1].astype(np.float32) for n, v in feed.items()}
    costs = measure_candidates({i: (lambda run=run: run(**one)) for i, run in enumerate(runners)})
    return [costs[i].median_ms for i in range(len(runners))]
