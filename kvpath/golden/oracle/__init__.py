"""The references kvpath is checked against, apart from the spec: gguf for the formats ggml has
(``gguf.py``), gfloat for the other MX formats (``gfloat.py``). Nothing here is used by the golden
model itself. The functions below pick the format's reference library.

* ``quantize(x, fmt)``: ``(blocks, defined)`` for finite (sanitized) inputs: the reference's block
  bytes and the blocks where the reference defines the result (only gguf's MXFP4 leaves some undefined, see ``gguf.quantize_mxfp4``).
* ``values(blocks, fmt)``: exact element values and which ones kvpath reads as non-finite.
* ``dequantize(blocks, fmt, dtype)``: the values rounded to ``dtype`` with kvpath's saturation,
  NaN scale bytes and E4M3 NaN elements read as +0.
* ``roundtrip(x, fmt)``: ``(library, values)`` of the reference's own quantize -> dequantize.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from kvpath.config import BLOCK_ELEMS, get_format
from kvpath.golden.oracle import gfloat, gguf


def library(fmt: str) -> str:
    return "gguf" if get_format(fmt).ggml_type is not None else "gfloat"


def _rows(x) -> np.ndarray:
    return np.asarray(x).astype(np.float64).reshape(-1, BLOCK_ELEMS)


def quantize(x, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    f = get_format(fmt)
    rows = _rows(x)
    if f.name == "mxfp4":
        return gguf.quantize_mxfp4(rows)
    if library(fmt) == "gguf":
        return gguf.quantize_rows(rows, fmt), np.ones(len(rows), bool)
    return gfloat.quantize(rows, fmt), np.ones(len(rows), bool)


def values(blocks: np.ndarray, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """MX formats: ``(values float64 (nb, 32), nan (nb, 32) bool)`` (NaN scale byte or element)."""
    f = get_format(fmt)
    if f.family != "mx":
        raise ValueError(f"values() covers the MX formats; use gguf.gguf_dequantize for {f.name}")
    rows = np.asarray(blocks, np.uint8).reshape(-1, f.block_bytes)
    nan_scale = np.repeat(rows[:, :1] == 0xFF, BLOCK_ELEMS, axis=1)
    if f.name == "mxfp4":
        return gguf.values_mxfp4(rows), nan_scale
    v, nan_elem = gfloat.values(rows, fmt)
    return v, nan_scale | nan_elem


def dequantize(blocks: np.ndarray, fmt: str, dtype=np.float16):
    """MX formats: ``(patterns uint16 (nb, 32), n_saturated, n_nonfinite)`` by the reference's values,
    rounded to ``dtype`` (float64 -> float32 is exact for every MX value below float32's overflow)."""
    v, nan = values(blocks, fmt)
    rows = np.asarray(blocks, np.uint8).reshape(len(v), -1)
    v = np.where(nan, 0.0, v)
    with np.errstate(over="ignore"):
        out = v.astype(np.float32).astype(dtype)
    big = ~np.isfinite(out.astype(np.float32))
    top = np.finfo(np.float16).max if np.dtype(dtype) == np.float16 else ml_dtypes.finfo(ml_dtypes.bfloat16).max
    out[big] = np.where(v[big] > 0, top, -top).astype(dtype)
    nonfinite = int(np.count_nonzero(rows[:, 0] == 0xFF))
    if get_format(fmt).name == "mxfp8_e4m3":
        nonfinite += int(np.count_nonzero((rows[:, 1:] & 0x7F) == 0x7F))
    return out.view(np.uint16), int(np.count_nonzero(big)), nonfinite


def roundtrip(x: np.ndarray, fmt: str) -> tuple[str, np.ndarray]:
    """(library, values): the reference library's own quantize -> dequantize of the same inputs."""
    if library(fmt) == "gguf":
        return "gguf", gguf.roundtrip(x, fmt)
    return "gfloat", gfloat.values(gfloat.quantize(_rows(x), fmt), fmt)[0].reshape(-1)
