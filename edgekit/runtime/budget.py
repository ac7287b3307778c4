"""Latency-budget and anytime execution of a bundle's stages (Python 3.8, numpy only).

Budget mode runs stage k only while it is predicted (online stage costs, see costs.py) to finish within
what is left of the budget; anytime mode starts stages while time is left and returns the best answer
so far when the deadline passes, abandoning a stage in flight (it finishes in the background on its own
interpreter; a later call waits only if it needs that same stage). Samples that stop because of time answer from the deepest exit they reached.
"""
import math
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, List, Optional, Sequence

import numpy as np

from edgekit.errors import ConfigError


def check_budget(runner: Any, budget_ms: Optional[float]) -> float:
    if budget_ms is None or isinstance(budget_ms, bool) or not isinstance(budget_ms, (int, float)) \
            or math.isnan(budget_ms) or budget_ms <= 0:
        raise ConfigError("budget_ms must be a number > 0, got {!r}".format(budget_ms))
    first = runner.manifest.stages[0].latency_ms or runner.costs.mean(0)
    if budget_ms < first:
        raise ConfigError("budget {:.3f} ms is smaller than the first stage ({:.3f} ms); allowed: a budget of at "
                          "least the first stage's latency".format(budget_ms, first))
    return float(budget_ms)


def _worker(runner: Any) -> ThreadPoolExecutor:
    pool = getattr(runner, "_anytime_pool", None)
    if pool is None:
        pool = ThreadPoolExecutor(max_workers=runner.num_stages, thread_name_prefix="edgekit-anytime")
        runner._anytime_pool = pool
    return pool


def run_with_budget(runner: Any, arr: np.ndarray, ths: Sequence[float], budget_ms: Optional[float],
                    anytime: bool, full_depth: bool = False) -> Any:
    from edgekit.runtime.runner import Result

    budget = check_budget(runner, budget_ms)
    clock = time.perf_counter
    deadline = clock() + budget / 1000.0
    n = arr.shape[0]
    last = runner.num_stages - 1
    active = np.arange(n)
    outputs = None  # type: Optional[np.ndarray]
    exits = np.full(n, -1, dtype=np.int64)
    scores = np.zeros(n, dtype=np.float64)
    stage_ms = []   # type: List[float]
    values = [arr]
    for k, step in enumerate(runner._steps):
        if k > 0 and not anytime and clock() + runner.costs.predict(k, len(active)) / 1000.0 > deadline:
            break
        if anytime:
            future = _worker(runner).submit(runner.invoke_stage, k, values, step.fetch)
            try:
                res, ms = future.result(timeout=max(deadline - clock(), 0.0) if k > 0 else None)
            except FutureTimeout:
                break
        else:
            res, ms = runner.invoke_stage(k, values, step.fetch)
        runner.costs.observe(k, ms, len(active))
        stage_ms.append(ms)
        out, score = res[step.carried], step.rule(res[step.carried + 1 if step.scored else step.carried])
        if outputs is None:
            outputs = np.empty((n,) + out.shape[1:], dtype=out.dtype)
        outputs[active], exits[active], scores[active] = out, k, score
        if k == last:
            break
        keep = np.ones(len(active), dtype=bool) if full_depth else score < ths[k]
        if not keep.any():
            break
        active = active[keep]
        values = [c[keep] for c in res[:step.carried]]
    return Result(outputs, stage_ms, exits, scores, runner._steps[-1].rule, last)
