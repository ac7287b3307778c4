"""Measure converted stages in memory with the TFLite interpreter: parity, accuracy per exit, stage costs."""
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgekit.runtime.cost_protocol import (CONVERTING_MACHINE, CostProtocol, costs_section, measure_candidates,
                                           stage_cost_table, thread_candidates)
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


def stage_feeds(blobs: Sequence[bytes], stages: Sequence[Any], x: np.ndarray, input_name: str) -> List[Dict]:
    """Each stage's batch-1 inputs by name, from running the chain on the first sample."""
    runners = _runners(blobs, 1)
    env = {input_name: x[:1].astype(np.float32)}
    feeds = []
    for st, run in zip(stages, runners):
        feeds.append({n: env[n] for n in st.input_names})
        env.update({k: np.asarray(v) for k, v in run(**feeds[-1]).items()})
    return feeds


def stage_costs(blobs: Sequence[bytes], stages: Sequence[Any], x: np.ndarray, input_name: str,
                max_threads: int, protocol: Optional[CostProtocol] = None) -> Dict[str, Any]:
    """Batch-1 cost of each stage at each thread count 1..min(max_threads, cores) on this machine, under the
    shared protocol (runtime/cost_protocol.py): the manifest's `costs` record, labelled converting-machine."""
    proto = protocol or CostProtocol()
    table = stage_cost_table(load_backend(), blobs, stage_feeds(blobs, stages, x, input_name),
                             thread_candidates(max_threads), proto)
    return costs_section(table, CONVERTING_MACHINE, proto)


def exit_accuracies(outputs: Sequence[np.ndarray], y: Optional[np.ndarray]) -> List[Optional[float]]:
    if y is None:
        return [None for _ in outputs]
    return [float(np.mean(np.argmax(o, axis=-1) == y)) for o in outputs]


def max_abs_error(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> List[float]:
    return [float(np.max(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)))) for p, q in zip(a, b)]


DECISION_PROTOCOL = CostProtocol(warmup=3, max_seconds=8.0)   # bounded, for choices made while converting


def interleaved_ms(blobs: Sequence[bytes], feed: Dict[str, np.ndarray], threads: int = 1,
                   backend: Optional[str] = None) -> List[float]:
    """Median batch-1 milliseconds of each blob (same signature) on feed, under the precision decisions' protocol
    (runtime/cost_protocol.py: warmed up, interleaved in a new random order each round, until the medians
    settle). backend: the interpreter package (default: the first found)."""
    runners = _runners(blobs, threads, backend)
    one = {n: v[:1].astype(np.float32) for n, v in feed.items()}
    costs = measure_candidates({i: (lambda run=run: run(**one)) for i, run in enumerate(runners)}, DECISION_PROTOCOL)
    return [costs[i].median_ms for i in range(len(runners))]
