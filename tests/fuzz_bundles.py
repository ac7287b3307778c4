"""Fuzz target: mutate a real bundle (bytes of its stage files, fields of its manifest) and load and run it.

    python tests/fuzz_bundles.py BUNDLE [--examples N] [--backend tflite_runtime] [--seed S] [--log FILE]

Each example copies BUNDLE, applies hypothesis-drawn mutations, then builds an EarlyExitRunner and runs two
samples. Allowed outcomes: it runs (outputs of the right shape) or it raises an EdgekitError. Anything else
fails the example (hypothesis shrinks it and prints it); a crash of the interpreter ends this process, and the
--log file names the example that did it. Stage mutations usually rewrite the manifest's sha256 too, so that
the flatbuffer checks, not the checksum, have to catch them. Prints one JSON summary line.
"""
import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
import tempfile

import numpy as np
from hypothesis import given, seed, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.runtime import EarlyExitRunner  # noqa: E402

WORDS = [0, 1, 2, 3, 4, 7, 8, 16, 255, 0x7FFF, 0xFFFF, 1 << 20, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFC, 0xFFFFFFFF]
JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2 ** 40), 2 ** 40) | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=6)


def _leaves(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, prefix + (i,))
    yield prefix


def _reason(message: str) -> str:
    """A short class of a refusal, for the summary: the message without paths, numbers and quoted values."""
    if "not a valid TFLite flatbuffer: " in message:
        return "flatbuffer: " + message.split("flatbuffer: ")[-1].split(" ")[0].split("[")[0]
    if "not a TFLite model" in message:
        return "not a TFLite model"
    for key in ("stage file altered", "signature inputs", "in the file, the manifest says", "failed in",
                "cannot be loaded by", "non-finite", "manifest"):
        if key in message:
            return key
    return message.split(":")[0][:40]


def mutate_stage(data: bytes, draw) -> bytes:
    """Byte edits biased to the flatbuffer's tables (the first and last few KiB), where they matter."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["byte", "word", "truncate", "insert", "zero-run"]))
        near_end = draw(st.booleans())
        span = min(len(b), 8192)
        pos = draw(st.integers(0, max(span - 1, 0)))
        pos = len(b) - 1 - pos if near_end else pos
        if not b:
            break
        if kind == "byte":
            b[pos] = draw(st.integers(0, 255))
        elif kind == "word" and pos + 4 <= len(b):
            struct.pack_into("<I", b, pos & ~3, draw(st.sampled_from(WORDS)))
        elif kind == "truncate":
            del b[draw(st.integers(0, len(b) - 1)):]
        elif kind == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            b[pos:pos + draw(st.integers(1, 64))] = bytes(min(64, len(b) - pos))
    return bytes(b)


class Fuzz:
    def __init__(self, bundle: str, backend: str, log: str) -> None:
        self.bundle, self.backend, self.log = bundle, backend, log
        with open(os.path.join(bundle, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.leaves = [p for p in _leaves(self.manifest) if p]
        self.counts = {"examples": 0, "ran": 0, "refused": 0}
        self.reasons = {}   # type: dict
        self.work = tempfile.mkdtemp(prefix="edgekit-fuzz-")

    def example(self, draw) -> None:
        target = os.path.join(self.work, "b")
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.bundle, target)
        manifest = json.loads(json.dumps(self.manifest))
        notes = []
        if draw(st.booleans()):
            k = draw(st.integers(0, len(manifest["stages"]) - 1))
            path = os.path.join(target, manifest["stages"][k]["file"])
            with open(path, "rb") as f:
                data = mutate_stage(f.read(), draw)
            with open(path, "wb") as f:
                f.write(data)
            if draw(st.integers(0, 9)) > 0:
                manifest["stages"][k]["sha256"] = hashlib.sha256(data).hexdigest()
            notes.append("stage {} -> {} bytes, sha {}".format(k, len(data), hashlib.sha256(data).hexdigest()[:12]))
        if not notes or draw(st.booleans()):
            path = draw(st.sampled_from(self.leaves))
            parent = manifest
            for key in path[:-1]:
                parent = parent[key]
            value = draw(JSON)
            parent[path[-1]] = value
            notes.append("manifest {} = {!r}".format(list(path), value)[:300])
        with open(os.path.join(target, "manifest.json"), "w") as f:
            json.dump(manifest, f)
        with open(self.log, "a") as f:              # written before the attempt: a crash leaves it as the last line
            f.write(json.dumps(notes) + "\n")
        self.counts["examples"] += 1
        self.attempt(target)

    def attempt(self, target: str) -> None:
        try:
            runner = EarlyExitRunner(target, backend=self.backend)
            shape = tuple(d or 2 for d in runner.manifest.input.shape)
            res = runner.run(np.full(shape, 0.5, np.float32))
        except EdgekitError as exc:
            self.counts["refused"] += 1
            why = _reason(str(exc))
            self.reasons[why] = self.reasons.get(why, 0) + 1
            return
        assert res.outputs.shape[0] == shape[0] and res.predictions.shape == (shape[0],)
        self.counts["ran"] += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--examples", type=int, default=100)
    ap.add_argument("--backend", default=None)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--log", default=os.devnull)
    args = ap.parse_args()
    fuzz = Fuzz(args.bundle, args.backend, args.log)

    @seed(args.seed)
    @settings(max_examples=args.examples, deadline=None, database=None, suppress_health_check=list(
        __import__("hypothesis").HealthCheck))
    @given(st.data())
    def run(data):
        fuzz.example(data.draw)

    try:
        run()
    finally:
        shutil.rmtree(fuzz.work, ignore_errors=True)
    print(json.dumps(dict(fuzz.counts, backend=args.backend, reasons=fuzz.reasons)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
