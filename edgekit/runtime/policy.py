"""Exit rules: from an exit's output, a per-sample score; a sample exits when score >= threshold.

Pure numpy, Python 3.8. EXIT_RULES is the one registry of rules; the manifest names the rule per exit.
Every score is "higher = more sure", so one comparison serves all rules (an output with more than one
axis per sample is flattened first):
- max_softmax: the largest class probability, in (0, 1];
- entropy: 1 - H(p) / log(C), in [0, 1] (1 = one-hot, 0 = uniform);
- margin: top-1 minus top-2 class probability, in [0, 1];
- learned: a model output named as the exit's score (e.g. a quality-assessment head), taken as is.
"""
import math
from typing import Callable, Dict, Optional

import numpy as np

from edgekit.errors import BundleError


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - np.max(logits, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _flat(logits: np.ndarray) -> np.ndarray:
    return logits if logits.ndim == 2 else logits.reshape(len(logits), -1)


def max_softmax(logits: np.ndarray) -> np.ndarray:
    """1 / sum(exp(z - max z)): the largest class probability without forming all of them."""
    logits = _flat(logits)
    # the ufuncs' own reduce (ndarray.max and .sum go through a Python wrapper); z is a new array, so exp and
    # 1/x can work in place: a batch-1 exit decision is mostly the fixed cost of each numpy call
    z = logits - np.maximum.reduce(logits, axis=-1, keepdims=True)
    if z.dtype.kind != "f":
        z = z.astype(np.float64)
    np.exp(z, out=z)
    s = np.add.reduce(z, axis=-1)
    return np.reciprocal(s, out=s)


QUICK_MAX_VALUES = 64    # above this many values per sample a Python loop costs more than numpy's fixed costs
QUICK_MARGIN = 1e-4      # far above the float32 rounding of max_softmax (a few 1e-7 relative)


def max_softmax_decides(logits: np.ndarray, threshold: float) -> Optional[bool]:
    """One sample: max_softmax(logits) >= threshold, computed on Python floats (a few numpy calls cost more than
    this at batch 1). None when it cannot be sure to agree with max_softmax, which computes in the logits' own
    dtype: the score within QUICK_MARGIN of the threshold, a non-finite value, or too many values."""
    if logits.size > QUICK_MAX_VALUES or logits.dtype.char not in "fd":     # float32 / float64 only
        return None
    row = logits.ravel().tolist()
    m = max(row)
    total = 0.0
    exp = math.exp
    for v in row:
        total += exp(v - m)
    d = 1.0 / total - threshold if total > 0.0 else math.nan
    if d > QUICK_MARGIN:
        return True
    if d < -QUICK_MARGIN:
        return False
    return None                 # near the threshold, or NaN (every comparison with NaN is false)


def entropy(logits: np.ndarray) -> np.ndarray:
    p = softmax(_flat(logits).astype(np.float64))
    h = -np.sum(p * np.log(np.clip(p, 1e-12, 1.0)), axis=-1)
    return 1.0 - h / np.log(p.shape[-1])


def margin(logits: np.ndarray) -> np.ndarray:
    p = softmax(_flat(logits).astype(np.float64))
    top2 = np.partition(p, -2, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def learned(score: np.ndarray) -> np.ndarray:
    return np.asarray(score, dtype=np.float64).reshape(len(score), -1)[:, 0]


EXIT_RULES: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "max_softmax": max_softmax,
    "entropy": entropy,
    "margin": margin,
    "learned": learned,
}
DEFAULT_RULE = "max_softmax"
# rule -> a one-sample decision on Python floats that agrees with the rule's own score wherever it answers
QUICK_DECIDE: Dict[str, Callable[[np.ndarray, float], Optional[bool]]] = {"max_softmax": max_softmax_decides}


def exit_rule(rule: str) -> Callable[[np.ndarray], np.ndarray]:
    fn = EXIT_RULES.get(rule)
    if fn is None:
        raise BundleError("unknown exit rule {!r}; allowed: {}".format(rule, ", ".join(EXIT_RULES)))
    return fn
