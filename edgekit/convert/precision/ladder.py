"""What a target board runs of the precision ladder (the rung table: edgekit/rungs.py).

A target runs the rungs its profile lists in `precisions`; int4w needs ai-edge-quantizer at conversion time, int8
on the target, and a runtime whose kernels read 4-bit weights (checked here by running such a model, see
`int4_status`).
"""
import functools
import importlib.util
from typing import Dict, Optional, Tuple

from edgekit.convert.precision.recipes import probe_int4
from edgekit.errors import ConfigError
from edgekit.rungs import FLOAT32, INT4W, INT8, LADDER, RUNG


def weight_bytes(rung: str, params: int) -> float:
    """Bytes of a layer's weights at a rung (int16x8 keeps 8-bit weights)."""
    return params * RUNG[rung].weight_bits / 8.0


def rank(rung: str) -> int:
    return LADDER.index(rung)


def has_ai_edge_quantizer() -> bool:
    return importlib.util.find_spec("ai_edge_quantizer") is not None


@functools.lru_cache(maxsize=None)
def int4_status() -> Tuple[bool, str]:
    """(usable, why): whether 4-bit weights can be produced here and run by this machine's interpreters."""
    if not has_ai_edge_quantizer():
        return False, "ai-edge-quantizer is not installed (pip install -c constraints.txt -e '.[convert]')"
    return probe_int4()


def target_rungs(target, wanted: Optional[Tuple[str, ...]] = None) -> Tuple[Tuple[str, ...], Dict[str, str]]:
    """The ladder rungs usable for `target` (lowest first) and a note for each rung left out.

    wanted: the user's --rungs; a rung the target does not run is an error naming those it does."""
    notes: Dict[str, str] = {}
    runs = [r for r in LADDER if r in target.precisions]
    ok4, why4 = int4_status()
    if INT8 in target.precisions:
        if not ok4:
            notes[INT4W] = "left out: " + why4
        elif target.runtime_package == "tflite-runtime" and not _tflite_runtime_int4():
            notes[INT4W] = "left out: tflite-runtime 2.14 on {} cannot run 4-bit weights".format(target.name)
        else:
            runs.insert(0, INT4W)
    if not has_ai_edge_quantizer():
        notes["mixed int16x8"] = "int16x8 only for whole stages: ai-edge-quantizer is not installed"
    if wanted is not None:
        for r in wanted:
            if r not in LADDER:
                raise ConfigError("unknown rung {!r}; the ladder is: {}".format(r, ", ".join(LADDER)))
            if r not in runs:
                raise ConfigError("rung {!r} is not available on {}; it runs: {}{}".format(
                    r, target.name, ", ".join(runs), " ({})".format(notes[r]) if r in notes else ""))
        if FLOAT32 not in wanted:
            raise ConfigError("rungs {} must include float32 (the fallback for ops without a quantized "
                              "kernel)".format(",".join(wanted)))
        runs = [r for r in runs if r in wanted]
    if FLOAT32 not in runs:
        raise ConfigError("target {} lists no float32 precision; adaptive precision needs it as the fallback; "
                          "it runs: {}".format(target.name, ", ".join(runs)))
    return tuple(runs), notes


@functools.lru_cache(maxsize=None)
def _tflite_runtime_int4() -> bool:
    return probe_int4(backend="tflite_runtime")[0]


def parse_size(text: str) -> int:
    """'800K', '1.5M', '720000' -> bytes (K = 1024)."""
    s = str(text).strip().upper().rstrip("B")
    mult = 1
    if s and s[-1] in "KMG":
        mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}[s[-1]]
        s = s[:-1]
    try:
        value = float(s) * mult
    except ValueError:
        raise ConfigError("size budget {!r} is not a size; allowed: bytes like 720000, 800K or 1.5M".format(text))
    if not value > 0:
        raise ConfigError("size budget {!r} must be above 0".format(text))
    return int(value)
