"""FP16 and BF16 bit patterns as integers, for the MX formats: decode, binade, RNE encode.

Both element types are IEEE-style binary floats that differ only in field widths, so one
parametrized decoder/encoder serves both. A finite magnitude is ``m * 2**(ee - bias - frac)`` with
``ee = max(e, 1)`` (subnormals share the smallest normal exponent) and ``m`` the significand with
its hidden bit when ``e > 0``. No floating point is used.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kvpath.golden.num.rounding import bit_length, rne_shift


class ElemType(NamedTuple):
    name: str
    frac: int  # fraction bits
    bias: int
    max_finite: int  # largest finite magnitude pattern

    @property
    def min_exp(self) -> int:
        """Exponent of the subnormal quantum: the smallest magnitude is ``2**min_exp``."""
        return 1 - self.bias - self.frac


ELEM = {
    "fp16": ElemType("fp16", 10, 15, 0x7BFF),
    "bf16": ElemType("bf16", 7, 127, 0x7F7F),
}


def elem_type(elem: str) -> ElemType:
    try:
        return ELEM[elem]
    except KeyError:
        raise ValueError(f"unknown element type {elem!r}; choose one of {', '.join(ELEM)}") from None


def decode(bits, et: ElemType):
    """``(sign, m, ee)`` of finite patterns: ``|x| = m * 2**(ee - bias - frac)`` (int64 arrays)."""
    bits = np.asarray(bits).astype(np.int64)
    sign = bits >> 15
    e = (bits & 0x7FFF) >> et.frac
    f = bits & ((1 << et.frac) - 1)
    m = np.where(e > 0, f | (1 << et.frac), f)
    return sign, m, np.maximum(e, 1)


def floor_log2(mag_bits, et: ElemType):
    """``floor(log2(|x|))`` of non-zero magnitude patterns (undefined for zero)."""
    _, m, ee = decode(mag_bits, et)
    return bit_length(m) - 1 + ee - et.bias - et.frac


def encode(sign, sig, exp, et: ElemType):
    """Pattern of ``(-1)**sign * sig * 2**exp`` rounded to nearest even, saturating.

    ``sig >= 0`` below 2**40. Returns ``(bits uint16, saturated bool)``: a magnitude that would
    round past the largest finite value becomes that value (kvpath's rule; IEEE gives Inf). Zero
    keeps its sign. As ``fp16.encode``: the binade ``b`` fixes the quantum
    ``2**max(b - frac, min_exp)``, and the pattern is ``(max(b + bias - 1, 0) << frac) + N`` so a
    rounding carry moves into the exponent field by itself.
    """
    sign, sig, exp = (np.asarray(v, np.int64) for v in (sign, sig, exp))
    b = bit_length(sig) - 1 + exp
    shift = np.maximum(b - et.frac, et.min_exp) - exp
    up = np.maximum(-shift, 0)
    n = rne_shift(sig << (up + 1), shift + up + 1)
    mag = np.where(sig == 0, 0, (np.maximum(b + et.bias - 1, 0) << et.frac) + n)
    saturated = mag > et.max_finite
    mag = np.minimum(mag, et.max_finite)
    return ((sign << 15) | mag).astype(np.uint16), saturated


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
