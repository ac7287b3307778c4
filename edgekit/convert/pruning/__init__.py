"""Structured channel pruning internals; the public verb is edgekit.convert.prune.prune.

groups.py      dependency groups over the functional graph (layers.py: the layer registry)
importance.py  channel importance (registry IMPORTANCE)
cost.py        FLOPs / parameter cost models; latency.py the measured latency model; budgets.py the registry
distortion.py  output distortion of removing channels, measured by masking on calibration data
allocate.py    the exact DP allocator over a discretised budget, and the uniform baseline
surgery.py     rebuilds the model with fewer channels and the kept weights copied in
recover.py     distillation fine-tune of the pruned model from the unpruned one
"""
