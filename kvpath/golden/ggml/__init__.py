"""The ggml block formats (q8_0, q4_0, q4_1): the spec in integer arithmetic, byte-identical to gguf.

Each format's module (``q8_0``, ``q4_0``, ``q4_1``) is its normative definition for FP16 elements:
``header`` (the block unit: scale fields and lane constants), ``lane`` (the exact per-element
chain), ``dequantize_blocks``. ``bf16`` holds the same for BF16 input, ``dequant_bf16`` BF16 output,
``fast`` the NumPy-speed evaluation of the lanes that ``quantize_blocks`` uses (tested equal to
``lane`` element for element), and ``dequant_steps`` the dequantizer RTL's arithmetic step by step.
This module is the family's entry for ``kvpath.golden``'s frame (``config.FAMILIES``).
"""

from __future__ import annotations

import numpy as np

from kvpath.config import get_format, load
from kvpath.golden.ggml import bf16, dequant_bf16, fast


def _unit(fmt: str):
    f = get_format(fmt)
    if f.family != "ggml":
        raise ValueError(f"{f.name} is not a ggml format")
    return f, load(f.golden)


def block_dtype(fmt: str) -> np.dtype:
    """A structured dtype with one field per ggml block field; its itemsize is the block size."""
    f = get_format(fmt)
    dt = np.dtype([*((name, f"<u{f.scale_bytes}") for name in f.scale_fields), ("qs", "u1", (f.code_bytes,))])
    assert dt.itemsize == f.block_bytes
    return dt


def _assemble(f, hdr, codes) -> np.ndarray:
    # Filling a structured array field by field copies long runs; slicing columns of a
    # (nb, block_bytes) byte array would loop per block.
    out = np.empty(hdr.shape[0], block_dtype(f.name))
    for i, name in enumerate(f.scale_fields):
        out[name] = hdr[:, i]
    out["qs"] = codes
    return out.view(np.uint8).reshape(hdr.shape[0], f.block_bytes)


_FAST = {
    "q8_0": lambda bits, c, unit, ws: fast.q8_0_codes(bits, c, ws),
    "q4_0": lambda bits, c, unit, ws: fast.q4_0_codes(bits, c, unit.lane, ws),
    "q4_1": lambda bits, c, unit, ws: fast.q4_1_codes(bits, c, unit.lane, ws),
}


def quantize_blocks(bits: np.ndarray, fmt: str, elem: str = "fp16", ws: fast.Workspace | None = None) -> np.ndarray:
    """(nb, 32) sanitized element patterns (uint16) -> (nb, block_bytes) uint8, gguf's byte layout."""
    f, unit = _unit(fmt)
    if elem == "bf16":
        return bf16.quantize_blocks(bits, f.name)
    hdr, const = unit.header(bits)
    return _assemble(f, hdr, unit.pack(_FAST[f.name](bits, const, unit, ws or fast.Workspace())))


def quantize_blocks_exact(bits: np.ndarray, fmt: str) -> np.ndarray:
    """(nb, 32) sanitized FP16 patterns -> (nb, block_bytes): the spec, every lane evaluated literally."""
    f, unit = _unit(fmt)
    hdr, const = unit.header(bits)
    return _assemble(f, hdr, unit.pack(unit.lane(bits, const)))


def dequantize_blocks(rows: np.ndarray, fmt: str, elem: str = "fp16"):
    """(nb, block_bytes) uint8 -> ((nb, 32) uint16 element patterns, n_saturated, n_nonfinite_scale)."""
    f, unit = _unit(fmt)
    if elem == "bf16":
        return dequant_bf16.dequantize_blocks(rows, f.name)
    return unit.dequantize_blocks(rows)
