"""FP16 bit patterns as integers: the fixed-point and normalized forms the ggml formats compute in.

Conventions used throughout the golden model (docs/numerics.md, section "Number representation"):

* ``fx`` (fixed point): every finite FP16 value is an integer multiple of 2**-24 below 2**16, so
  ``value = fx * 2**-24`` with ``fx`` an integer below 2**40. Sums and differences of FP16 values
  are exact in this form.
* normalized: a non-zero FP16 magnitude is ``M * 2**(E - 25)`` with ``M`` in ``[1024, 2047]``;
  for normal numbers ``E`` is the exponent field, subnormals are shifted up (``E <= 0``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from kvpath.elements import ELEMENTS
from kvpath.golden.num import elem
from kvpath.golden.num.rounding import bit_length

FP16 = ELEMENTS["fp16"]
SIGN = FP16.sign_bit
MAG = FP16.mag_mask
EXP_MASK = FP16.exp_mask
FRAC_MASK = FP16.frac_mask
MAX_FINITE = FP16.max_finite  # 65504


def sanitize(x_bits):
    """kvpath's input rule for FP16 (``elem.sanitize``): ``(bits, count)``."""
    return elem.sanitize(x_bits, FP16)


def encode(sign, sig, exp, length=None):
    """FP16 pattern of ``(-1)**sign * sig * 2**exp``, RNE, saturating at 65504 (``elem.encode``)."""
    return elem.encode(sign, sig, exp, FP16, length)


@lru_cache(maxsize=None)
def _tables():
    mag = np.arange(1 << 15, dtype=np.int64)
    e, f = mag >> 10, mag & FRAC_MASK
    fx = np.where(e > 0, (f | 1024) << np.maximum(e - 1, 0), f)
    # Subnormals: shift the fraction up to [1024, 2047] (a 10-bit leading-zero count) and lower E.
    lz = np.where(f > 0, 11 - bit_length(f), 0)
    m = np.where(e > 0, f | 1024, f << lz)
    ex = np.where(e > 0, e, 1 - lz)
    for t in (fx, m, ex):
        t.setflags(write=False)
    return fx, m, ex


@lru_cache(maxsize=None)
def fx44_tables():
    """``(|x|, x)`` as ``value * 2**44`` indexed by the full 16-bit pattern (int64, < 2**60).

    The software fast path (``fast.py``) starts from these: 20 guard bits above the fixed point
    let a per-block right shift scale any block without losing the bits that matter.
    """
    fx = _tables()[0]
    allbits = np.arange(1 << 16, dtype=np.int64)
    mag = fx[allbits & MAG] << 20
    signed = np.where(allbits & SIGN, -mag, mag)
    mag.setflags(write=False)
    signed.setflags(write=False)
    return mag, signed


def scale_by_code(d_bits, q):
    """FP16 pattern of ``fp32(d) * q`` for FP16 ``d`` and a small integer code ``q`` (|q| <= 128).

    The product of the 11-bit significand and |q| is exact (below 2**18), so this is one RNE
    rounding to FP16 with saturation. Returns ``(bits, overflow)``. The product's bit length is
    ``bit_length(|q|) + 10``, plus one when the product carries into the next bit.
    """
    d_bits, q = np.asarray(d_bits), np.asarray(q, np.int64)
    m, e = normalize(d_bits)
    aq = np.abs(q)
    p = m * aq
    qlen = _small_bit_length()[aq]
    length = qlen + 10 + (p >> (qlen + 10))
    sign = ((d_bits >> 15).astype(np.int64)) ^ (q < 0)
    return encode(sign, p, e - 25, length=np.where(p == 0, 0, length))


@lru_cache(maxsize=None)
def _small_bit_length():
    t = bit_length(np.arange(129, dtype=np.int64))
    t.setflags(write=False)
    return t


def fx_magnitude(x_bits):
    """|x| in fixed point (units of 2**-24) for finite FP16 bit patterns (sign ignored)."""
    return _tables()[0][np.asarray(x_bits) & MAG]


def fx_signed(x_bits):
    """x in fixed point, signed (both zeros give 0)."""
    x_bits = np.asarray(x_bits)
    a = fx_magnitude(x_bits)
    return np.where(x_bits & SIGN, -a, a)


def normalize(x_bits):
    """``(M, E)`` with ``|x| = M * 2**(E - 25)``, ``M`` in [1024, 2047]; ``(0, 1)`` for zero."""
    _, m, ex = _tables()
    i = np.asarray(x_bits) & MAG
    return m[i], ex[i]
