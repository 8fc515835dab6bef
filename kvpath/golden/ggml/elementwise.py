"""Per-element arithmetic steps, each one fp32 operation of ggml done on integers.

Values are ``sig * 2**exp`` with integer ``sig`` (sign carried separately). These are the lane
units' building blocks; docs/numerics.md explains why each is exact.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from kvpath.golden.num.rounding import bit_length, rha_shift, rne_shift

ADD_FRAC_BITS = 26  # fixed-point fraction bits of the "+ 8.5" / "+ 0.5" adder in q4_0 / q4_1


def mul_rne24(a, a_exp, b, b_exp, a_bits: int = 11):
    """fl32(a * b): product of an ``a_bits``-bit and a 24-bit normalized significand, RNE to 24 bits.

    The product lies in ``[2**(a_bits+22), 2**(a_bits+24))``, so normalizing needs only its top
    bit: the rounding drops ``a_bits - 1`` bits, or one more when the top bit is set. A zero
    operand gives ``sig == 0``. Returns ``(sig, exp)``; ``sig`` may be 2**24 after a carry.
    """
    p = a * b
    drop = (a_bits - 1) + (p >> (a_bits + 23))
    return rne_shift(p, drop), a_exp + b_exp + drop


def roundf_fixed(sig, exp):
    """C ``roundf`` (half away from zero) of the magnitude ``sig * 2**exp``, for ``exp < 0``."""
    # A zero significand carries a meaningless exponent; any shift >= 1 maps it to 0.
    return rha_shift(sig, np.maximum(-exp, 1))


def signed_code(q, sign):
    """Apply the element's sign to a code magnitude (two's complement, as ggml's int8 cast)."""
    return np.where(sign != 0, -q, q)


@lru_cache(maxsize=None)
def _half_ulp_table():
    # Indexed by the adder's sum in quarter units (S >> (ADD_FRAC_BITS - 2)): a sum in
    # [2**b, 2**(b+1)) has fp32 half-ulp 2**(b-24), which is 2**(b+2) fixed-point units, i.e.
    # the largest power of two not above the index.
    i = np.arange(128, dtype=np.int64)
    t = np.where(i > 0, np.int64(1) << np.maximum(bit_length(i) - 1, 0), 0)
    t.setflags(write=False)
    return t


def trunc_fp32_add(sig, exp, sign, c_fixed: int):
    """trunc(fl32(c + y)) for ``y = (-1)**sign * sig * 2**exp`` with ``|y| < 16``, ``c + y > 0.25``.

    ``c_fixed`` is the constant (8.5 or 0.5) in units of 2**-26. ``y`` is aligned to those units;
    bits of ``y`` that fall below them belong to ``|y| < 1/8``, which cannot move the result
    (the sum then stays within 1/8 of ``c``, a half-integer). Rounding the exact sum ``S`` to
    fp32 and truncating equals ``floor(S + h)`` where ``h`` is half an fp32 ulp of ``S``'s
    binade: integers are even on every fp32 grid up to 2**24, so a tie rounds up to the integer.
    """
    y = (sig << 6) >> np.maximum(-exp - (ADD_FRAC_BITS - 6), 0)
    s = c_fixed + np.where(sign != 0, -y, y)
    return (s + _half_ulp_table()[s >> (ADD_FRAC_BITS - 2)]) >> ADD_FRAC_BITS
