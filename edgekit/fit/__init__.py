"""Per-exit thresholds: the fit (thresholds.py), which data it may use (provenance.py), and refitting a written
bundle's thresholds through the runtime (threshold_fit.py). numpy and the runtime only, no TensorFlow, so
`edgekit calibrate` starts fast; convert and optimize use the same code on data they have already loaded."""
