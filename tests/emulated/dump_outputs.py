"""Dump a bundle's raw outputs on some data: python dump_outputs.py BUNDLE DATA OUT.npz [--interpreter NAME]

Runs on the emulated arm64 board and on the host with the same files, so the two can be compared number by
number. numpy + edgekit's runtime only; Python 3.8 syntax.

OUT.npz holds, for every stage k at full depth, each signature output as "full/<k>/<name>", and for the
early-exit run "early/outputs", "early/exits" and "early/predictions"; "interpreter" names the backend used.
"""
import argparse
import os
import sys
import time

import numpy as np

from edgekit.data import load_data
from edgekit.runtime import EarlyExitRunner
from edgekit.runtime.guard import load_checked
from edgekit.runtime.interpreter import BACKENDS, load_backend


def full_depth_outputs(bundle, x, backend_name):
    """Every signature output of every stage, with all samples carried through every stage."""
    manifest, blobs, _ = load_checked(bundle, verify=True)      # the stage models as the runtime loads them
    backend = load_backend(backend_name)
    feed = {manifest.input.name: x.astype(np.float32, copy=False)}
    out = {}
    for k, (st, blob) in enumerate(zip(manifest.stages, blobs)):
        interp = backend.interpreter(model_content=blob, num_threads=1)
        res = interp.get_signature_runner()(**feed)
        for name, value in res.items():
            out["full/{}/{}".format(k, name)] = np.array(value)
        feed = {t.name: res[t.name] for t in st.carried}
    return out, "{} {}".format(backend.name, backend.version)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--interpreter", choices=BACKENDS, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    x = load_data(args.data).x
    arrays, backend = full_depth_outputs(args.bundle, x, args.interpreter)
    runner = EarlyExitRunner(args.bundle, backend=args.interpreter, num_threads=1)
    res = runner.run(x)
    arrays["early/outputs"] = np.asarray(res.outputs)
    arrays["early/exits"] = np.asarray(res.exits)
    arrays["early/predictions"] = np.asarray(res.predictions)
    arrays["interpreter"] = np.array(backend)
    tmp = args.out + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, args.out)
    print("{}: {} arrays, {:.2f} s".format(backend, len(arrays), time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
