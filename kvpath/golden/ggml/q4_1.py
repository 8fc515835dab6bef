"""q4_1: d = (max - min)/15, m = min, codes = trunc((x - min)/d + 0.5) clipped to 4 bits.

20-byte blocks: d, m (LE fp16 each), then 16 nibble bytes as q4_0. ``header`` is the block unit,
``lane`` the exact per-element chain.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kvpath.golden.ggml import extremes
from kvpath.golden.num import fp16
from kvpath.golden.ggml.elementwise import ADD_FRAC_BITS, mul_rne24, trunc_fp32_add
from kvpath.packing import pack_nibbles, unpack_nibbles
from kvpath.golden.ggml.recip import fp32_div, fp32_recip
from kvpath.golden.num.rounding import round_sig

class Const(NamedTuple):
    """``kmin``: the block min in fixed point (2**-24 units); ``id = id_sig * 2**id_exp`` (0 if d = 0)."""

    kmin: np.ndarray
    id_sig: np.ndarray
    id_exp: np.ndarray


LEVELS = 15  # d spans max - min in 15 steps
HALF_FIXED = 1 << (ADD_FRAC_BITS - 1)  # 0.5


def block_min_max(bits: np.ndarray):
    """``(min pattern, max pattern)`` per block, (nb, 1) uint16.

    Ties only matter for the sign of a zero minimum (+0 == -0). gguf's NumPy reduction picks
    whichever zero its SIMD lanes meet last, which depends on data layout and alignment; kvpath
    fixes the rule to the last zero in the block, which is what gguf gives in every all-zero
    block and what a comparator tree that prefers the higher lane index computes.
    """
    mn, mx = extremes.block_min_max(bits)
    both = np.flatnonzero(mn[:, 0] == fp16.SIGN)  # min is -0: a +0 may also be there
    if both.size:
        zeros = (bits[both] & fp16.MAG) == 0
        last = bits.shape[1] - 1 - np.argmax(zeros[:, ::-1], axis=1)
        mn[both, 0] = bits[both, last]
    return mn, mx


def header(bits: np.ndarray):
    """(nb, 32) sanitized patterns -> ((nb, 2) uint16 d and m fields, Const of (nb, 1) arrays)."""
    m_bits, max_bits = block_min_max(bits)
    kmin = fp16.fx_signed(m_bits)
    span = fp16.fx_signed(max_bits) - kmin  # max - min, exact in fixed point
    zero = span == 0
    # fl32(max - min), then fl32(that / 15), then fl32(1 / d): three roundings, as ggml.
    s_sig, s_exp = round_sig(np.where(zero, 1, span), 24)
    d_sig, d_exp = fp32_div(s_sig, s_exp - 24, LEVELS)
    id_sig, id_exp = fp32_recip(d_sig, d_exp)
    # max == min: ggml's max - min is +0 (x - x), so d is +0 and its reciprocal is taken as 0.
    d_bits, _ = fp16.encode(0, np.where(zero, 0, d_sig), d_exp, length=24)
    hdr = np.concatenate([d_bits, m_bits], axis=1).astype(np.uint16)
    return hdr, Const(kmin, np.where(zero, 0, id_sig), id_exp)


def lane(bits: np.ndarray, c: Const) -> np.ndarray:
    """Exact codes (int64 in [0, 15]) for patterns ``bits``; ``c`` broadcasts against them."""
    t_sig, t_exp = round_sig(fp16.fx_signed(bits) - c.kmin, 24)  # fl32(x - min)
    u, u_exp = mul_rne24(t_sig, t_exp - 24, c.id_sig, c.id_exp, a_bits=24)  # fl32(t * id)
    return np.minimum(trunc_fp32_add(u, u_exp, 0, HALF_FIXED), 15)  # trunc(fl32(u + 0.5))


pack = pack_nibbles


def dequantize_blocks(blocks: np.ndarray):
    hdr, n_bad = fp16.sanitize(blocks[:, 0:4].copy().view(np.uint16))
    d_bits, m_bits = hdr[:, 0:1], hdr[:, 1:2]
    q = unpack_nibbles(blocks[:, 4:])
    # d * q is exact (11 x 4 bits); adding m rounds once to fp32, then once more to FP16.
    dq = fp16.fx_magnitude(d_bits) * q
    dq_neg = (d_bits >> 15).astype(np.int64)
    m = fp16.fx_signed(m_bits)
    total = np.where(dq_neg != 0, -dq, dq) + m
    w_sig, w_exp = round_sig(np.abs(total), 24)
    # IEEE zero sums: -0 only when both addends are -0; exact cancellation gives +0.
    neg_zero = (dq == 0) & (dq_neg != 0) & (m_bits == fp16.SIGN)
    sign = np.where(total == 0, neg_zero, total < 0).astype(np.int64)
    out, sat = fp16.encode(sign, w_sig, w_exp - 24, length=24)  # w_sig is normalized
    return out, int(np.count_nonzero(sat)), n_bad
