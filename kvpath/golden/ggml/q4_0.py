"""q4_0: d = max/-8 (max = signed element of largest |x|), codes = trunc(x/d + 8.5) clipped to 4 bits.

18-byte blocks: d (LE fp16), then 16 nibble bytes (see nibbles.py). ``header`` is the block unit,
``lane`` the exact per-element chain.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from kvpath.golden.num import fp16
from kvpath.golden.ggml.extremes import block_min_max
from kvpath.golden.ggml.elementwise import ADD_FRAC_BITS, mul_rne24, trunc_fp32_add
from kvpath.packing import pack_nibbles, unpack_nibbles
from kvpath.golden.ggml.recip import recip_table_q4_0

OFFSET = 8  # codes are stored biased by 8
BIAS_FIXED = 17 << (ADD_FRAC_BITS - 1)  # 8.5


class Const(NamedTuple):
    """``|id| = id_sig * 2**id_exp`` (0 in a zero block); ``id_neg`` = 1 when id < 0 (max > 0)."""

    id_sig: np.ndarray
    id_exp: np.ndarray
    id_neg: np.ndarray


def block_max(bits: np.ndarray):
    """``(|max|, sign of max)``: the element of largest magnitude, the first one on ties.

    That is np.argmax's rule and ggml's strict ``>`` scan. The largest magnitude belongs to the
    block's signed min or max; only when those are +a and -a (or +0 and -0) does the position
    decide, and then the first element of that magnitude wins.
    """
    mn, mx = block_min_max(bits)
    mag_mn, mag_mx = mn & fp16.MAG, mx & fp16.MAG
    amax = np.maximum(mag_mn, mag_mx)
    sign = np.where(mag_mn > mag_mx, mn >> 15, mx >> 15).astype(np.int64)
    tie = np.flatnonzero((mag_mn == mag_mx) & (mn != mx))
    if tie.size:
        first = np.argmax((bits[tie] & fp16.MAG) == amax[tie], axis=1)
        sign[tie, 0] = bits[tie, first] >> 15
    return amax, sign


def scale_unit(amax: np.ndarray):
    """The block unit's arithmetic for a positive max: ``amax`` pattern -> (|d| field, |id| sig, exp)."""
    ma, ea = fp16.normalize(amax)
    rom = recip_table_q4_0()
    row = np.maximum(ma - 1024, 0)
    zero = amax == 0
    # d = max / -8 is exact in fp32; only its conversion to FP16 rounds (when it is subnormal).
    d_bits, _ = fp16.encode(0, np.where(zero, 0, ma), ea - 28)
    return d_bits, np.where(zero, 0, rom.id_sig[row]), rom.id_exp[row] - ea + 28


@lru_cache(maxsize=None)
def _scale_table():
    # Depends on |max| alone (the sign only flips d and id), so tabulate all 32768 magnitudes.
    return scale_unit(np.arange(1 << 15, dtype=np.uint16))


def header(bits: np.ndarray):
    """(nb, 32) sanitized patterns -> ((nb, 1) uint16 d field, Const of (nb, 1) arrays)."""
    amax, smax = block_max(bits)
    d_mag, id_sig, id_exp = _scale_table()
    # d's sign is the opposite of max's, also for a zero max: a zero block stores -0 when its
    # first element is +0 (gguf's argmax picks the first element; docs/numerics.md section 7).
    d_bits = d_mag[amax] | ((1 - smax) << 15).astype(np.uint16)
    return d_bits, Const(id_sig[amax], id_exp[amax], 1 - smax)


def lane(bits: np.ndarray, c: Const) -> np.ndarray:
    """Exact codes (int64 in [0, 15]) for patterns ``bits``; ``c`` broadcasts against them."""
    mx, ex = fp16.normalize(bits)
    y, y_exp = mul_rne24(mx, ex - 25, c.id_sig, c.id_exp)  # |fl32(x * id)|
    y_neg = (bits >> 15).astype(np.int64) ^ c.id_neg
    return np.minimum(trunc_fp32_add(y, y_exp, y_neg, BIAS_FIXED), 15)  # trunc(fl32(y + 8.5))


pack = pack_nibbles


def dequantize_blocks(blocks: np.ndarray):
    d_bits, n_bad = fp16.sanitize(blocks[:, 0:2].copy().view(np.uint16))
    q = unpack_nibbles(blocks[:, 2:]) - OFFSET
    # (q - 8) is converted to float before multiplying, so a zero code gives +0 * d: d's sign.
    out, sat = fp16.scale_by_code(d_bits, q)
    return out, int(np.count_nonzero(sat)), n_bad
