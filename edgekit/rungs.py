"""The precision rungs: the one table every rung list, width and colour in edgekit is derived from.

Shared layer (stdlib only, Python 3.8, ships to the board with manifest.py): no TensorFlow here. How a rung is
built lives in convert/quantize.py, keyed by the `converter` mode named here.
"""
from typing import Dict, NamedTuple, Optional, Tuple


class Rung(NamedTuple):
    name: str
    weight_bits: int
    activation_bits: int                # 32: float activations
    stage_only: bool                    # only a whole stage can take it (a converter mode, no per-op recipe)
    converter: Optional[str]            # the TFLite converter's stage-wide mode; None: per-op recipes only
    calibration: bool                   # needs representative data (activation ranges) to build
    color: str                          # its colour in the precision plot
    ops: Optional[Tuple[str, ...]]      # the ops its per-op recipe covers (None: every op with a recipe)
    fallback: Optional[str]             # a whole-stage build puts an op this rung has no kernel for at this rung
                                        # (None: such an op fails the build)
    description: str
    form: str                           # the kernel form behind it (the per-layer table's "form" column)

    @property
    def integer(self) -> bool:
        """Integer activations: the rung has an ai-edge-quantizer per-op recipe."""
        return self.activation_bits < 32

    @property
    def activation_width(self) -> int:
        """Bits of the integer activations an op at this rung reads; 0 for float (reads any width)."""
        return self.activation_bits if self.integer else 0


RANGE_SAMPLES = 200     # calibration samples a rung that needs calibration reads its activation ranges from

# lowest first: the ladder
RUNGS = (
    Rung("int4w", 4, 8, False, None, True, "#4c72b0", ("CONV_2D", "FULLY_CONNECTED"), "int8",
         "4-bit weights, 8-bit activations (ai-edge-quantizer recipe)",
         "4-bit channelwise weights, static int8 activations (ai-edge-quantizer static_wi4_ai8)"),
    Rung("int8", 8, 8, False, "int8", True, "#55a868", None, "float32",
         "8-bit weights and activations", "8-bit channelwise weights, static int8 activations"),
    Rung("int16x8", 8, 16, False, "int16x8", True, "#c44e52", None, None,
         "8-bit weights, 16-bit activations (reference kernels, slow)", "8-bit weights, static 16-bit activations"),
    Rung("float16", 16, 32, True, "float16", False, "#8172b2", None, None,
         "fp16 weights; fp16 compute only on ARMv8.2 FP16 cores", "fp16 weights dequantized to float32 at load"),
    Rung("float32", 32, 32, False, "float32", False, "#937860", None, None, "float", "float32"),
)
RUNG: Dict[str, Rung] = {r.name: r for r in RUNGS}
LADDER = tuple(r.name for r in RUNGS)
LAYER_RUNGS = tuple(r.name for r in RUNGS if not r.stage_only)      # rungs one op can take inside a mixed stage
# whole-stage precisions (a converter mode each): floats widest first, then integers narrowest first
PRECISIONS = tuple(r.name for r in sorted((r for r in RUNGS if r.converter),
                                          key=lambda r: (r.integer, r.activation_bits if r.integer else -r.weight_bits)))
MIXED = "mixed"                                                        # a stage with a rung per op
STAGE_PRECISIONS = PRECISIONS + (MIXED,)
INT4W, INT8, INT16X8, FLOAT16, FLOAT32 = LADDER                      # the rungs code names by role
