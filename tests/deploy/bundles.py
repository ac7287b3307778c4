"""Real bundles for the deploy tests: two tiny early-exit models converted to TFLite, manifests by hand.

The .tflite files are made once by TensorFlow in a subprocess and cached (pytest cache dir), so later runs
do not import TensorFlow at all.
"""
import json
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np

from edgekit.manifest import ExitSpec, InputSpec, Manifest, StageSpec, TensorSpec, sha256_file

IN_DIM, FEAT, HIDDEN, CLASSES = 64, 512, 256, 4
CACHE_VERSION = "deploy-tflite-v1"

_CONVERT = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, tensorflow as tf
out, seed = sys.argv[1], int(sys.argv[2])
IN_DIM, FEAT, HIDDEN, CLASSES = %d, %d, %d, %d
keras.utils.set_random_seed(seed)
x = keras.Input((IN_DIM,), name="x")
f = keras.layers.Dense(FEAT, activation="relu", name="feat")(x)
m0 = keras.Model(x, {"c_feat": f, "exit0": keras.layers.Dense(CLASSES, name="head0")(f)})
c = keras.Input((FEAT,), name="c_feat")
h = keras.layers.Dense(HIDDEN, activation="relu", name="hidden")(c)
m1 = keras.Model(c, {"exit1": keras.layers.Dense(CLASSES, name="head1")(h)})
for k, m in enumerate((m0, m1)):
    blob = tf.lite.TFLiteConverter.from_keras_model(m).convert()
    with open(os.path.join(out, "seed%%d_stage_%%d.tflite" %% (seed, k)), "wb") as fh:
        fh.write(blob)
""" % (IN_DIM, FEAT, HIDDEN, CLASSES)


def tflite_stages(cache_dir: Path, seeds=(0, 1)) -> dict:
    """{seed: [stage_0 bytes path, stage_1 path]}, converting with TensorFlow only when not cached."""
    out = {}
    for seed in seeds:
        paths = [cache_dir / "seed{}_stage_{}.tflite".format(seed, k) for k in range(2)]
        if not all(p.is_file() and p.stat().st_size > 0 for p in paths):
            subprocess.run([sys.executable, "-c", _CONVERT, str(cache_dir), str(seed)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        out[seed] = paths
    return out


def write_bundle(directory: Path, stage_files: List[Path], target: str = "host-x86_64", threshold: float = 0.6,
                 model_name: str = "tiny-exit") -> Manifest:
    directory.mkdir(parents=True, exist_ok=True)
    stages = []
    specs = [((TensorSpec("x", (None, IN_DIM)),), (TensorSpec("c_feat", (None, FEAT)), TensorSpec("exit0", (None, CLASSES))),
              "exit0", threshold),
             ((TensorSpec("c_feat", (None, FEAT)),), (TensorSpec("exit1", (None, CLASSES)),), "exit1", 0.0)]
    for k, (src, (ins, outs, exit_name, th)) in enumerate(zip(stage_files, specs)):
        dest = directory / "stage_{}.tflite".format(k)
        dest.write_bytes(Path(src).read_bytes())
        stages.append(StageSpec(index=k, file=dest.name, sha256=sha256_file(str(dest)), precision="float32",
                                inputs=ins, outputs=outs, exit=ExitSpec(exit_name, th, CLASSES),
                                size_bytes=dest.stat().st_size))
    manifest = Manifest(model_name=model_name, target=target, input=InputSpec("x", (None, IN_DIM)),
                        stages=tuple(stages), edgekit_version="test")
    (directory / "manifest.json").write_text(manifest.to_json())
    (directory / "report.json").write_text(json.dumps({"note": "test bundle"}))
    return manifest


def write_data(path: Path, n: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.normal(size=(n, IN_DIM)).astype(np.float32), y=rng.integers(0, CLASSES, n))
    return path
