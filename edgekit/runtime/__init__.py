"""The on-board runtime: numpy + a TFLite interpreter, no TensorFlow, Python 3.8 syntax."""
from edgekit.runtime.runner import EarlyExitRunner, Result, evaluate

__all__ = ["EarlyExitRunner", "Result", "evaluate"]
