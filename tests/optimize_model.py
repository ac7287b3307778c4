"""A tiny two-exit digits model for the optimizer's tests: small enough that one conversion takes seconds.

Made once per session in a child process (TensorFlow stays out of tests that only read the cache), trained for a
few epochs on the calibration split so that accuracy means something.
"""
import subprocess
import sys
from pathlib import Path

_BUILD = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, numpy as np
keras.utils.set_random_seed(0)
d = np.load(sys.argv[2])
x = keras.Input((32, 32, 1), name="image")
h = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv1")(x)
h = keras.layers.MaxPooling2D(2, name="pool1")(h)
e0 = keras.layers.Dense(10, name="exit0")(keras.layers.GlobalAveragePooling2D(name="gap0")(h))
g = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(h)
e1 = keras.layers.Dense(10, name="exit1")(keras.layers.Flatten(name="flat")(g))
m = keras.Model(x, [e0, e1], name="tiny_opt")
m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
m.fit(d["x"], [d["y"], d["y"]], epochs=4, batch_size=64, verbose=0)
m.save(sys.argv[1])
"""


def tiny_model(path: Path, calib: str) -> Path:
    if not path.is_file():
        subprocess.run([sys.executable, "-c", _BUILD, str(path), calib], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    return path
