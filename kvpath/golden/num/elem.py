"""Element bit patterns as integers, for any type of ``kvpath.elements``: sanitize, decode, RNE encode.

FP16, BF16 (and FP32) are IEEE-style binary floats that differ only in field widths, so one
parametrized codec serves them all; every format's golden model encodes its results through
``encode`` here. A finite magnitude is ``m * 2**(ee - bias - frac_bits)`` with ``ee = max(e, 1)``
(subnormals share the smallest normal exponent) and ``m`` the significand with its hidden bit when
``e > 0``. No floating point is used.
"""

from __future__ import annotations

import numpy as np

from kvpath.elements import ElementType
from kvpath.golden.num.rounding import bit_length, rne_shift


def sanitize(x_bits, et: ElementType):
    """kvpath's input rule: +/-Inf -> +/-max finite, any NaN -> +0. Returns ``(bits, count)``.

    ``count`` is the number of non-finite elements replaced (the RTL's non-finite counter).
    """
    x_bits = np.asarray(x_bits)
    if x_bits.dtype != np.uint16:
        raise ValueError(f"sanitize expects uint16 {et.name.upper()} bit patterns, got dtype {x_bits.dtype}")
    nonfinite = (x_bits & et.exp_mask) == et.exp_mask
    count = int(np.count_nonzero(nonfinite))
    if count == 0:
        return x_bits, 0
    nan = nonfinite & ((x_bits & et.frac_mask) != 0)
    out = np.where(nonfinite, (x_bits & et.sign_bit) | et.max_finite, x_bits)
    out[nan] = 0
    return out.astype(np.uint16), count


def finite(bits, et: ElementType):
    return (np.asarray(bits).astype(np.int64) & et.exp_mask) != et.exp_mask


def decode(bits, et: ElementType):
    """``(sign, m, ee)`` of finite patterns: ``|x| = m * 2**(ee - bias - frac_bits)`` (int64 arrays)."""
    bits = np.asarray(bits).astype(np.int64)
    sign = bits >> (et.bits - 1)
    e = (bits & et.mag_mask) >> et.frac_bits
    f = bits & et.frac_mask
    m = np.where(e > 0, f | (1 << et.frac_bits), f)
    return sign, m, np.maximum(e, 1)


def floor_log2(mag_bits, et: ElementType):
    """``floor(log2(|x|))`` of non-zero magnitude patterns (undefined for zero)."""
    _, m, ee = decode(mag_bits, et)
    return bit_length(m) - 1 + ee - et.bias - et.frac_bits


def encode(sign, sig, exp, et: ElementType, length=None):
    """Pattern of ``(-1)**sign * sig * 2**exp`` rounded to nearest even, saturating.

    ``sig >= 0`` is any integer below 2**60 (not necessarily normalized), ``exp`` any int;
    ``length`` is ``bit_length(sig)`` if the caller knows it. Returns ``(bits, saturated)``: a
    magnitude that would round past the largest finite value becomes that value and sets
    ``saturated`` (kvpath's rule; IEEE would give Inf). Zero keeps its sign.

    Method: the value's binade ``b`` (``2**b <= v < 2**(b+1)``) fixes the quantum
    ``2**max(b - frac_bits, min_exp)``; rounding to that quantum gives ``N`` (the significand with
    its hidden one for normals, fewer bits for subnormals) and the pattern is
    ``(max(b + bias - 1, 0) << frac_bits) + N``, so a carry out of the significand moves into the
    exponent field by itself and a subnormal that rounds up becomes the smallest normal.
    """
    sign, sig, exp = (np.asarray(v, np.int64) for v in (sign, sig, exp))
    b = (bit_length(sig) if length is None else np.asarray(length, np.int64)) - 1 + exp
    shift = np.maximum(b - et.frac_bits, et.min_exp) - exp
    # Short values are shifted up first so a single RNE shift (>= 1) serves both directions.
    up = np.maximum(-shift, 0)
    n = rne_shift(sig << (up + 1), shift + up + 1)
    # A zero significand gives n == 0 and must not pick up an exponent field.
    mag = np.where(sig == 0, 0, (np.maximum(b + et.bias - 1, 0) << et.frac_bits) + n)
    saturated = mag > et.max_finite
    mag = np.minimum(mag, et.max_finite)
    dtype = np.uint16 if et.bits == 16 else np.uint32
    return ((sign << (et.bits - 1)) | mag).astype(dtype), saturated


def shift_round(m, s):
    """``m * 2**-s`` for any integer shift ``s``: ``(floor, sticky)``; exact (sticky 0) for ``s <= 0``.

    ``m`` below 2**12 and ``m * 2**-s`` below 2**40, so left shifts never overflow.
    """
    m, s = np.asarray(m, np.int64), np.asarray(s, np.int64)
    right = np.clip(s, 0, 62)
    left = np.maximum(-s, 0)
    floor = (m >> right) << left
    sticky = (m & ((np.int64(1) << right) - 1)) != 0
    return floor, sticky


def rne(m, s):
    """``m * 2**-s`` rounded to nearest even, any integer ``s`` (``m`` below 2**12)."""
    m, s = np.asarray(m, np.int64), np.asarray(s, np.int64)
    return np.where(s <= 0, m << np.maximum(-s, 0), rne_shift(m, np.maximum(s, 1)))
