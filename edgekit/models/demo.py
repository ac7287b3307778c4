"""The demo: a three-exit CNN for 32x32 digits, trained reproducibly on the shipped splits.

Shaped like the dynamic networks early exit is meant for: a cheap first exit and the heavy compute late.
- stage 0 (exit 0, 0.7 MFLOPs): a ResNet-style stem that quarters the resolution at once (3x3 stride-2
  convolution to 16 channels, 2x2 max pooling to 8x8), one 3x3 convolution to 32 channels, and a linear
  classifier on its 8x8 map;
- stage 1 (exit 1, 11.9 MFLOPs): a 3x3 convolution to 64 channels and a residual block of two more at 8x8,
  with the same kind of exit;
- stage 2 (exit 2, 48.2 MFLOPs): a 3x3 convolution to 128 channels and a residual block of two more at 8x8,
  then a classifier head of 2x2 max pooling, a 256-unit dense layer and the output layer (dropout before
  each in training). The dense layers hold 56% of the 1.05M weights, the kind of layer whose 4-bit weights
  XNNPACK runs fast.
The first convolution is strided and the first exit reads an 8x8 map because on a CPU a small stage's time is
mostly per-pixel work and per-op overhead, not FLOPs: on the x86 development machine a 3x3 int8 convolution
16 -> 16 channels at 16x16 took 0.010 ms, one 48 -> 48 at 8x8 (2.25x its FLOPs) 0.003 ms.
It is trained on the fit part of the calib split only (edgekit.fingerprint.holdout_split), with shifted copies
of those samples: the held-out quarter is what `convert --max-accuracy-drop` fits thresholds on when no
--threshold-data is given, so those thresholds are fitted on samples the model never saw. What it was trained
on is recorded next to it (demo_digits.keras.training.json), so that convert warns when threshold data
overlaps it. Retrain (a few minutes on 2 cores) and overwrite the shipped file with:

    python -m edgekit.models.demo
"""
import os
import sys
from typing import Tuple

import numpy as np

ASSET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "demo_digits.keras")
CALIB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "calibration")
SEED = 7
SHIFT = 3           # training copies are shifted by up to this many pixels each way
COPIES = 5          # shifted copies of each training sample, besides the sample itself
STEM_WIDTH = 32     # channels of the convolution the first exit reads
DROPOUT = 0.5       # before each dense layer of the last exit's head (training only)


def _res_block(keras, x, channels: int, name: str):
    y = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name=name + "_conv1")(x)
    y = keras.layers.Conv2D(channels, 3, padding="same", name=name + "_conv2")(y)
    y = keras.layers.Add(name=name + "_add")([x, y])
    return keras.layers.ReLU(name=name + "_out")(y)


def _linear_exit(keras, x, classes: int, name: str):
    """A dense classifier on the whole 8x8 map. No pooling between: ai-edge-quantizer 0.1.0 built int8 stages
    with MAX_POOL_2D on a tensor carried to the next stage whose LiteRT interpreter corrupted the heap once
    --precision adaptive kept the stem float32, and average pooling cost accuracy here."""
    return keras.layers.Dense(classes, name=name)(keras.layers.Flatten(name=name + "_flat")(x))


def build_demo_model(classes: int = 10):
    import keras

    L = keras.layers
    inp = keras.Input((32, 32, 1), name="image")
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem")(inp)
    x = L.MaxPooling2D(2, name="stem_pool")(x)
    x = L.Conv2D(STEM_WIDTH, 3, padding="same", activation="relu", name="conv1")(x)
    e0 = _linear_exit(keras, x, classes, "exit0")

    x = L.Conv2D(64, 3, padding="same", activation="relu", name="widen2")(x)
    x = _res_block(keras, x, 64, "block2")
    e1 = _linear_exit(keras, x, classes, "exit1")

    x = L.Conv2D(128, 3, padding="same", activation="relu", name="widen3")(x)
    x = _res_block(keras, x, 128, "block3")
    h = L.Flatten(name="head_flat")(L.MaxPooling2D(2, name="head_pool")(x))
    h = L.Dense(256, activation="relu", name="head_fc")(L.Dropout(DROPOUT, name="head_drop1")(h))
    e2 = L.Dense(classes, name="exit2")(L.Dropout(DROPOUT, name="head_drop2")(h))
    return keras.Model(inp, [e0, e1, e2], name="demo_digits")


def _load(split: str) -> Tuple[np.ndarray, np.ndarray]:
    with np.load(os.path.join(CALIB_DIR, "digits_{}.npz".format(split)), allow_pickle=False) as z:
        return z["x"], z["y"]


def seeded_splits(seed: int):
    """Seed Keras, make TensorFlow deterministic, and load the calib, val and test splits (for training)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    return _load("calib"), _load("val"), _load("test")


def shifted_copies(x: np.ndarray, y: np.ndarray, copies: int, shift: int, seed: int):
    """x and y followed by `copies` copies of them, each image moved by a random whole-pixel offset of at most
    `shift` each way (zeros fill the edge it leaves)."""
    rng = np.random.default_rng(seed)
    h, w = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    xs, ys = [x], [y]
    for _ in range(copies):
        dy, dx = rng.integers(0, 2 * shift + 1, size=(2, len(x)))
        xs.append(np.stack([p[a:a + h, b:b + w] for p, a, b in zip(padded, dy, dx)]))
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def train(out_path: str = ASSET, epochs: int = 60) -> None:
    import keras

    from edgekit.fingerprint import holdout_split, training_record, write_sidecar

    (x_all, y_all), (xv, yv), (xt, yt) = seeded_splits(SEED)
    fit, _ = holdout_split(x_all, y_all)
    x, y = x_all[fit], y_all[fit]
    xa, ya = shifted_copies(x, y, COPIES, SHIFT, SEED)
    model = build_demo_model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=[loss, loss, loss],
                  metrics=[["accuracy"], ["accuracy"], ["accuracy"]])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=12, restore_best_weights=True)
    model.fit(xa, [ya, ya, ya], validation_data=(xv, [yv, yv, yv]), epochs=epochs, batch_size=32,
              callbacks=[stop], verbose=2)
    for name, logits in zip(("exit0", "exit1", "exit2"), model.predict(xt, verbose=0)):
        print("{} test accuracy {:.4f}".format(name, float(np.mean(np.argmax(logits, 1) == yt))))
    plain = build_demo_model()                  # an uncompiled copy: no optimizer state in the file
    plain.set_weights(model.get_weights())
    plain.save(out_path)
    write_sidecar(out_path, training_record([
        {"role": "trained", "x": x, "y": y, "path": "calibration/digits_calib.npz (fit part, and shifted copies)"},
        {"role": "early stopping", "x": xv, "y": yv, "path": "calibration/digits_val.npz"}]))
    print("saved", out_path, os.path.getsize(out_path), "bytes")


if __name__ == "__main__":
    train(*sys.argv[1:2])
