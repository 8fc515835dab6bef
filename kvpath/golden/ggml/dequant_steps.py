"""Integer model of the dequantizer's element arithmetic, step for step as the RTL computes it.

The RTL (``dequant_mul.py``, ``dequant_q41.py``) is hard to test exhaustively in simulation; this
model follows the same fixed widths, windows, shifts and rounding decisions in vectorized NumPy, so
tests can run it over every FP16 scale and every code against gguf, and the simulator only has to
show that the RTL equals the model on a large random set. Nothing here uses floating point.

Notation. A sanitized FP16 field decodes to sign ``s``, significand ``M`` (hidden bit included, so
``M < 2048``) and grid position ``g = max(e, 1) - 1`` (0..29), with value ``(-1)**s * M * 2**(g - 24)``.
Every FP16 value is an integer on the 2**-24 grid, which is what keeps subnormals free: an FP16
result whose significand's LSB sits at grid position ``p >= 0`` encodes as ``(p << 10) + sig``
whether it is normal (``sig`` in [1024, 2048]) or subnormal (``p == 0``, ``sig < 1024``), and a
rounding carry to 2048 moves into the exponent by itself.

BF16 output (``*_bf16`` functions, and ``elem="bf16"`` of ``q41_element``) keeps the same products and
sums and changes only the last step: every result from finite FP16 scales lies in [2**-24, 2**21), so
it is a normal BF16 number whatever the scale, and the significand is always taken from the leading
one (8 bits, RNE). A BF16 pattern whose significand ``sig`` (hidden bit included, in [128, 256])
has its leading one worth ``2**(p - 14)`` (``p`` = the grid position an FP16 LSB would have) encodes
as ``((p + BF16_POS) << 7) + sig``: exponent field ``p + 113``, minus one for the hidden bit. No
result can reach BF16's largest value, so nothing saturates.
"""

from __future__ import annotations

import numpy as np

SIGN = 0x8000
MAX_FINITE = 0x7BFF
INF_BITS = 0x7C00

# q4_1 window: fixed point with FRAC fraction bits below the window's LSB; see q41_block.
FRAC = 8
SUM_BITS = 41  # |sum| < 2**41 in fixed point units
LEAD_LO = 18  # a non-zero |sum| has its leading one at or above this fixed-point bit
SHIFT_MAX = 22  # largest window shift (leading one at SUM_BITS - 1)
BF16_POS = 112  # BF16 exponent field - 1 of a value whose FP16 LSB would sit at grid position 0


def sanitize(bits):
    """kvpath's rule for a non-finite FP16 field: +/-Inf -> +/-65504, NaN -> +0; and the flag."""
    bits = np.asarray(bits, dtype=np.int64)
    nonfinite = (bits & 0x7C00) == 0x7C00
    nan = nonfinite & ((bits & 0x3FF) != 0)
    out = np.where(nonfinite, (bits & SIGN) | MAX_FINITE, bits)
    return np.where(nan, 0, out), nonfinite


def fields(bits):
    """``(s, M, g)`` of sanitized FP16 bit patterns."""
    bits = np.asarray(bits, dtype=np.int64)
    e = (bits >> 10) & 31
    sig = np.where(e != 0, (bits & 0x3FF) | 0x400, bits & 0x3FF)
    return bits >> 15, sig, np.maximum(e, 1) - 1


def msb(x):
    """Position of the leading one of positive integers (garbage for 0)."""
    x = np.asarray(x, dtype=np.int64)
    out = np.zeros_like(x)
    for k in (32, 16, 8, 4, 2, 1):
        big = (x >> k) != 0
        out = np.where(big, out + k, out)
        x = np.where(big, x >> k, x)
    return out


def _low_mask(n):
    return (np.int64(1) << np.asarray(n, dtype=np.int64)) - 1


def finish(sign, pos, sig, inc):
    """Encode ``sign``, LSB grid position ``pos``, significand ``sig`` plus round-up ``inc``.

    Returns ``(bits, saturated)``; a magnitude that reaches the Inf pattern becomes 65504.
    """
    enc = (pos << 10) + sig + inc
    sat = enc >= INF_BITS
    return (sign << 15) | np.where(sat, MAX_FINITE, enc), sat


def mul_element(d_bits, code):
    """q8_0 / q4_0: FP16 of ``d * code`` (``code`` signed, |code| <= 128), one RNE rounding.

    The product ``M * |code|`` is below 2**18; its LSB sits at grid ``g``. Only when the leading one
    is above bit 10 does the significand need rounding, by ``sh = lead - 10`` (0..7) bits: a
    subnormal d keeps ``sh = 0``, so its product lands on the 2**-24 grid unrounded.
    """
    s, m, g = fields(d_bits)
    code = np.asarray(code, dtype=np.int64)
    sign = s ^ (code < 0)
    p = m * np.abs(code)
    hi = p >> 10
    sh = np.where(hi != 0, msb(hi), 0)  # msb(p) - 10, or 0 below 1024
    sig = p >> sh
    r = np.where(sh > 0, (p >> np.maximum(sh - 1, 0)) & 1, 0)
    t = (p & _low_mask(np.maximum(sh - 1, 0))) != 0
    inc = r & (t | (sig & 1))
    out, sat = finish(sign, g + sh, sig, inc)
    zero = p == 0
    return np.where(zero, sign << 15, out), sat & ~zero


def q41_block(d_bits, m_bits):
    """Block constants of q4_1's ``fl32(d*q + m)``: a window that holds the sum exactly or with a
    sticky bit strictly below fp32's guard bit, for all 16 codes.

    The window's LSB sits at grid ``base``; sums are fixed point with FRAC more bits below it.
    ``delta = g_d - g_m`` picks one of three placements:

    * ``delta >= 2`` (d*q dominates, d normal so ``M_d*q >= 1024`` for q >= 1): ``base = g_d - 16``,
      the sum's leading one is at window bit 25..31, so fp32's guard bit is at window bit 1 or
      above and m's bits below the fixed point's LSB (``delta > 24``) can only feed the sticky:
      m is floored and a flag remembers the lost bits. (q == 0 bypasses the window: the sum is m.)
    * ``delta <= -6`` (m dominates, m normal): ``base = g_m - 21``, leading one at 30..32; d*q is
      exact with up to 8 fraction bits (``-delta <= 29``).
    * otherwise both terms are exact at ``base = min(g_d, g_m) - 10``: cancellation can move the
      leading one anywhere from bit 10 up, and the sum is short enough to be exact in fp32.
    In every case the window shift ``lead - 10`` stays in 0..SHIFT_MAX (22), and the magnitude of a
    sum stays below 2**SUM_BITS in fixed point units.
    """
    sd, md, gd = fields(d_bits)
    sm, mm, gm = fields(m_bits)
    delta = gd - gm
    far_a = delta >= 2
    far_b = delta <= -6
    base = np.where(far_a, gd - 16, np.where(far_b, gm - 21, np.minimum(gd, gm) - 10))
    kx = gd - base + FRAC  # 0..24
    ky = gm - base + FRAC  # -5..29
    dfx = md << kx
    dfx = np.where(sd != 0, -dfx, dfx)
    ym = np.where(sm != 0, -mm, mm)
    yfx = np.where(ky >= 0, ym << np.maximum(ky, 0), ym >> np.maximum(-ky, 0))  # floor
    sticky_y = (ky < 0) & ((mm & _low_mask(np.maximum(-ky, 0))) != 0)
    return dict(d_bits=np.asarray(d_bits, np.int64), m_bits=np.asarray(m_bits, np.int64), sd=sd, sm=sm,
                md=md, mm=mm, base=base, dfx=dfx, yfx=yfx, sticky_y=sticky_y)


def q41_element(b, q, elem: str = "fp16"):
    """FP16 (or BF16) of ``fl32(d*q + m)`` from ``q41_block`` constants ``b`` and codes ``q`` (0..15)."""
    q = np.asarray(q, dtype=np.int64)
    s = b["dfx"] * q + b["yfx"]  # the RTL adds T[q & 3] + V[q >> 2], both precomputed per block
    neg = s < 0
    sticky_y = b["sticky_y"]
    v = np.where(neg, -s - sticky_y, s)  # floor of |sum| (the RTL: ~s + !sticky_y)
    hi = v >> LEAD_LO
    zero = hi == 0  # exact cancellation (a non-zero sum has its lead at or above LEAD_LO)
    # Window shift = (leading one in the window) - 10 = msb(v) - FRAC - 10. For FP16 the quantum
    # never goes below 2**-24 (the RTL ORs a one-hot floor into the leading-one search); BF16
    # results are all normal, so there the shift is the leading one itself.
    sh = msb(np.where(zero, 1, hi))
    if elem == "fp16":
        sh = np.maximum(sh, -b["base"])
    # The widths the RTL is built for (a window choice that broke them would fail here first).
    assert (v >> SUM_BITS == 0).all() and (sh <= SHIFT_MAX).all() and (b["base"] + sh + BF16_POS >= 0).all()
    assert elem == "bf16" or (b["base"] + sh >= 0).all()
    v6 = v << 6  # window bits sh-14 .. sh+10 are V6 bits sh .. sh+24
    z = (v6 >> sh) & ((1 << 25) - 1)
    t = ((v6 & _low_mask(sh)) != 0) | sticky_y
    if elem == "fp16":
        out, sat = _q41_round(z, t, 11, neg, b["base"] + sh)
    else:
        out, sat = _q41_round(z, t, 8, neg, b["base"] + sh + BF16_POS)
    out = np.where(zero, 0, out)  # x + (-x) = +0
    sat = sat & ~zero
    # d*q == 0 (q == 0 or d == +/-0): the sum is m, and -0 only when both addends are -0.
    bypass = (q == 0) | (b["md"] == 0)
    m_zero = b["mm"] == 0
    m_out = b["m_bits"] if elem == "fp16" else fp16_to_bf16(b["m_bits"])
    by_out = np.where(m_zero, (b["sd"] & b["sm"]) << 15, m_out)
    return np.where(bypass, by_out, out), sat & ~bypass


def _q41_round(z, t, sig_bits: int, neg, pos):
    """Round the 25-bit window ``z`` (24 fp32 bits from the leading one, then the guard bit) and
    sticky ``t`` to fp32, then that to ``sig_bits`` (11: FP16, 8: BF16); encode at ``pos``."""
    low = 24 - sig_bits  # fp32 bits below the target's LSB: round bit + ``mid``
    sig, r = z >> (low + 1), (z >> low) & 1
    mid_mask = (1 << (low - 1)) - 1
    mid, g = (z >> 1) & mid_mask, z & 1
    # fp32 keeps 24 bits (down to mid's LSB); round there first, then round that to the target.
    up32 = g & (t | (mid & 1))
    carry = up32 & (mid == mid_mask)  # the fp32 round-up ripples into the target's round bit
    inc = np.where(carry, r | (sig & 1), r & ((mid != 0) | up32 | (sig & 1)))
    if sig_bits == 11:
        return finish(neg.astype(np.int64), pos, sig, inc)
    return finish_bf16(neg.astype(np.int64), pos, sig, inc), np.zeros(np.shape(sig), bool)


def bf16_fields(bits):
    """``(s, M, E)`` of sanitized FP16 patterns with ``M`` normalized to [1024, 2048) (0 for zero)
    and value ``(-1)**s * M * 2**(E - 24)``: a subnormal's significand is shifted up, E lowered."""
    s, m, g = fields(bits)
    up = 10 - np.where(m != 0, msb(np.maximum(m, 1)), 10)
    return s, m << up, g - up


def finish_bf16(sign, pos, sig, inc):
    """BF16 pattern from ``pos`` (exponent field - 1), ``sig`` in [128, 256) and round-up ``inc``;
    a carry to 256 moves into the exponent. Never saturates (see the module notes)."""
    return (sign << 15) | ((pos << 7) + sig + inc)


def fp16_to_bf16(bits):
    """BF16 of sanitized FP16 patterns: 11 significant bits rounded to 8 (RNE), zeros kept."""
    s, m, e = bf16_fields(bits)
    sig, r, t = m >> 3, (m >> 2) & 1, (m & 3) != 0
    out = finish_bf16(s, e + BF16_POS, sig, r & (t | (sig & 1)))
    return np.where(m == 0, s << 15, out)


def mul_element_bf16(d_bits, code):
    """q8_0 / q4_0: BF16 of ``d * code`` (``code`` signed, |code| <= 128), one RNE rounding.

    ``d`` is normalized per block (``bf16_fields``), so a non-zero product ``M * |code|`` has its
    leading one at bit ``10 + sh`` (``sh`` = 0..7, read off bits 10.. as on the FP16 path) and 8
    bits are kept from there: ``sh + 3`` are rounded off.
    """
    s, m, e = bf16_fields(d_bits)
    code = np.asarray(code, dtype=np.int64)
    sign = s ^ (code < 0)
    p = m * np.abs(code)
    hi = p >> 10
    sh = np.where(hi != 0, msb(np.maximum(hi, 1)), 0)
    sig = p >> (sh + 3)
    r = (p >> (sh + 2)) & 1
    t = (p & _low_mask(sh + 2)) != 0
    out = finish_bf16(sign, e + sh + BF16_POS, sig, r & (t | (sig & 1)))
    zero = p == 0
    return np.where(zero, sign << 15, out), np.zeros(np.shape(out), bool)


def q40_code(q):
    """q4_0's signed multiplier ``q - 8`` of a 4-bit code."""
    return np.asarray(q, dtype=np.int64) - 8


def q80_code(byte):
    """q8_0's signed code of a stored byte."""
    byte = np.asarray(byte, dtype=np.int64)
    return byte - ((byte & 0x80) << 1)
