"""Build the shipped calibration splits from the digits data set bundled with scikit-learn.

Each 8x8 image (values 0..16) is upsampled to 32x32 by repeating every pixel 4x4 and scaled to [0, 1];
x has shape (N, 32, 32, 1) float32 and y holds the class (0..9) as int64. The splits are stratified
with a fixed seed: 60% calib (training and quantization ranges), 20% val, 20% test.
The ONNX fixtures take 3-channel NCHW images: digits_calib_nchw.npz and digits_test_nchw.npz hold the calib and
test splits repeated over three channels, x of shape (N, 3, 32, 32) (`nchw_rgb`).

    python calibration/build_digits.py
"""
import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20261129


def nchw_rgb(x: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 1) -> (N, 3, 32, 32): the gray image in each of three channels, channels first."""
    return np.repeat(np.transpose(x, (0, 3, 1, 2)), 3, axis=1).astype(np.float32)


def main() -> None:
    digits = load_digits()
    x = np.kron(digits.images, np.ones((4, 4))).astype(np.float32) / 16.0
    x = x[..., None]
    y = digits.target.astype(np.int64)
    x_calib, x_rest, y_calib, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=SEED)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest,
                                                    random_state=SEED)
    for name, xs, ys in (("calib", x_calib, y_calib), ("val", x_val, y_val), ("test", x_test, y_test)):
        path = os.path.join(HERE, "digits_{}.npz".format(name))
        np.savez_compressed(path, x=xs, y=ys)
        print("{}: x {} y {}".format(path, xs.shape, ys.shape))
        if name in ("calib", "test"):
            path = os.path.join(HERE, "digits_{}_nchw.npz".format(name))
            np.savez_compressed(path, x=nchw_rgb(xs), y=ys)
            print("{}: x {} y {}".format(path, nchw_rgb(xs).shape, ys.shape))


if __name__ == "__main__":
    main()
