"""What a run of a bundle returns (Result, BudgetResult), and the bookkeeping of a batch whose samples leave at
different exits (Batch). numpy only; Python 3.8 syntax (this file runs on the board).
"""
from typing import Callable, List, Optional

import numpy as np


class Result:
    """outputs: (N, classes), the exit output each sample left with; stage_ms: wall time of each stage
    invocation (only the stages that ran). exits, scores and predictions are derived on first use, so
    that a call does as little numpy work as it can after its last stage (the first numpy call after an
    interpreter invocation runs on cold caches and costs tens of microseconds). exits None: every sample left at
    exit `last`; scores None: `rule` (that exit's) applied to outputs; scores in another dtype become float64."""

    __slots__ = ("outputs", "stage_ms", "_exits", "_scores", "_rule", "_last", "_predictions")

    def __init__(self, outputs: np.ndarray, stage_ms: List[float], exits: Optional[np.ndarray],
                 scores: Optional[np.ndarray], rule: Callable[[np.ndarray], np.ndarray], last: int) -> None:
        self.outputs, self.stage_ms = outputs, stage_ms
        self._exits, self._scores, self._rule, self._last = exits, scores, rule, last
        self._predictions = None   # type: Optional[np.ndarray]

    @property
    def exits(self) -> np.ndarray:
        """(N,) index of the exit each sample left at."""
        if self._exits is None:
            self._exits = np.full(len(self.outputs), self._last, dtype=np.int64)
        return self._exits

    @property
    def scores(self) -> np.ndarray:
        """(N,) exit-rule score at the exit each sample left at."""
        s = self._scores
        if s is None or s.dtype != np.float64:
            self._scores = s = np.asarray(self._rule(self.outputs) if s is None else s, dtype=np.float64)
        return s

    @property
    def predictions(self) -> np.ndarray:
        """(N,) argmax of the outputs (class index)."""
        if self._predictions is None:
            self._predictions = np.argmax(self.outputs.reshape(len(self.outputs), -1), axis=-1)
        return self._predictions


class Batch:
    """Where each sample of a batch left, filled in as samples exit (made at the first partial exit)."""

    __slots__ = ("active", "outputs", "exits", "scores")

    def __init__(self, n: int, out: np.ndarray, last: int) -> None:
        self.active = np.arange(n)      # indices of the samples still running
        self.outputs = np.empty((n,) + out.shape[1:], dtype=out.dtype)
        self.exits, self.scores = np.full(n, last, dtype=np.int64), np.empty(n, dtype=np.float64)

    def leave(self, k: int, out: np.ndarray, score: np.ndarray, done: np.ndarray) -> np.ndarray:
        """The running samples marked in done leave at exit k; returns the mask of those that go on."""
        idx = self.active[done]
        self.outputs[idx], self.exits[idx], self.scores[idx] = out[done], k, score[done]
        keep = ~done
        self.active = self.active[keep]
        return keep

    def finish(self, out: np.ndarray, score: np.ndarray) -> None:
        """The samples still running answer from the last exit."""
        self.outputs[self.active], self.scores[self.active] = out, score


class BudgetResult(Result):
    """A run() result under a budget; `stopped`: how many samples the budget stopped before their exit's
    threshold was reached (they answer from the deepest exit they reached)."""

    __slots__ = ("stopped",)

    def __init__(self, outputs: np.ndarray, stage_ms: List[float], exits: np.ndarray, scores: np.ndarray,
                 rule: Callable[[np.ndarray], np.ndarray], last: int, stopped: int) -> None:
        Result.__init__(self, outputs, stage_ms, exits, scores, rule, last)
        self.stopped = stopped
