"""Recovery: fine-tune the pruned model on calibration data by distillation from the unpruned one.

Adam with a cosine-decaying learning rate. Per output (exit), the loss is the temperature-scaled KL divergence to the teacher's output (on logits,
or directly on probabilities when the output layer ends in a softmax), plus cross-entropy on labels when
the calibration data has them. A tenth of the data (at least 8 samples) is held out for early stopping;
the best weights on it are restored. A progress callback gets one call per epoch.
"""
from dataclasses import dataclass
from typing import Callable, List, Optional

import keras
import numpy as np
from keras import ops

from edgekit.convert.pruning.distortion import run_eager

TEMPERATURE = 2.0
PATIENCE = 5
LEARNING_RATE = 2e-3            # start of a cosine decay to zero over the epochs
BATCH = 32

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class RecoveryReport:
    epochs_run: int
    best_epoch: int                         # 0: no epoch beat the pruned model, its weights were kept
    best_val_loss: float
    initial_val_loss: float                 # on the held-out part, before the first epoch
    used_labels: bool
    train_samples: int
    val_samples: int

    def to_dict(self):
        return dict(self.__dict__)


def _is_probability(model, tensor) -> bool:
    hist = getattr(tensor, "_keras_history", None)
    layer = hist[0] if hist is not None else None
    name = getattr(getattr(layer, "activation", None), "__name__", "")
    return name == "softmax" or type(layer).__name__ == "Softmax"


def _loss(classes: int, probs: bool, labelled: bool):
    t = TEMPERATURE

    def loss(y_true, y_pred):
        teacher = y_true[:, :classes]
        if probs:
            p_t = ops.clip(teacher, 1e-7, 1.0)
            log_s = ops.log(ops.clip(y_pred, 1e-7, 1.0))
            kd = ops.sum(p_t * (ops.log(p_t) - log_s), axis=-1)
        else:
            p_t = ops.softmax(teacher / t, axis=-1)
            log_s = ops.log_softmax(y_pred / t, axis=-1)
            kd = ops.sum(p_t * (ops.log(ops.clip(p_t, 1e-12, 1.0)) - log_s), axis=-1) * (t * t)
        if not labelled:
            return kd
        onehot = y_true[:, classes:]
        ce = keras.losses.categorical_crossentropy(onehot, y_pred, from_logits=not probs)
        return kd + ce

    return loss


def recover(student, teacher, x: np.ndarray, y: Optional[np.ndarray], epochs: int, seed: int = 0,
            progress: Optional[Progress] = None) -> RecoveryReport:
    """Train `student` in place (teacher untouched); returns what happened."""
    keras.utils.set_random_seed(seed)
    order = np.random.RandomState(seed).permutation(len(x))
    n_val = max(8, len(x) // 10)
    val, train = order[:n_val], order[n_val:]
    teacher_out = run_eager(teacher, x)
    outputs = list(student.outputs)
    probs = [_is_probability(student, t) for t in outputs]
    targets: List[np.ndarray] = []
    losses = []
    for out, p in zip(teacher_out, probs):
        out = np.asarray(out, np.float32).reshape(len(x), -1)
        classes = out.shape[-1]
        parts = [out]
        if y is not None:
            parts.append(np.eye(classes, dtype=np.float32)[np.clip(y, 0, classes - 1)])
        targets.append(np.concatenate(parts, axis=-1))
        losses.append(_loss(classes, p, y is not None))
    steps = epochs * int(np.ceil(len(train) / BATCH))
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=max(1, steps))
    student.compile(optimizer=keras.optimizers.Adam(schedule), loss=losses)
    history: List[float] = []

    class _Tick(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            history.append(float((logs or {}).get("val_loss", np.nan)))
            if progress is not None:
                progress(epoch + 1, epochs, "recovery epoch {}/{} val loss {:.4f}".format(
                    epoch + 1, epochs, history[-1]))

    val_data = (x[val], [t[val] for t in targets])
    start = student.get_weights()
    initial = _total(student.evaluate(val_data[0], val_data[1], batch_size=64, verbose=0))
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE, restore_best_weights=True)
    student.fit(x[train], [t[train] for t in targets], validation_data=val_data,
                epochs=epochs, batch_size=BATCH, shuffle=True, callbacks=[stop, _Tick()], verbose=0)
    best = int(np.nanargmin(history)) if history else 0
    best_loss = float(history[best]) if history else float("nan")
    if not best_loss <= initial:             # training never beat the pruned model as it was: keep that
        student.set_weights(start)
        best, best_loss = -1, initial
    return RecoveryReport(epochs_run=len(history), best_epoch=best + 1, best_val_loss=best_loss,
                          initial_val_loss=initial, used_labels=y is not None, train_samples=int(len(train)),
                          val_samples=int(n_val))


def _total(result) -> float:
    return float(result[0] if isinstance(result, (list, tuple)) else result)
