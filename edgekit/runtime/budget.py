"""Latency-budget and anytime execution of a bundle's stages (Python 3.8, numpy only).

Budget mode runs stage k only while the bundle's measured stage costs up to its end fit in the budget and the
call is not running late (online stage costs, see costs.py); anytime mode starts stages while time is left and
returns the best answer so far when the deadline passes, abandoning a stage in flight (it finishes in the
background on its own interpreter; a later call waits only if it needs that same stage). Samples that stop
because of time answer from the deepest exit they reached, and the result counts them (BudgetResult.stopped).
"""
import math
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

from edgekit.errors import ConfigError
from edgekit.runtime.result import BudgetResult


# The plan uses the bundle's stage costs (measured alone under the cost protocol, on this board after `edgekit
# profile`), which add up to about what a full-depth call costs; SLACK covers what a call spends between stages
# and that those costs were measured at another moment (another load) than the budget's reference. Between
# stages an early-exit call also scores exits and selects samples (numpy on caches the interpreter just evicted),
# so its stages run somewhat slower than their measured costs. runner.costs learns how long calls usually take to
# reach each stage; one that takes more than LATE longer is running late (a stall, a busy board), and then a stage
# starts only when the time spent plus the stage's learnt cost ends within the budget.
SLACK = 0.25
LATE = 0.5


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


def _starts(spent_ms: float, usual_ms: float, planned_ms: float, learnt_ms: float, budget_ms: float) -> bool:
    """Whether the next stage starts: the measured costs up to the stage's end fit in the budget (within SLACK),
    and the call reached the stage about as fast as calls usually do (within LATE of usual_ms), or, running late,
    the time spent plus the stage's learnt cost still ends within the budget."""
    if planned_ms > budget_ms * (1.0 + SLACK):
        return False
    return spent_ms <= usual_ms * (1.0 + LATE) or spent_ms + learnt_ms <= budget_ms


def run_with_budget(runner: Any, arr: np.ndarray, ths: Sequence[float], budget_ms: Optional[float],
                    anytime: bool, full_depth: bool = False,
                    clock: Callable[[], float] = time.perf_counter) -> BudgetResult:
    """Stage k > 0 starts when the bundle's measured costs of the stages run so far and of stage k fit in the
    budget (within SLACK), unless this call is running late (see _starts; every stage is timed with `clock` and
    learnt by runner.costs). A budget at or above the typical full-depth cost thus stops no sample on a call that
    runs at its usual speed, and a call slowed by a stall answers from an earlier exit. clock: seconds."""
    budget = check_budget(runner, budget_ms)
    start = clock()
    deadline = start + budget / 1000.0
    n = arr.shape[0]
    last = runner.num_stages - 1
    active = np.arange(n)
    outputs = None  # type: Optional[np.ndarray]
    exits = np.full(n, -1, dtype=np.int64)
    scores = np.zeros(n, dtype=np.float64)
    stage_ms = []   # type: List[float]
    values = [arr]
    costs = runner.costs
    stopped = 0
    planned = 0.0   # the bundle's measured cost of the stages run so far (ms)
    for k, step in enumerate(runner._steps):
        cost = costs.measured(k, len(active))
        if k > 0 and not anytime:
            spent = (clock() - start) * 1000.0
            usual = costs.arrival(k)
            if n == 1:
                costs.observe_arrival(k, spent)
            if not _starts(spent, usual, planned + cost, costs.predict(k, len(active)), budget):
                stopped = len(active)
                break
        planned += cost
        t0 = clock()
        if anytime:
            future = _worker(runner).submit(runner.invoke_stage, k, values, step.fetch)
            try:
                res, _ = future.result(timeout=max(deadline - clock(), 0.0) if k > 0 else None)
            except FutureTimeout:
                stopped = len(active)
                break
        else:
            res, _ = runner.invoke_stage(k, values, step.fetch)
        ms = (clock() - t0) * 1000.0
        costs.observe(k, ms, len(active))
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
    return BudgetResult(outputs, stage_ms, exits, scores, runner._steps[-1].rule, last, stopped)
