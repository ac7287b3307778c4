"""Accuracy against latency: what each exit answers on the data, and a sweep of one shared threshold.

Runs on the board: numpy only, Python 3.8 syntax.

Every exit's score and prediction are recorded for every sample (one batched pass through every stage). A threshold vector then decides each sample's exit without running anything
again: the first exit k < last whose score reaches threshold k, else the last. Latency at an operating
point is estimated as the mean over samples of the summed per-stage means (measured at batch 1 in the
same run) up to the sample's exit. The sweep uses one threshold shared by all exits, over the range of
the recorded scores; the chosen operating point is the bundle's own thresholds.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.runtime.policy import exit_rule
from edgekit.runtime.runner import EarlyExitRunner, exit_outputs

SWEEP_POINTS = 41


def exit_table(runner: EarlyExitRunner, x: np.ndarray, batch_size: int = 64) -> Tuple[np.ndarray, np.ndarray]:
    """(scores, predictions), each (N, exits): what every exit says about every sample."""
    outs = exit_outputs(runner, x, batch_size)
    scores = np.stack([exit_rule(st.exit.rule)(scored) for st, (_, scored) in zip(runner.manifest.stages, outs)],
                      axis=1).astype(np.float64)
    preds = np.stack([np.argmax(out.reshape(len(out), -1), axis=-1) for out, _ in outs], axis=1).astype(np.int64)
    return scores, preds


def exits_for(scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """(N,) exit index per sample under per-exit thresholds (the last exit always answers)."""
    k_all = scores.shape[1]
    ths = np.asarray(list(thresholds)[:k_all - 1], dtype=np.float64)
    fire = np.concatenate([scores[:, :k_all - 1] >= ths, np.ones((len(scores), 1), dtype=bool)], axis=1)
    return np.argmax(fire, axis=1)


def point(scores: np.ndarray, preds: np.ndarray, y: Optional[np.ndarray], stage_ms: Sequence[float],
          thresholds: Sequence[float]) -> Dict[str, Any]:
    """Accuracy, estimated mean latency and exit distribution at one threshold vector."""
    ex = exits_for(scores, thresholds)
    chosen = preds[np.arange(len(preds)), ex]
    cum = np.cumsum(np.asarray(stage_ms, dtype=np.float64))
    hist = np.bincount(ex, minlength=scores.shape[1])
    return {"thresholds": [float(t) for t in thresholds],
            "accuracy": None if y is None else float(np.mean(chosen == np.asarray(y))),
            "estimated_ms": float(np.mean(cum[ex])), "exit_histogram": hist.tolist(),
            "exit_fraction": (hist / float(len(ex))).tolist()}


def sweep_grid(scores: np.ndarray, points: int = SWEEP_POINTS) -> List[float]:
    """Shared thresholds from the lowest recorded score (all leave at exit 0) to just above the highest
    (all run to the last exit), at quantiles of the early exits' scores."""
    early = scores[:, :-1].ravel()
    if early.size == 0:
        return [0.0]
    qs = np.quantile(early, np.linspace(0.0, 1.0, points))
    top = np.nextafter(float(early.max()), np.inf)
    return sorted(set(float(q) for q in qs) | {top})


def accuracy_latency(runner: EarlyExitRunner, x: np.ndarray, y: Optional[np.ndarray],
                     stage_ms: Sequence[Optional[float]]) -> Dict[str, Any]:
    """The sweep and the chosen point; stage_ms: per-stage mean ms at batch 1 (full depth, same run)."""
    if any(s is None for s in stage_ms):
        return {"points": [], "chosen": None, "note": "per-stage times missing; no curve"}
    scores, preds = exit_table(runner, x)
    k_all = runner.num_stages
    pts = [dict(point(scores, preds, y, stage_ms, [t] * k_all), shared_threshold=t) for t in sweep_grid(scores)]
    chosen = point(scores, preds, y, stage_ms, runner.thresholds())
    per_exit = None if y is None else [float(np.mean(preds[:, k] == np.asarray(y))) for k in range(k_all)]
    return {"points": pts, "chosen": chosen, "exit_accuracy": per_exit, "stage_ms": [float(s) for s in stage_ms],
            "note": "latency estimated from per-stage means measured at batch 1 in this run; one threshold "
                    "shared by all exits; chosen = the bundle's thresholds"}
