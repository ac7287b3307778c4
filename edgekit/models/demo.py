"""The demo: a three-exit residual CNN for 32x32 digits, trained reproducibly on the shipped splits.

Stage costs grow with depth (about 4, 6 and 83 MFLOPs) so that early exit has something to save.
It is trained on the fit part of the calib split only (edgekit.fingerprint.holdout_split): the held-out quarter is
what `convert --max-accuracy-drop` fits thresholds on when no --threshold-data is given, so those thresholds
are fitted on samples the model never saw. What it was trained on is recorded next to it
(demo_digits.keras.training.json), so that convert warns when threshold data overlaps it. Retrain (about a minute
on 2 cores) and overwrite the shipped file with:

    python -m edgekit.models.demo
"""
import os
from typing import Tuple

import numpy as np

ASSET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "demo_digits.keras")
CALIB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "calibration")
SEED = 7


def _res_block(keras, x, channels: int, name: str):
    y = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name=name + "_conv1")(x)
    y = keras.layers.Conv2D(channels, 3, padding="same", name=name + "_conv2")(y)
    y = keras.layers.Add(name=name + "_add")([x, y])
    return keras.layers.ReLU(name=name + "_out")(y)


def build_demo_model(classes: int = 10):
    import keras

    inp = keras.Input((32, 32, 1), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="stem")(inp)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="down1")(x)
    x = _res_block(keras, x, 16, "block1")
    h = keras.layers.AveragePooling2D(4, name="exit0_pool")(x)
    e0 = keras.layers.Dense(classes, name="exit0")(keras.layers.Flatten(name="exit0_flat")(h))

    x = keras.layers.Conv2D(48, 3, strides=2, padding="same", activation="relu", name="down2")(x)
    x = _res_block(keras, x, 48, "block2")
    h = keras.layers.AveragePooling2D(2, name="exit1_pool")(x)
    e1 = keras.layers.Dense(classes, name="exit1")(keras.layers.Flatten(name="exit1_flat")(h))

    x = keras.layers.Conv2D(128, 3, padding="same", activation="relu", name="widen3")(x)
    x = _res_block(keras, x, 128, "block3")
    x = _res_block(keras, x, 128, "block4")
    h = keras.layers.GlobalAveragePooling2D(name="exit2_pool")(x)
    e2 = keras.layers.Dense(classes, name="exit2")(h)
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


def train(out_path: str = ASSET, epochs: int = 60) -> None:
    import keras

    from edgekit.fingerprint import holdout_split, training_record, write_sidecar

    (x_all, y_all), (xv, yv), (xt, yt) = seeded_splits(SEED)
    fit, _ = holdout_split(x_all, y_all)
    x, y = x_all[fit], y_all[fit]
    model = build_demo_model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=[loss, loss, loss],
                  metrics=[["accuracy"], ["accuracy"], ["accuracy"]])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=12, restore_best_weights=True)
    model.fit(x, [y, y, y], validation_data=(xv, [yv, yv, yv]), epochs=epochs, batch_size=32,
              callbacks=[stop], verbose=2)
    for name, logits in zip(("exit0", "exit1", "exit2"), model.predict(xt, verbose=0)):
        print("{} test accuracy {:.4f}".format(name, float(np.mean(np.argmax(logits, 1) == yt))))
    model.save(out_path)
    write_sidecar(out_path, training_record([
        {"role": "trained", "x": x, "y": y, "path": "calibration/digits_calib.npz (fit part)"},
        {"role": "early stopping", "x": xv, "y": yv, "path": "calibration/digits_val.npz"}]))
    print("saved", out_path)


if __name__ == "__main__":
    train()
