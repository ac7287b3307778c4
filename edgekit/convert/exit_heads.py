"""Exit heads for attach_exits (exits.py): design under a FLOPs budget, build, train with the backbone frozen.

A head is pooling to a small grid (parameter-free) -> normalization (fixed per-channel statistics of the
training features) -> optional hidden 1x1 convolution (or dense layer) with ReLU -> dense classifier (logits).
The literature on multi-exit networks (BranchyNet, Shallow-Deep Networks, MSDNet) found that a linear head on
globally pooled early features is too weak: keep some spatial resolution and a non-linear layer when the
budget allows. Among the designs within `head_budget` x (FLOPs of the stage the head ends) and
`head_param_budget` x (the backbone's weights), the finest pooled grid wins, then the most FLOPs: spatial
resolution is what an early head needs most (measured on the plain digits CNN after its first convolution, where
the budget allows a 2x2 grid with 64 hidden units or a 4x4 grid with none: 76% against 98% on held-out data).
The weights budget matters because a dense layer's FLOPs are twice its weights,
so a FLOPs budget alone would let a head on a costly stage (ResNet50: 2 GFLOPs) grow to tens of millions of
weights.

Only the heads train: the backbone runs once, in inference mode, to give each head its pooled features, so
its weights and batch-norm statistics cannot change.
"""
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from edgekit.convert.flops import model_flops
from edgekit.errors import ConfigError, DataError

GRIDS = (4, 2, 1)                 # pooled grid side per spatial axis
WIDTHS = (256, 128, 64, 32, 0)    # hidden width; 0 = no hidden layer
MIN_TRAIN, MIN_VAL = 32, 8        # fewest samples to train and to stop early on
FEATURE_BATCH = 32
VAR_FLOOR = 1e-2                  # per-channel variance floor, relative to the mean variance


@dataclass(frozen=True)
class HeadDesign:
    pools: Tuple[int, ...]        # pooling window per spatial axis; () = no pooling
    pooled: Tuple[int, ...]       # the head's input shape after pooling (no batch axis)
    width: int
    flops: int                    # pooling adds + 2 x MACs of the hidden and classifier layers
    params: int                   # trainable weights of the head (normalization statistics are constants)


def _prod(shape: Sequence[int]) -> int:
    return int(np.prod(list(shape), dtype=np.int64)) if len(shape) else 1


def _pooled(shape: Tuple[int, ...], grid: int) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    spatial = shape[:-1]
    if not spatial:
        return (), shape
    pools = tuple(-(-d // min(grid, d)) for d in spatial)
    if all(p == 1 for p in pools):
        return (), shape
    return pools, tuple(-(-d // p) for d, p in zip(spatial, pools)) + (shape[-1],)


def head_flops(shape: Tuple[int, ...], pools: Tuple[int, ...], pooled: Tuple[int, ...], width: int,
               classes: int) -> int:
    cells, channels = _prod(pooled[:-1]), pooled[-1]
    pool = _prod(shape) if pools else 0
    hidden = 2 * cells * channels * width
    return pool + hidden + 2 * cells * (width or channels) * classes


def head_params(pooled: Tuple[int, ...], width: int, classes: int) -> int:
    cells, channels = _prod(pooled[:-1]), pooled[-1]
    hidden = (channels + 1) * width
    return hidden + (cells * (width or channels) + 1) * classes


def design_head(shape: Tuple[int, ...], classes: int, budget_flops: float, budget_params: float,
                where: str) -> HeadDesign:
    options = []
    for grid in GRIDS:
        pools, pooled = _pooled(shape, grid)
        for width in WIDTHS:
            options.append(HeadDesign(pools, pooled, width, head_flops(shape, pools, pooled, width, classes),
                                      head_params(pooled, width, classes)))
    fitting = [o for o in options if o.flops <= budget_flops and o.params <= budget_params]
    if not fitting:
        least = min(options, key=lambda o: (o.flops, o.params))
        raise ConfigError("the exit head after {} needs at least {} FLOPs and {} weights, over the head budget of "
                          "{:.0f} FLOPs (its stage) and {:.0f} weights (the backbone); raise the head budget or cut "
                          "deeper".format(where, least.flops, least.params, budget_flops, budget_params))
    return max(fitting, key=lambda o: (_prod(o.pooled[:-1]), o.flops, o.width))


def _pool_layer(keras, rank: int, pools: Tuple[int, ...], name: str):
    cls = {1: keras.layers.AveragePooling1D, 2: keras.layers.AveragePooling2D, 3: keras.layers.AveragePooling3D}
    return cls[rank](pool_size=pools, strides=pools, padding="same", name=name)


def _head_layers(keras, design: HeadDesign, classes: int, mean: np.ndarray, var: np.ndarray, name: str,
                 seed: int) -> List[Any]:
    init = keras.initializers.GlorotUniform
    layers = [keras.layers.Normalization(axis=-1, mean=mean, variance=var, name=name + "_norm")]
    spatial = len(design.pooled) - 1
    if design.width and spatial:
        conv = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[spatial]
        layers.append(conv(design.width, 1, activation="relu", kernel_initializer=init(seed=seed),
                           name=name + "_hidden"))
    elif design.width:
        layers.append(keras.layers.Dense(design.width, activation="relu", kernel_initializer=init(seed=seed),
                                         name=name + "_hidden"))
    if spatial:
        layers.append(keras.layers.Flatten(name=name + "_flat"))
    layers.append(keras.layers.Dense(classes, kernel_initializer=init(seed=seed + 1), name=name))
    return layers


def _apply(layers: Sequence[Any], x):
    for layer in layers:
        x = layer(x)
    return x


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _teacher_logits(final: np.ndarray) -> Tuple[np.ndarray, bool]:
    """The final output as logits; a softmax output (rows of probabilities) is turned back into log-probabilities."""
    probs = bool(np.all(final >= 0) and np.allclose(final.sum(axis=-1), 1.0, atol=1e-3))
    return (np.log(np.clip(final, 1e-12, None)) if probs else final).astype(np.float64), probs


def _split(n: int, options) -> Tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(options.seed).permutation(n)
    n_val = int(round(n * options.val_fraction))
    return perm[n_val:], perm[:n_val]


def _check_data(data, n_train: int, n_val: int, classes: int, options) -> str:
    if n_train < MIN_TRAIN or n_val < MIN_VAL:
        raise DataError("exit training data {} has {} samples ({} to train, {} to validate); training exit heads "
                        "needs at least {} and {}".format(data.source or "(in memory)", len(data), n_train, n_val,
                                                          MIN_TRAIN, MIN_VAL))
    by = options.target
    if by == "auto":
        by = "labels" if data.y is not None else "distill"
    if by == "labels":
        if data.y is None:
            raise DataError("exit training data {} has no labels (y); allowed with head target 'labels': an .npz "
                            "with x and y (or use head target 'distill')".format(data.source or "(in memory)"))
        if int(data.y.min()) < 0 or int(data.y.max()) >= classes:
            raise DataError("exit training data {}: labels span {}..{}, the model has {} classes".format(
                data.source or "(in memory)", int(data.y.min()), int(data.y.max()), classes))
    return by


def _features(keras, model, pooled_tensors: Sequence[Any], x: np.ndarray, step: Callable) -> List[np.ndarray]:
    extractor = keras.Model(model.inputs, list(pooled_tensors) + [model.outputs[0]])
    parts: List[List[np.ndarray]] = [[] for _ in range(len(pooled_tensors) + 1)]
    for i in range(0, len(x), FEATURE_BATCH):
        outs = extractor([x[i:i + FEATURE_BATCH]], training=False)
        for p, o in zip(parts, outs):
            p.append(np.asarray(o, dtype=np.float32))
        step("backbone features {}/{}".format(min(i + FEATURE_BATCH, len(x)), len(x)))
    return [np.concatenate(p) for p in parts]


def _loss(keras, by: str, temperature: float):
    if by == "labels":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    t = float(temperature)

    def distill(soft, logits):
        return t * t * keras.ops.mean(keras.losses.categorical_crossentropy(soft, logits / t, from_logits=True))
    return distill


def _fit(keras, head, loss, xt, yt, xv, yv, options, seed: int, step: Callable[[int, str], None]) -> Dict[str, Any]:
    """Epochs of mini-batches in our own seeded order (a compiled step, not Model.fit, whose per-epoch
    set-up costs more than a head's whole epoch); keep the weights of the best validation loss."""
    variables = head.trainable_variables
    opt = keras.optimizers.Adam(options.learning_rate)
    opt.build(variables)

    @tf.function(reduce_retracing=True)
    def train_step(xb, yb):
        with tf.GradientTape() as tape:
            value = loss(yb, head(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(value, variables), variables))

    @tf.function(reduce_retracing=True)
    def val_loss(xb, yb):
        return loss(yb, head(xb, training=False))

    rng = np.random.default_rng(seed)
    best, best_w, best_epoch, wait, epoch = np.inf, head.get_weights(), 0, 0, 0
    for epoch in range(1, options.epochs + 1):
        perm = rng.permutation(len(xt))
        for i in range(0, len(xt), options.batch_size):
            idx = perm[i:i + options.batch_size]
            train_step(tf.constant(xt[idx]), tf.constant(yt[idx]))
        val = float(val_loss(tf.constant(xv), tf.constant(yv)))
        if val < best - 1e-6:
            best, best_w, best_epoch, wait = val, head.get_weights(), epoch, 0
        else:
            wait += 1
        step(epoch, "epoch {}/{} val loss {:.4f}".format(epoch, options.epochs, val))
        if wait >= options.patience:
            break
    head.set_weights(best_w)
    return {"epochs": epoch, "best_epoch": best_epoch, "val_loss": round(float(best), 6),
            "stopped_early": epoch < options.epochs}


def _designs(cuts: Sequence[Any], classes: int, budget: float, params: float) -> List[HeadDesign]:
    designs, prev = [], 0
    for cp in cuts:
        designs.append(design_head(cp.shape, classes, budget * (cp.flops_before - prev), params,
                                   "layer {!r}".format(cp.layer)))
        prev = cp.flops_before
    return designs


def _train_head(keras, k: int, name: str, design: HeadDesign, f: np.ndarray, target: np.ndarray, tr, va, loss,
                classes: int, options, progress: Callable[[int, int, str], None], total: int):
    """One head on its pooled features; returns its layers (trained), the fit record and val predictions."""
    axes = tuple(range(f.ndim - 1))
    mean, var = f[tr].mean(axis=axes), f[tr].var(axis=axes)
    var = np.maximum(var, VAR_FLOOR * float(var.mean()) + 1e-12)   # dead channels: no huge scale (int8)
    layers = _head_layers(keras, design, classes, mean, var, name, options.seed * 1009 + 2 * k)
    inp = keras.Input(design.pooled, name=name + "_features")
    head = keras.Model(inp, _apply(layers, inp), name=name + "_head")
    base = 1 + k * options.epochs
    fit = _fit(keras, head, loss, f[tr], target[tr], f[va], target[va], options, options.seed * 7919 + k,
               lambda e, s: progress(base + e, total, "{} {}".format(name, s)))
    progress(base + options.epochs, total, "{} trained".format(name))
    return layers, fit, np.asarray(head(f[va], training=False)).argmax(-1)


class _NoRetracingNote(logging.Filter):
    """Each head has its own compiled step by design; TensorFlow's note about 'retracing' is noise here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_retracing():
    log, note = logging.getLogger("tensorflow"), _NoRetracingNote()
    log.addFilter(note)
    try:
        yield
    finally:
        log.removeFilter(note)


def build_and_train(model, cuts: Sequence[Any], options, data, progress: Callable[[int, int, str], None]):
    """Heads at `cuts` (exits.CutPoint, depth order) trained on data; returns (the multi-exit keras.Model, the
    per-exit report)."""
    with _quiet_retracing():
        return _build_and_train(model, cuts, options, data, progress)


def _build_and_train(model, cuts: Sequence[Any], options, data, progress: Callable[[int, int, str], None]):
    classes = int(model.outputs[0].shape[-1])
    tr, va = _split(len(data), options)
    by = _check_data(data, len(tr), len(va), classes, options)
    names = _exit_names(model, len(cuts))
    total_flops = float(max(model_flops(model), 1))
    designs = _designs(cuts, classes, options.head_budget, options.head_param_budget * model.count_params())
    pooled = [_pool_layer(keras, len(cp.shape) - 1, d.pools, n + "_pool")(cp.tensor) if d.pools else cp.tensor
              for cp, d, n in zip(cuts, designs, names)]
    total = 1 + len(cuts) * options.epochs
    feats = _features(keras, model, pooled, data.x.astype(np.float32, copy=False), lambda s: progress(0, total, s))
    final = feats.pop()
    progress(1, total, "backbone features on {} samples".format(len(data)))
    teacher, final_is_probs = _teacher_logits(final)
    final_pred = final.argmax(-1)
    target = data.y.astype(np.int64) if by == "labels" else \
        _softmax(teacher / options.temperature).astype(np.float32)
    loss = _loss(keras, by, options.temperature)
    outputs, reports, prev = [], [], 0
    for k, (cp, design, name, f, pool) in enumerate(zip(cuts, designs, names, feats, pooled)):
        layers, fit, pred = _train_head(keras, k, name, design, f, target, tr, va, loss, classes, options,
                                        progress, total)
        outputs.append(_apply(layers, pool))
        reports.append(_exit_report(name, cp, design, cp.flops_before - prev, total_flops, by, fit, pred, data, va,
                                    final_pred))
        prev = cp.flops_before
    reports.append(_final_report(model.output_names[0], total_flops, data, va, final_pred))
    new = keras.Model(model.inputs, outputs + [model.outputs[0]], name=model.name)
    report = {"exits": reports, "options": options.to_dict(), "trained_by": by,
              "final_output_is_softmax": final_is_probs, "samples": {"train": len(tr), "val": len(va)}}
    return new, report


def _exit_names(model, n: int) -> List[str]:
    taken = {layer.name for layer in model.layers}
    prefix = "exit"
    while any(name.startswith(prefix) for name in taken):
        prefix = "ek_" + prefix
    return ["{}{}".format(prefix, k) for k in range(n)]


def _acc(pred: np.ndarray, ref: Optional[np.ndarray]) -> Optional[float]:
    return None if ref is None else round(float(np.mean(pred == ref)), 6)


def _exit_report(name, cp, design: HeadDesign, stage: int, total: float, by: str, fit: Dict, pred, data, va,
                 final_pred) -> Dict[str, Any]:
    return {"name": name, "cut": cp.layer, "crossing": list(cp.crossing), "shape": list(cp.shape),
            "backbone_flops_before": cp.flops_before, "flops_to_exit": cp.flops_before + design.flops,
            "fraction_of_full": round((cp.flops_before + design.flops) / total, 6),
            "head_flops": design.flops, "head_fraction_of_stage": round(design.flops / max(stage, 1), 6),
            "head_params": design.params,
            "head": {"pool": list(design.pools), "pooled_shape": list(design.pooled), "hidden": design.width},
            "trained_by": by, "epochs": fit["epochs"], "best_epoch": fit["best_epoch"], "val_loss": fit["val_loss"],
            "val_accuracy": _acc(pred, None if data.y is None else data.y[va]),
            "val_agreement": _acc(pred, final_pred[va])}


def _final_report(name: str, total: float, data, va, final_pred) -> Dict[str, Any]:
    return {"name": name, "cut": None, "crossing": [], "shape": None, "backbone_flops_before": int(total),
            "flops_to_exit": int(total), "fraction_of_full": 1.0, "head_flops": 0, "head_fraction_of_stage": None,
            "head_params": 0,
            "head": None, "trained_by": None, "epochs": None, "best_epoch": None, "val_loss": None,
            "val_accuracy": _acc(final_pred[va], None if data.y is None else data.y[va]), "val_agreement": 1.0}
