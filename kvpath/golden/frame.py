"""Shape checks, sanitizing and chunking around each family's block functions (``config.FAMILIES``)."""

from __future__ import annotations

import numpy as np

from kvpath.config import BLOCK_ELEMS, get_format, load
from kvpath.elements import of_dtype
from kvpath.golden.num import elem as E

# quantize runs sanitize -> header -> codes -> pack on this many blocks at a time (1 Mi
# elements, 2 MiB of input): large enough that the header's ~100 NumPy calls per chunk cost
# little, small enough for its per-block arrays (256 KiB each) to stay in cache.
CHUNK_BLOCKS = 32768
# dequantize's temporaries are per element (int64), so it takes smaller bites.
DEQUANT_CHUNK_BLOCKS = 4096


def _family(fmt: str):
    f = get_format(fmt)  # raises ValueError for unknown names
    if f.needs_scale_cache:
        raise ValueError(f"{f.name} takes its scales from the scale cache: use kvpath.golden.static "
                         f"with the driver's scale table")
    return f, load(f.family_info.golden)


def _check_input(x):
    if not isinstance(x, np.ndarray):
        raise ValueError(f"quantize expects a numpy float16 or bfloat16 array, got {type(x).__name__}")
    et = of_dtype(x.dtype)
    if x.ndim == 0 or x.shape[-1] % BLOCK_ELEMS != 0:
        raise ValueError(f"last dimension must be a multiple of {BLOCK_ELEMS}, got shape {x.shape}")
    return et


def quantize_report(x: np.ndarray, fmt: str):
    """``(blocks, n_nonfinite)``: block bytes of shape ``(..., n // 32 * block_bytes)``.

    ``x`` is float16 or ml_dtypes.bfloat16; the element type selects the arithmetic.
    """
    f, family = _family(fmt)
    et = _check_input(x)
    rows = np.ascontiguousarray(x).view(np.uint16).reshape(-1, BLOCK_ELEMS)
    out = np.empty((rows.shape[0], f.block_bytes), np.uint8)
    n_nonfinite = 0
    for lo in range(0, rows.shape[0], CHUNK_BLOCKS):
        bits, n = E.sanitize(rows[lo : lo + CHUNK_BLOCKS], et)
        n_nonfinite += n
        out[lo : lo + CHUNK_BLOCKS] = family.quantize_blocks(bits, f.name, et.name)
    return out.reshape(*x.shape[:-1], x.shape[-1] // BLOCK_ELEMS * f.block_bytes), n_nonfinite


def dequantize_report(blocks: np.ndarray, fmt: str, dtype=np.float16):
    """``(values, n_saturated, n_nonfinite_scale)``; values are ``dtype`` (float16 or
    ml_dtypes.bfloat16) of shape ``(..., n)``, saturated to the type's largest finite value."""
    f, family = _family(fmt)
    et = of_dtype(dtype)
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
        vals, s, b = family.dequantize_blocks(rows[i : i + DEQUANT_CHUNK_BLOCKS], f.name, et.name)
        out[i : i + DEQUANT_CHUNK_BLOCKS] = vals
        n_sat += s
        n_bad += b
    shape = (*blocks.shape[:-1], blocks.shape[-1] // f.block_bytes * BLOCK_ELEMS)
    return out.view(et.dtype).reshape(shape), n_sat, n_bad
