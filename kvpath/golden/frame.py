"""Shape checks, sanitizing and chunking around the per-format block functions."""

from __future__ import annotations

import numpy as np

from kvpath.config import BLOCK_ELEMS, get_format

from . import fast, fp16, q4_0, q4_1, q8_0

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


def _unit(fmt: str):
    f = get_format(fmt)  # raises ValueError for unknown names
    return f, _UNITS[f.name]


def _check_fp16(x) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.float16:
        got = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"quantize expects a numpy float16 array, got {got}")
    if x.ndim == 0 or x.shape[-1] % BLOCK_ELEMS != 0:
        raise ValueError(f"last dimension must be a multiple of {BLOCK_ELEMS}, got shape {x.shape}")
    return x


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
    dt = np.dtype([*((name, "<u2") for name in f.scale_fields), ("qs", "u1", (f.code_bytes,))])
    assert dt.itemsize == f.block_bytes
    return dt


def quantize_report(x: np.ndarray, fmt: str):
    """``(blocks, n_nonfinite)``: ggml block bytes of shape ``(..., n // 32 * block_bytes)``."""
    f, unit = _unit(fmt)
    x = _check_fp16(x)
    rows = np.ascontiguousarray(x).view(np.uint16).reshape(-1, BLOCK_ELEMS)
    # Filling a structured array field by field copies long runs; slicing columns of a
    # (nb, block_bytes) byte array would loop per block.
    out = np.empty(rows.shape[0], block_dtype(fmt))
    ws = fast.Workspace()
    n_nonfinite = 0
    for lo in range(0, rows.shape[0], CHUNK_BLOCKS):
        bits, n = fp16.sanitize(rows[lo : lo + CHUNK_BLOCKS])
        n_nonfinite += n
        hdr, const = unit.header(bits)
        part = out[lo : lo + CHUNK_BLOCKS]
        for i, name in enumerate(f.scale_fields):
            part[name] = hdr[:, i]
        part["qs"] = unit.pack(_FAST[f.name](bits, const, ws))
    blocks = out.view(np.uint8).reshape(*x.shape[:-1], x.shape[-1] // BLOCK_ELEMS * f.block_bytes)
    return blocks, n_nonfinite


def dequantize_report(blocks: np.ndarray, fmt: str):
    """``(values, n_saturated, n_nonfinite_scale)``; values are float16 of shape ``(..., n)``."""
    f, unit = _unit(fmt)
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
        vals, s, b = unit.dequantize_blocks(rows[i : i + DEQUANT_CHUNK_BLOCKS])
        out[i : i + DEQUANT_CHUNK_BLOCKS] = vals
        n_sat += s
        n_bad += b
    shape = (*blocks.shape[:-1], blocks.shape[-1] // f.block_bytes * BLOCK_ELEMS)
    return out.view(np.float16).reshape(shape), n_sat, n_bad
