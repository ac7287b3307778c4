"""What the converter's flatbuffer passes share when they read or edit a .tflite with TensorFlow's object API
(tensorflow.lite.tools.flatbuffer_utils): tensor-type and operator codes, names as text, an op's builtin code."""
from typing import Any

FLOAT32, INT16, INT8 = 0, 7, 9          # schema.TensorType
QUANTIZE, DEQUANTIZE = 114, 6           # schema.BuiltinOperator


def text(v: Any) -> str:
    """A name from the object API (bytes) as str."""
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def opcode(model: Any, op: Any) -> int:
    """The builtin operator code of op (the larger of the current and the deprecated field)."""
    c = model.operatorCodes[op.opcodeIndex]
    return max(c.builtinCode, c.deprecatedBuiltinCode)
