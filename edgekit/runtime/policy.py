"""Exit rules: given an exit's output, a per-sample score; a sample exits when score >= threshold.

Pure numpy. The registry EXIT_RULES is the one list of rules; the manifest names the rule per exit.
"""
from typing import Callable, Dict

import numpy as np

from edgekit.errors import BundleError


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - np.max(logits, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def max_softmax(logits: np.ndarray) -> np.ndarray:
    """Confidence: the largest class probability (0..1], i.e. 1 / sum(exp(z - max z))."""
    z = logits - np.max(logits, axis=-1, keepdims=True)
    return 1.0 / np.exp(z).sum(axis=-1)


EXIT_RULES: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "max_softmax": max_softmax,
}


def exit_rule(rule: str) -> Callable[[np.ndarray], np.ndarray]:
    fn = EXIT_RULES.get(rule)
    if fn is None:
        raise BundleError("unknown exit rule {!r}; allowed: {}".format(rule, ", ".join(sorted(EXIT_RULES))))
    return fn
