"""Integer rounding primitives every format is built from.

All functions take non-negative int64 magnitudes (signs are handled by the callers, as in a
sign-magnitude datapath) and a shift ``s``: the result is ``v / 2**s`` rounded to an integer.
They accept NumPy arrays or Python ints and broadcast. No floating point is used anywhere.
"""

from __future__ import annotations

import numpy as np

# Shifts are clamped so the rounding constant 2**(s-1) never reaches int64's sign bit; with
# magnitudes below 2**61 a shift of 62 already rounds to zero, as any larger one would.
MAX_SHIFT = 62


def _i64(v):
    return np.asarray(v, dtype=np.int64)


def rne_shift(v, s):
    """Round-to-nearest-even of ``v / 2**s`` for ``s >= 1`` (IEEE 754's default rounding).

    Hardware: add ``2**(s-1) - 1`` plus the bit that will become the LSB, then drop ``s`` bits;
    an exact half then rounds up only when the kept LSB is odd.
    """
    v, s = _i64(v), np.minimum(_i64(s), MAX_SHIFT)
    return (v + ((np.int64(1) << (s - 1)) - 1) + ((v >> s) & 1)) >> s  # needs v < 2**61


def rha_shift(v, s):
    """Round-half-away-from-zero of ``v / 2**s`` for ``s >= 1`` (C ``roundf`` on a magnitude)."""
    v, s = _i64(v), np.minimum(_i64(s), MAX_SHIFT)
    return (v + (np.int64(1) << (s - 1))) >> s


def bit_length(v):
    """Position of the leading one plus one (0 for 0): a priority encoder, for ``0 <= v < 2**63``.

    Smearing the leading one into every lower bit and counting ones needs no table and no
    floating point.
    """
    v = _i64(v).copy()
    for k in (1, 2, 4, 8, 16, 32):
        v |= v >> k
    return np.bitwise_count(v).astype(np.int64)


def round_sig(v, bits: int, length=None):
    """Round ``v >= 0`` to ``bits`` significant bits with RNE, as an fp32 (bits=24) result does.

    Returns ``(sig, exp)`` with ``sig * 2**exp`` equal to the rounded value and ``sig`` normalized
    to ``[2**(bits-1), 2**bits)`` (a carry out of the rounding bumps ``exp``); ``v == 0`` gives
    ``sig == 0`` and an unspecified ``exp``. ``length`` is ``bit_length(v)`` if already known.
    ``v`` below 2**61.
    """
    v = _i64(v)
    n = bit_length(v) if length is None else _i64(length)
    exp = n - bits
    # Values shorter than ``bits`` are shifted up first, so one RNE shift (by at least 1, with
    # an extra guard bit) serves both cases; it is exact when nothing is dropped.
    up = np.maximum(-exp, 0)
    sig = rne_shift(v << (up + 1), exp + up + 1)
    carry = sig >> bits
    return sig >> carry, exp + carry


def div_round_sig(num, den, bits: int = 24, num_len=None, den_len=None):
    """``num / den`` for positive integers, rounded to ``bits`` significant bits with RNE.

    Integer long division (hardware: a restoring or pipelined divider): the dividend is
    pre-shifted so the quotient has ``bits + 2`` or ``bits + 3`` bits; the remainder is the
    sticky bit, jammed below the guard bit so an inexact quotient never looks like a tie.
    Returns ``(sig, exp)`` as :func:`round_sig`. Operands below 2**24; ``num_len``/``den_len``
    are their bit lengths when known (normalized significands).
    """
    num, den = _i64(num), _i64(den)
    num_len = bit_length(num) if num_len is None else num_len
    den_len = bit_length(den) if den_len is None else den_len
    shift = bits + 2 + den_len - num_len
    if np.any(shift < 0) or np.any(num_len + shift > 62):
        raise ValueError("div_round_sig operands out of range")
    q, r = np.divmod(num << shift, den)
    jammed = (q << 1) | (r != 0)
    # q is in [2**(bits+1), 2**(bits+3)), so the jammed value has bits + 3 or bits + 4 bits.
    sig, exp = round_sig(jammed, bits, length=bits + 3 + (jammed >> (bits + 3)))
    return sig, exp - shift - 1
