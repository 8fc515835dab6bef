"""fp32 arithmetic on BF16 inputs, in integers, with fp32's whole range (subnormals and overflow).

FP16 inputs keep every fp32 intermediate of the ggml formats normal (docs/numerics.md section 1).
BF16 inputs do not: a block scale can be an fp32 subnormal (rounded at the fixed quantum 2**-149)
and a reciprocal or a span can overflow to Inf. So every fp32 result here goes through
:func:`round_fp32`, which rounds an exact value ``v * 2**e`` the way an IEEE binary32 operation
does, including gradual underflow and overflow.

Values are ``(sig, exp)`` pairs of int64 arrays meaning ``sig * 2**exp`` (``sig >= 0``, signs are
carried separately); a rounded fp32 result has ``sig < 2**24`` (below 2**23 only when subnormal).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from kvpath.golden.num import fp16
from kvpath.golden.num.rounding import bit_length, rne_shift

BIAS_SHIFT = 134  # |x| = M * 2**(E - 134) for a BF16 element with 8-bit significand M
FP32_MIN_QUANTUM = -149  # fp32 subnormals are multiples of 2**-149
FP32_INF_EXP = 128  # rounded magnitudes of 2**128 and above are Inf
FP16_INF = 0x7C00


@lru_cache(maxsize=None)
def _tables():
    """``(M, E)`` per 15-bit BF16 magnitude: ``|x| = M * 2**(E - 134)``, ``M`` in [128, 255]."""
    mag = np.arange(1 << 15, dtype=np.int64)
    e, f = mag >> 7, mag & 0x7F
    # Subnormals (e == 0) are shifted up to 8 significant bits; E goes below 1 by the same amount.
    lz = np.where(f > 0, 8 - bit_length(f), 0)
    m = np.where(e > 0, f | 128, f << lz)
    ex = np.where(e > 0, e, 1 - lz)
    for t in (m, ex):
        t.setflags(write=False)
    return m, ex


def normalize(bits):
    """``(M, E)`` of BF16 patterns (sign ignored); zero gives ``(0, 1)``."""
    m, ex = _tables()
    i = np.asarray(bits).astype(np.int64) & fp16.MAG
    return m[i], ex[i]


def round_fp32(v, exp):
    """fl32 of ``v * 2**exp`` (``0 <= v < 2**61``, ``v`` may carry a jammed sticky bit).

    Returns ``(sig, e, inf)``: the rounded value ``sig * 2**e`` (round to nearest even at 24
    significant bits, or at 2**-149 in the subnormal range) and whether it is Inf. ``v == 0``
    gives ``sig == 0``.
    """
    v, exp = np.asarray(v, np.int64), np.asarray(exp, np.int64)
    binade = bit_length(v) - 1 + exp
    q = np.maximum(binade - 23, FP32_MIN_QUANTUM)
    shift = q - exp
    # Shift short values up first so one RNE shift (>= 1) covers both directions, as fp16.encode.
    up = np.maximum(-shift, 0)
    sig = rne_shift(v << (up + 1), shift + up + 1)
    carry = sig >> 24
    sig, q = sig >> carry, q + carry
    inf = (sig >> 23 != 0) & (q + 23 >= FP32_INF_EXP)
    return sig, q, inf


def divide(num, num_exp, den):
    """fl32(num * 2**num_exp / den) for integers ``0 < num, den < 2**25`` (long division, sticky jam)."""
    num, den = np.asarray(num, np.int64), np.asarray(den, np.int64)
    k = 27 + bit_length(den) - bit_length(num)  # quotient of 27 or 28 bits: guard bits to spare
    q, r = np.divmod(num << k, den)
    return round_fp32((q << 1) | (r != 0), np.asarray(num_exp, np.int64) - k - 1)


def recip(sig, exp):
    """fl32(1 / (sig * 2**exp)) for ``0 < sig < 2**25``."""
    return divide(np.ones_like(np.asarray(sig, np.int64)), -np.asarray(exp, np.int64), sig)


def multiply(a, a_exp, b, b_exp):
    """fl32(a * 2**a_exp * b * 2**b_exp) for ``a, b < 2**25``: the product is exact, then rounded."""
    return round_fp32(np.asarray(a, np.int64) * b, np.asarray(a_exp, np.int64) + b_exp)


ADD_GUARD = 40  # the larger operand's 8 bits sit above this many guard bits


def add_magnitudes(ma, ea, mb, eb, subtract):
    """fl32(|a| +/- |b|) for BF16 operands given as ``(M, E)`` with ``|a| >= |b|``.

    The smaller operand is aligned to the larger one's scale with ``ADD_GUARD`` extra bits; what
    falls off the end only matters as a sticky bit, jammed one position below everything kept:
    the exact result lies strictly between the two neighbours of the jammed value, and with at
    least 25 bits dropped by the rounding (the result has 47 or more bits when anything falls
    off) the jam can never look like a tie.
    """
    ma, ea, mb, eb = (np.asarray(t, np.int64) for t in (ma, ea, mb, eb))
    k = np.where(mb == 0, 0, np.minimum(ea - eb, 62))  # a zero b has a meaningless exponent
    a = ma << ADD_GUARD
    b_full = mb << ADD_GUARD
    b = b_full >> k
    sticky = ((b << k) != b_full).astype(np.int64)
    total = np.where(subtract, 2 * (a - b) - sticky, 2 * (a + b) + sticky)
    return round_fp32(total, ea - BIAS_SHIFT - ADD_GUARD - 1)


def add_signed(x_bits, y_bits, negate_y):
    """fl32(x + y) (or x - y) for BF16 patterns: ``(sig, exp, inf, negative)``.

    An exact zero is +0, as IEEE's round-to-nearest gives for ``x - x``.
    """
    x_bits, y_bits = np.asarray(x_bits, np.int64), np.asarray(y_bits, np.int64)
    sx = x_bits >> 15
    sy = (y_bits >> 15) ^ np.asarray(negate_y, np.int64)
    ax, ay = x_bits & fp16.MAG, y_bits & fp16.MAG
    x_big = ax >= ay
    big, small = np.where(x_big, ax, ay), np.where(x_big, ay, ax)
    mg, eg = normalize(big)
    ms, es = normalize(small)
    sig, e, inf = add_magnitudes(mg, eg, ms, es, sx != sy)
    negative = np.where(sig == 0, 0, np.where(x_big, sx, sy))
    return sig, e, inf, negative


def to_fp16(sign, sig, exp):
    """FP16 pattern of ``(-1)**sign * sig * 2**exp`` as NumPy's float32 -> float16 cast: RNE, and
    Inf when the magnitude rounds to 65520 or more. ``sig < 2**60``."""
    bits, overflow = fp16.encode(sign, sig, exp)
    sign_bit = (np.asarray(sign, np.int64) << 15).astype(np.uint16)
    return np.where(overflow, sign_bit | np.uint16(FP16_INF), bits).astype(np.uint16)
