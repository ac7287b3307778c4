"""A plain single-exit CNN for 32x32 digits: the backbone that `--exits auto:3` makes dynamic.

Three VGG-style blocks of 3x3 convolution + batch norm + ReLU (2 x 32 channels at 32x32, 3 x 56 at 16x16,
2 x 96 at 8x8, max pooling between blocks), global average pooling and one dense classifier: no exits of its
own. About 73 MFLOPs spread over the depth (27% up to the first pooling, 77% up to the second) in 216k
parameters (a file under 1 MB); 99.4% on the digits test split. Retrain (about 60 epochs, minutes on 2 cores)
and overwrite the shipped file with:

    python -m edgekit.models.digits_cnn
"""
import os

import numpy as np

from edgekit.models.demo import seeded_splits

ASSET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "digits_cnn.keras")
SEED = 11
BLOCKS = ((32, 2), (56, 3), (96, 2))     # (channels, 3x3 convolutions) at 32x32, 16x16, 8x8


def build_digits_cnn(classes: int = 10):
    import keras

    inp = keras.Input((32, 32, 1), name="image")
    x = inp
    for b, (width, convs) in enumerate(BLOCKS, start=1):
        if b > 1:
            x = keras.layers.MaxPooling2D(2, name="pool{}".format(b - 1))(x)
        for c in range(1, convs + 1):
            x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="conv{}_{}".format(b, c))(x)
            x = keras.layers.BatchNormalization(name="bn{}_{}".format(b, c))(x)
            x = keras.layers.ReLU(name="relu{}_{}".format(b, c))(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inp, out, name="digits_cnn")


def train(out_path: str = ASSET, epochs: int = 60) -> None:
    import keras

    (x, y), (xv, yv), (xt, yt) = seeded_splits(SEED)
    model = build_digits_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True)
    model.fit(x, y, validation_data=(xv, yv), epochs=epochs, batch_size=32, callbacks=[stop], verbose=2)
    acc = float(np.mean(np.argmax(model.predict(xt, verbose=0), 1) == yt))
    print("test accuracy {:.4f}".format(acc))
    plain = build_digits_cnn()                  # an uncompiled copy: no optimizer state in the file
    plain.set_weights(model.get_weights())
    plain.save(out_path)
    write_record(out_path, (x, y), (xv, yv))
    print("saved", out_path, os.path.getsize(out_path), "bytes")


def write_record(out_path: str, train, val) -> str:
    """The training record next to the model: trained on the whole calib split, early stopping on val (so
    thresholds fitted on any part of the calib split are warned about)."""
    from edgekit.fingerprint import training_record, write_sidecar

    return write_sidecar(out_path, training_record([
        {"role": "trained", "x": train[0], "y": train[1], "path": "calibration/digits_calib.npz"},
        {"role": "early stopping", "x": val[0], "y": val[1], "path": "calibration/digits_val.npz"}]))


if __name__ == "__main__":
    train()
