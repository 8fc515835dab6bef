"""Shape checks, sanitizing and chunking around the per-format block functions."""

from __future__ import annotations

import importlib

import ml_dtypes
import numpy as np

from kvpath.config import BLOCK_ELEMS, get_format

from kvpath.golden.ggml import fast, q4_0, q4_1, q8_0
from kvpath.golden.num import bf16, fp16

_UNITS = {"q8_0": q8_0, "q4_0": q4_0, "q4_1": q4_1}
_FAST = {
    "q8_0": lambda bits, c, ws: fast.q8_0_codes(bits, c, ws),
    "q4_0": lambda bits, c, ws: fast.q4_0_codes(bits, c, q4_0.lane, ws),
    "q4_1": lambda bits, c, ws: fast.q4_1_codes(bits, c, q4_1.lane, ws),
}
# quantize runs sanitize -> header -> codes -> pack on this many blocks at a time (1 Mi
# elements, 2 MiB of input): large enough that the header's ~100 NumPy calls per chunk cost
# little, small enough for its per-block arrays (256 KiB each) to stay in cache.
CHUNK_BLOCKS = 32768
# dequantize's temporaries are per element (int64), so it takes smaller bites.
DEQUANT_CHUNK_BLOCKS = 4096


# Element type name <-> NumPy dtype; ml_dtypes.bfloat16 is the bfloat16 the ecosystem shares.
ELEM_DTYPES = {"fp16": np.dtype(np.float16), "bf16": np.dtype(ml_dtypes.bfloat16)}
_SANITIZE = {"fp16": fp16.sanitize, "bf16": bf16.sanitize}
# Modules with the block functions of the other families / input types, imported on first use:
#   quantize_blocks(bits (nb, 32) uint16 sanitized, fmt[, elem]) -> (nb, block_bytes) uint8
#   dequantize_blocks(rows (nb, block_bytes) uint8, fmt[, elem]) -> (values uint16, n_sat, n_bad)
_MX = "kvpath.golden.mx"
_GGML_BF16_IN = "kvpath.golden.ggml.bf16"
_GGML_BF16_OUT = "kvpath.golden.ggml.dequant_bf16"


def _unit(fmt: str):
    f = get_format(fmt)  # raises ValueError for unknown names
    if f.family == "static":
        raise ValueError(f"{f.name} takes its scales from the scale cache: use kvpath.golden.static "
                         f"with the driver's scale table")
    return f, _UNITS.get(f.name)


def elem_of_dtype(dtype) -> str:
    for name, dt in ELEM_DTYPES.items():
        if np.dtype(dtype) == dt:
            return name
    raise ValueError(f"K/V elements must be float16 or ml_dtypes.bfloat16, got {np.dtype(dtype)}")


def _check_input(x) -> str:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"quantize expects a numpy float16 or bfloat16 array, got {type(x).__name__}")
    elem = elem_of_dtype(x.dtype)
    if x.ndim == 0 or x.shape[-1] % BLOCK_ELEMS != 0:
        raise ValueError(f"last dimension must be a multiple of {BLOCK_ELEMS}, got shape {x.shape}")
    return elem


def quantize_blocks_exact(bits: np.ndarray, fmt: str) -> np.ndarray:
    """(nb, 32) sanitized FP16 patterns -> (nb, block_bytes): the spec, every lane evaluated literally."""
    f, unit = _unit(fmt)
    hdr, const = unit.header(bits)
    out = np.empty(bits.shape[0], block_dtype(fmt))
    for i, name in enumerate(f.scale_fields):
        out[name] = hdr[:, i]
    out["qs"] = unit.pack(unit.lane(bits, const))
    return out.view(np.uint8).reshape(bits.shape[0], f.block_bytes)


def block_dtype(fmt: str) -> np.dtype:
    """A structured dtype with one field per ggml block field; its itemsize is the block size."""
    f = get_format(fmt)
    dt = np.dtype([*((name, f"<u{f.scale_bytes}") for name in f.scale_fields), ("qs", "u1", (f.code_bytes,))])
    assert dt.itemsize == f.block_bytes
    return dt


def quantize_report(x: np.ndarray, fmt: str):
    """``(blocks, n_nonfinite)``: block bytes of shape ``(..., n // 32 * block_bytes)``.

    ``x`` is float16 or ml_dtypes.bfloat16; the element type selects the arithmetic.
    """
    f, unit = _unit(fmt)
    elem = _check_input(x)
    rows = np.ascontiguousarray(x).view(np.uint16).reshape(-1, BLOCK_ELEMS)
    # Filling a structured array field by field copies long runs; slicing columns of a
    # (nb, block_bytes) byte array would loop per block.
    out = np.empty(rows.shape[0], block_dtype(fmt))
    out_bytes = out.view(np.uint8).reshape(rows.shape[0], f.block_bytes)
    ws = fast.Workspace()
    n_nonfinite = 0
    for lo in range(0, rows.shape[0], CHUNK_BLOCKS):
        bits, n = _SANITIZE[elem](rows[lo : lo + CHUNK_BLOCKS])
        n_nonfinite += n
        if f.family == "mx":
            out_bytes[lo : lo + CHUNK_BLOCKS] = importlib.import_module(_MX).quantize_blocks(bits, f.name, elem)
            continue
        if elem == "bf16":
            out_bytes[lo : lo + CHUNK_BLOCKS] = importlib.import_module(_GGML_BF16_IN).quantize_blocks(bits, f.name)
            continue
        hdr, const = unit.header(bits)
        part = out[lo : lo + CHUNK_BLOCKS]
        for i, name in enumerate(f.scale_fields):
            part[name] = hdr[:, i]
        part["qs"] = unit.pack(_FAST[f.name](bits, const, ws))
    blocks = out_bytes.reshape(*x.shape[:-1], x.shape[-1] // BLOCK_ELEMS * f.block_bytes)
    return blocks, n_nonfinite


def dequantize_report(blocks: np.ndarray, fmt: str, dtype=np.float16):
    """``(values, n_saturated, n_nonfinite_scale)``; values are ``dtype`` (float16 or
    ml_dtypes.bfloat16) of shape ``(..., n)``, saturated to the type's largest finite value."""
    f, unit = _unit(fmt)
    elem = elem_of_dtype(dtype)
    if f.family == "mx":
        blocks_fn = lambda rows: importlib.import_module(_MX).dequantize_blocks(rows, f.name, elem)  # noqa: E731
    elif elem == "bf16":
        blocks_fn = lambda rows: importlib.import_module(_GGML_BF16_OUT).dequantize_blocks(rows, f.name)  # noqa: E731
    else:
        blocks_fn = unit.dequantize_blocks
    if not isinstance(blocks, np.ndarray) or blocks.dtype != np.uint8:
        got = blocks.dtype if isinstance(blocks, np.ndarray) else type(blocks).__name__
        raise ValueError(f"dequantize expects a numpy uint8 array, got {got}")
    if blocks.ndim == 0 or blocks.shape[-1] % f.block_bytes != 0:
        raise ValueError(f"last dimension must be a multiple of {f.block_bytes} bytes for {f.name}, "
                         f"got shape {blocks.shape}")
    rows = np.ascontiguousarray(blocks).reshape(-1, f.block_bytes)
    out = np.empty((rows.shape[0], BLOCK_ELEMS), dtype=np.uint16)
    n_sat = n_bad = 0
    for i in range(0, rows.shape[0], DEQUANT_CHUNK_BLOCKS):
        vals, s, b = blocks_fn(rows[i : i + DEQUANT_CHUNK_BLOCKS])
        out[i : i + DEQUANT_CHUNK_BLOCKS] = vals
        n_sat += s
        n_bad += b
    shape = (*blocks.shape[:-1], blocks.shape[-1] // f.block_bytes * BLOCK_ELEMS)
    return out.view(ELEM_DTYPES[elem]).reshape(shape), n_sat, n_bad
