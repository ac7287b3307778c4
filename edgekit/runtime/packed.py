"""Stage files that store 4-bit weights nibble-packed, and the int8 model the interpreter is built from.

Adaptive precision may give a convolution 4-bit weights kept in an INT8 tensor (values in [-8, 7]): the model is a
plain int8 model that runs at int8 speed, and the bundle stores each such weight buffer at half its bytes, two
values to a byte, the first in the low nibble. The manifest lists per stage the regions (offset and length in the
unpacked model, bytes) and the sha256 and size of the unpacked model; the stage file is the unpacked model with each
region replaced by its packed form. Restoring it is numpy only, no flatbuffer parsing: the runtime verifies the
stored bytes against the manifest, restores the regions, and verifies the restored model's sha256 before any
interpreter exists. Memory after load is the int8 model's; only the bytes on disk and in transfer shrink.

numpy + standard library, Python 3.8 syntax (this file runs on the board).
"""
from typing import Sequence, Tuple

import numpy as np

from edgekit.manifest import PACKED_FORMATS

FORMAT = PACKED_FORMATS[0]      # signed 4-bit values, two per byte, the first in the low nibble

Region = Tuple[int, int]        # (offset, length) in the unpacked model, bytes


def packed_length(length: int) -> int:
    return (length + 1) // 2


def stored_size(size: int, regions: Sequence[Region]) -> int:
    """Bytes of the stage file of an unpacked model of `size` bytes with `regions` packed."""
    return size - sum(n for _, n in regions) + sum(packed_length(n) for _, n in regions)


def pack(values: bytes) -> bytes:
    """int8 bytes, each in [-8, 7], two to a byte, the first in the low nibble (ValueError otherwise)."""
    v = np.frombuffer(values, np.int8)
    if v.size and (int(v.min()) < -8 or int(v.max()) > 7):
        raise ValueError("values outside [-8, 7] cannot be stored in 4 bits")
    nib = v.view(np.uint8) & np.uint8(0x0F)
    if nib.size % 2:
        nib = np.concatenate([nib, np.zeros(1, np.uint8)])
    return (nib[0::2] | (nib[1::2] << np.uint8(4))).astype(np.uint8).tobytes()


def unpack(packed: bytes, length: int) -> bytes:
    """pack's inverse: `length` int8 bytes from ceil(length / 2) packed ones."""
    b = np.frombuffer(packed, np.uint8)
    out = np.empty(2 * b.size, np.uint8)
    out[0::2] = b & np.uint8(0x0F)
    out[1::2] = b >> np.uint8(4)
    out = (out ^ np.uint8(8)) - np.uint8(8)          # sign-extend the nibble (two's complement, mod 256)
    return out[:length].tobytes()


def pack_regions(model: bytes, regions: Sequence[Region]) -> bytes:
    """The stage file: `model` with each region (sorted, not overlapping) packed."""
    parts, at = [], 0
    for off, n in regions:
        parts += [model[at:off], pack(model[off:off + n])]
        at = off + n
    parts.append(model[at:])
    return b"".join(parts)


def unpack_regions(stored: bytes, regions: Sequence[Region], size: int) -> bytes:
    """The unpacked model of `size` bytes from a stage file; ValueError when the file's length does not fit the
    regions (the manifest's checks have made sure the regions are sorted, apart and inside `size`)."""
    if len(stored) != stored_size(size, regions):
        raise ValueError("it has {} bytes; its packed regions need {}".format(len(stored), stored_size(size, regions)))
    out = bytearray(size)
    src = dst = 0
    for off, n in regions:
        plain = off - dst
        out[dst:off] = stored[src:src + plain]
        src += plain
        out[off:off + n] = unpack(stored[src:src + packed_length(n)], n)
        src += packed_length(n)
        dst = off + n
    out[dst:] = stored[src:]
    return bytes(out)
