"""The MX formats' references, for tests and benchmarks: gguf (mxfp4) and gfloat (mxint8, mxfp8_e4m3).

Inputs are finite FP16 or BF16 arrays (already sanitized); every reference works on their exact
float32/float64 copies. Nothing here is used by the golden model itself.

* ``quantize(x, fmt)``: gguf's MXFP4 bytes, or gfloat's block encoding: ``compute_scale_amax``
  (vectorized as ``scale_amax``), then ``round_ndarray`` + ``encode_ndarray`` with ties to even and
  saturation, which is what ``gfloat.encode_block`` does one element at a time. Also returns the blocks where the reference
  defines the result: gguf's MXFP4 casts a negative shared exponent to uint8 (BF16 blocks with
  ``0 < amax < 2**-125``) and so writes a meaningless scale byte; ``mxfp4_clamped`` gives ggml's
  element rule under kvpath's clamped scale for those.
* ``quantize_scalar(x, fmt)``: gfloat's own ``encode_block``, element by element (slow).
* ``dequantize(blocks, fmt, dtype)``: the reference values rounded to ``dtype`` with kvpath's
  saturation, NaN scale bytes and E4M3 NaN elements read as +0.
"""

from __future__ import annotations

import warnings

import gguf
import ml_dtypes
import numpy as np
from gfloat import compute_scale_amax, decode_ndarray, encode_block, encode_ndarray, round_ndarray
from gfloat.formats import format_info_mxfp8_e4m3, format_info_mxint8

from kvpath.config import BLOCK_ELEMS, get_format

GFLOAT = {"mxint8": format_info_mxint8, "mxfp8_e4m3": format_info_mxfp8_e4m3}
FP4_HALF_UNITS = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float64)


def _rows(x) -> np.ndarray:
    return np.asarray(x).astype(np.float64).reshape(-1, BLOCK_ELEMS)


def quantize(x, fmt: str):
    """``(blocks (nb, block_bytes) uint8, defined (nb,) bool)`` from the format's reference library."""
    name = get_format(fmt).name
    rows = _rows(x)
    if name == "mxfp4":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # gguf's uint8 cast of a negative exponent
            blocks = gguf.quantize(rows.astype(np.float32), gguf.GGMLQuantizationType.MXFP4)
        amax = np.abs(rows).max(axis=1)
        return blocks.reshape(-1, 17), ~((amax > 0) & (amax < 2.0 ** -125))
    fi = GFLOAT[name]
    scales = scale_amax(fi.etype.emax, np.abs(rows).max(axis=1))
    codes = encode_ndarray(fi.etype, round_ndarray(fi.etype, rows / scales[:, None], sat=True))
    scale_bytes = encode_ndarray(fi.stype, scales)
    return np.concatenate([scale_bytes[:, None], codes], axis=1).astype(np.uint8), np.ones(len(rows), bool)


def scale_amax(emax: int, amax: np.ndarray) -> np.ndarray:
    """gfloat's ``compute_scale_amax`` for many blocks at once (its formula, vectorized; the tests
    compare the two on every binade): ``2**clip(floor(log2 amax) - emax, -127, 127)``, 2**-127 for 0."""
    with np.errstate(divide="ignore"):
        q = np.where(amax == 0, -127.0, np.clip(np.floor(np.log2(np.where(amax == 0, 1.0, amax))) - emax, -127, 127))
    return 2.0 ** q


def quantize_scalar(x, fmt: str) -> np.ndarray:
    """gfloat's ``encode_block`` with ``compute_scale_amax``: the per-element reference (slow)."""
    fi = GFLOAT[get_format(fmt).name]
    out = []
    for r in _rows(x):
        scale = compute_scale_amax(fi.etype.emax, r)
        out.append(list(encode_block(fi, scale, r / scale)))
    return np.array(out, np.uint8)


def mxfp4_clamped(x) -> np.ndarray:
    """ggml's MXFP4 element rule (nearest of the doubled E2M1 grid, first index on ties) at a given
    scale byte: kvpath's ``max(floor(log2 amax) - 2 + 127, 0)``, 0 for a zero block. Exact in float64."""
    rows = _rows(x)
    amax = np.abs(rows).max(axis=1)
    with np.errstate(divide="ignore"):
        e = np.where(amax > 0, np.maximum(np.floor(np.log2(np.where(amax > 0, amax, 1))) - 2 + 127, 0), 0)
    d = 2.0 ** (e - 128)
    errs = np.abs(d[:, None, None] * FP4_HALF_UNITS[None, None, :] - rows[:, :, None])
    best = np.argmin(errs, axis=-1).astype(np.uint8)
    return np.concatenate([e[:, None].astype(np.uint8), best[:, :16] | (best[:, 16:] << 4)], axis=1)


def values(blocks: np.ndarray, fmt: str):
    """``(values float64 (nb, 32), nan (nb, 32) bool)``: the exact element values by the reference
    library's decoder, and which of them kvpath reads as non-finite (NaN scale or NaN element)."""
    name = get_format(fmt).name
    rows = np.asarray(blocks, np.uint8).reshape(-1, get_format(fmt).block_bytes)
    nan_scale = np.repeat(rows[:, :1] == 0xFF, BLOCK_ELEMS, axis=1)
    if name == "mxfp4":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            v = gguf.dequantize(rows.reshape(-1), gguf.GGMLQuantizationType.MXFP4).astype(np.float64)
        return v.reshape(-1, BLOCK_ELEMS), nan_scale
    fi = GFLOAT[name]
    scale = decode_ndarray(fi.stype, rows[:, 0].astype(np.int64))
    elems = decode_ndarray(fi.etype, rows[:, 1:].astype(np.int64))
    with np.errstate(invalid="ignore", over="ignore"):
        v = scale[:, None] * elems
    return v, nan_scale | np.isnan(elems)


def dequantize(blocks: np.ndarray, fmt: str, dtype=np.float16):
    """``(patterns uint16 (nb, 32), n_saturated, n_nonfinite)`` by the reference's values, rounded
    to ``dtype`` (float64 -> float32 is exact for every MX value below float32's overflow)."""
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
