"""OCP MX v1.0 formats (mxfp4, mxint8, mxfp8_e4m3): the golden model, integer arithmetic only.

A block is 32 elements sharing one E8M0 byte ``E`` (scale ``2**X``, ``X = E - 127``; 0xFF is NaN),
then the 32 element codes. docs/mx.md is the prose version; summary:

* **Block unit** (``header``): ``X = clamp(floor(log2(amax)) - emax, -127, 127)`` with ``emax`` the
  element type's largest exponent (2 for E2M1, 0 for INT8, 8 for E4M3); an all-zero block has
  ``X = -127`` (byte 0x00). This is ggml's MXFP4 rule and gfloat's ``compute_scale_amax``.
* **Lane** (``lane``): the element ``t = |x| / 2**X`` rounded onto the element grid:
  mxfp4 to nearest with ties to the smaller magnitude (ggml's first-index argmin), codes
  saturating at 6; mxint8 ``round_half_even(64 t)`` saturating at 127 (-128 for negative values);
  mxfp8_e4m3 to nearest even on the E4M3 grid (subnormals included), saturating at 448.

``quantize_blocks`` / ``dequantize_blocks`` are what ``kvpath.golden.frame`` calls.
"""

from __future__ import annotations

import numpy as np

from kvpath.config import BLOCK_ELEMS, get_format

from kvpath.elements import ElementType, element as elem_type
from kvpath.golden.num.elem import decode, encode, floor_log2, rne, shift_round
from kvpath.golden.num.rounding import bit_length
from kvpath.packing import pack_codes, unpack_codes

EMAX = {"mxfp4": 2, "mxint8": 0, "mxfp8_e4m3": 8}
SCALE_BIAS = 127
SCALE_NAN = 0xFF
X_MIN, X_MAX = -127, 127

# mxfp4 magnitudes in half units (E2M1 values 0, 0.5, 1, 1.5, 2, 3, 4, 6): ggml's kvalues.
FP4_HALF_UNITS = (0, 1, 2, 3, 4, 6, 8, 12)
# Decision thresholds between neighbouring E2M1 magnitudes, in quarter units of t: a magnitude
# strictly above a threshold takes the larger neighbour, one exactly on it the smaller.
FP4_THRESHOLDS_Q = (1, 3, 5, 7, 10, 14, 20)
E4M3_MAX = 0x7E  # 448
E4M3_NAN = 0x7F  # S.1111.111, both signs


def _check(fmt: str) -> str:
    name = get_format(fmt).name
    if name not in EMAX:
        raise ValueError(f"{name} is not an MX format")
    return name


def shared_exponent(amax_bits, fmt: str, et: ElementType):
    """``X`` for block maxima ``amax_bits`` (magnitude patterns, any shape): int64."""
    amax_bits = np.asarray(amax_bits)
    x = floor_log2(np.maximum(amax_bits, 1), et) - EMAX[_check(fmt)]
    return np.where(amax_bits == 0, X_MIN, np.clip(x, X_MIN, X_MAX))


def header(bits: np.ndarray, fmt: str, elem: str):
    """Block unit: (nb, 32) sanitized patterns -> ((nb, 1) uint8 scale byte, (nb, 1) int64 ``X``)."""
    et = elem_type(elem)
    amax = (np.asarray(bits) & 0x7FFF).max(axis=-1, keepdims=True)
    x = shared_exponent(amax, fmt, et)
    return (x + SCALE_BIAS).astype(np.uint8), x


def lane(bits: np.ndarray, x, fmt: str, elem: str) -> np.ndarray:
    """Element codes (uint8; 4-bit for mxfp4) of patterns ``bits`` in blocks of shared exponent ``x``."""
    name, et = _check(fmt), elem_type(elem)
    sign, m, ee = decode(bits, et)
    k = ee - et.bias - et.frac_bits - np.asarray(x, np.int64)  # t = m * 2**k
    if name == "mxfp4":
        floor4, sticky = shift_round(m, -(k + 2))  # 4t: below 32
        v = 2 * floor4 + sticky  # 4t > thr  <=>  v > 2 thr, exactly
        mag = sum((v > 2 * thr).astype(np.int64) for thr in FP4_THRESHOLDS_Q)
        # A magnitude rounding to zero codes as +0 (ggml's argmin meets index 0 before 8).
        return (mag | np.where(mag > 0, sign << 3, 0)).astype(np.uint8)
    if name == "mxint8":
        q = rne(m, -(k + 6))  # 64 t, below 128 before rounding
        q = np.where(sign == 1, -np.minimum(q, 128), np.minimum(q, 127))
        return (q & 0xFF).astype(np.uint8)
    # mxfp8_e4m3: normalize, then the E4M3 quantum 2**(max(b, -6) - 3) of t's binade b.
    lz = np.where(m > 0, et.frac_bits + 1 - bit_length(m), 0)
    b = ee - lz - et.bias - np.asarray(x, np.int64)  # floor(log2 t)
    n = rne(m << lz, et.frac_bits - 3 + np.maximum(0, -6 - b))
    mag = np.where(m == 0, 0, np.minimum((np.maximum(b + 6, 0) << 3) + n, E4M3_MAX))
    return ((sign << 7) | mag).astype(np.uint8)


def quantize_blocks(bits: np.ndarray, fmt: str, elem: str = "fp16") -> np.ndarray:
    """(nb, 32) sanitized uint16 patterns of ``elem`` -> (nb, block_bytes) uint8: scale byte, codes."""
    bits = np.asarray(bits)
    if bits.ndim != 2 or bits.shape[1] != BLOCK_ELEMS:
        raise ValueError(f"quantize_blocks expects (nb, {BLOCK_ELEMS}) patterns, got {bits.shape}")
    scale, x = header(bits, fmt, elem)
    return np.concatenate([scale, pack_codes(lane(bits, x, fmt, elem), fmt)], axis=1)


def element_value(codes, fmt: str):
    """``(sign, sig, exp)`` with element value ``(-1)**sign * sig * 2**exp`` relative to the scale,
    and a flag for E4M3's NaN codes (the only non-finite element codes)."""
    name = _check(fmt)
    c = np.asarray(codes, np.int64)
    if name == "mxfp4":
        sig = np.asarray(FP4_HALF_UNITS, np.int64)[c & 7]
        # ggml's kvalues hold 0 for code 8, so -0 reads back as +0.
        return np.where(sig > 0, c >> 3, 0), sig, np.full_like(c, -1), np.zeros(c.shape, bool)
    if name == "mxint8":
        q = np.where(c >= 128, c - 256, c)
        return (q < 0).astype(np.int64), np.abs(q), np.full_like(c, -6), np.zeros(c.shape, bool)
    e, f = (c >> 3) & 15, c & 7
    sig = np.where(e > 0, f | 8, f)
    return c >> 7, sig, np.maximum(e, 1) - 10, (c & 0x7F) == E4M3_NAN


def dequantize_blocks(rows: np.ndarray, fmt: str, elem: str = "fp16"):
    """(nb, block_bytes) uint8 -> ((nb, 32) uint16 patterns of ``elem``, n_saturated, n_nonfinite).

    Each value is ``element * 2**X`` rounded to ``elem`` (RNE), saturating at the largest finite
    value (counted in n_saturated). A NaN scale byte (0xFF) makes its whole block +0 and an E4M3
    NaN element code makes its element +0; each such byte adds 1 to n_nonfinite.
    """
    name, et = _check(fmt), elem_type(elem)
    rows = np.asarray(rows, np.uint8)
    scale = rows[:, :1].astype(np.int64)
    sign, sig, exp, nan_elem = element_value(unpack_codes(rows[:, 1:], name), name)
    bad_scale = scale == SCALE_NAN
    zero = bad_scale | nan_elem
    bits, sat = encode(np.where(zero, 0, sign), np.where(zero, 0, sig), exp + scale - SCALE_BIAS, et)
    return bits, int(np.count_nonzero(sat)), int(np.count_nonzero(bad_scale) + np.count_nonzero(nan_elem))
