"""Which kernel runs each op of a built stage, and the kernel forms behind each rung.

LiteRT's default XNNPACK delegate takes the ops it has a fast kernel for and leaves the rest to the builtin
kernels. Measured with ai-edge-litert 2.1.0: 4-bit weights run on XNNPACK for FULLY_CONNECTED (static int8
activations; faster than int8 at batch 1), while a CONV_2D with 4-bit weights, static or with dynamically
quantized activations, falls back to the builtin kernel, several times slower than XNNPACK's int8 convolution.
So the kernel is read from the interpreter, per op, for every build that is timed. The delegate's source agrees:
its FULLY_CONNECTED takes 4-bit channelwise filters with static int8 or dynamically quantized float inputs (an
even number of input channels), its CONV_2D only float32 or 8-bit channelwise filters (dynamic activations only
with 8-bit ones), so no INT4-typed convolution runs there. Adaptive precision therefore keeps a 4-bit convolution
as 4-bit values in an int8 filter, which XNNPACK runs at int8 speed, and the bundle stores it packed (fc4.py,
convert/pack.py).
"""
from typing import Dict, List, Set

from edgekit.convert.precision.graph import read_ops
from edgekit.rungs import RUNGS
from edgekit.runtime.interpreter import load_backend

FORMS: Dict[str, str] = {r.name: r.form for r in RUNGS}
XNNPACK = "xnnpack"
BUILTIN = "builtin"


def _partition(details: List[Dict], producer: Dict[int, int], node: Dict) -> Set[int]:
    """Indices of the ops a delegate node replaced: walk back from its outputs to its inputs."""
    stop = set(int(t) for t in node["inputs"])
    seen: Set[int] = set()
    todo = [int(t) for t in node["outputs"]]
    while todo:
        t = todo.pop()
        op = producer.get(t)
        if t in stop or op is None or op in seen:
            continue
        seen.add(op)
        todo.extend(int(i) for i in details[op]["inputs"] if int(i) >= 0)
    return seen


def op_kernels(interp) -> Dict[int, str]:
    """Op index -> XNNPACK or BUILTIN for an interpreter with tensors allocated (delegates applied)."""
    details = interp._get_ops_details()       # noqa: SLF001 - the only view of the delegated partitions
    originals = [d for d in details if d["op_name"] != "DELEGATE"]
    producer = {int(t): d["index"] for d in originals for t in d["outputs"]}
    delegated: Set[int] = set()
    for d in details:
        if d["op_name"] == "DELEGATE":
            delegated |= _partition(details, producer, d)
    return {d["index"]: XNNPACK if d["index"] in delegated else BUILTIN for d in originals}


def kernels_by_index(blob: bytes) -> Dict[int, str]:
    """Op index -> the kernel that runs it with 1 thread here."""
    interp = load_backend().interpreter(model_content=blob, num_threads=1)
    interp.allocate_tensors()
    return op_kernels(interp)


def kernels_by_scope(blob: bytes) -> Dict[str, str]:
    """Op scope (first output tensor name) -> the kernel that runs it with 1 thread here."""
    by_index = kernels_by_index(blob)
    return {o.scope: by_index.get(o.index, BUILTIN) for o in read_ops(blob)}
