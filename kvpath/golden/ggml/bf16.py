"""ggml formats (q8_0, q4_0, q4_1) quantized from BF16 elements: block units, lanes, blocks.

The reference is ``gguf.quantize(x_bf16.astype(np.float32), ...)``: the same fp32 chains as for
FP16 input (docs/numerics.md sections 3-5), but BF16's range reaches fp32's, so a block's scale
can be an fp32 subnormal, its reciprocal or its span can overflow to Inf, and the FP16 scale
fields can overflow to Inf or underflow to zero. Every fp32 step here rounds with
:func:`bf16_arith.round_fp32`, which covers all of that (docs/numerics.md, "BF16 input").

**kvpath's rule where gguf is platform-defined.** When a block's reciprocal ``id`` is Inf (q8_0,
q4_0, q4_1: the scale ``d`` is at most 2**-128) or q4_1's span ``max - min`` overflows, gguf's
products are +/-Inf or NaN and NumPy casts those to the integer codes in a platform-dependent
way (C leaves it undefined). kvpath defines every code of such a *void block* as 0, which is
what NumPy gives on x86-64 (measured, NumPy 2.4); the header fields are gguf's.
:func:`void_blocks` tells which blocks the rule decides.

``header(bits, fmt)`` is the block unit and ``lane(bits, const, fmt)`` the per-element chain;
``bits`` are sanitized BF16 patterns (``kvpath.golden.num.elem.sanitize``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from kvpath.config import get_format

from kvpath.golden.ggml import q4_0 as fp16_q4_0
from kvpath.golden.ggml import q4_1 as fp16_q4_1
from kvpath.golden.num.bf16_arith import BIAS_SHIFT, FP16_INF, add_signed, divide, multiply, normalize, recip, to_fp16
from kvpath.golden.ggml.elementwise import signed_code, trunc_fp32_add
from kvpath.golden.ggml.extremes import block_min_max
from kvpath.packing import pack_nibbles
from kvpath.golden.num.rounding import rha_shift

MAG = 0x7FFF


class Const(NamedTuple):
    """Per-block lane constants. ``id = id_sig * 2**id_exp`` (``id_sig == 0`` when ``id`` is 0, or
    in a void block, whose codes are all 0); ``id_neg``: q4_0's sign of ``id``; ``min_bits``:
    q4_1's block minimum (BF16 pattern); ``void``: the block's codes come from kvpath's rule."""

    id_sig: np.ndarray
    id_exp: np.ndarray
    id_neg: np.ndarray
    min_bits: np.ndarray
    void: np.ndarray


def _recip_or_zero(sig, exp):
    """fl32(1/d) for d = sig * 2**exp, and whether it overflowed; ``sig == 0`` gives id_sig 0."""
    zero = sig == 0
    i_sig, i_exp, i_inf = recip(np.where(zero, 1, sig), exp)
    return np.where(zero, 0, i_sig), i_exp, i_inf & ~zero


# --- q8_0: d = amax / 127, q = roundf(x * fl32(1/d)) ------------------------------------------

@lru_cache(maxsize=None)
def q8_0_scale_table():
    """Per 15-bit ``amax``: (d field, id_sig, id_exp, void). The block unit depends on amax alone."""
    amax = np.arange(1 << 15, dtype=np.int64)
    m, e = normalize(amax)
    d_sig, d_exp, _ = divide(m, e - BIAS_SHIFT, 127)  # amax / 127 cannot overflow fp32
    d_bits = to_fp16(0, d_sig, d_exp)
    i_sig, i_exp, void = _recip_or_zero(d_sig, d_exp)
    return d_bits, np.where(void, 0, i_sig), i_exp, void


def q8_0_header(bits: np.ndarray):
    mn, mx = block_min_max(bits)
    amax = np.maximum(mn & MAG, mx & MAG)
    d_bits, i_sig, i_exp, void = q8_0_scale_table()
    zeros = np.zeros_like(amax, dtype=np.int64)
    return d_bits[amax], Const(i_sig[amax], i_exp[amax], zeros, zeros, void[amax])


def q8_0_lane(bits: np.ndarray, c: Const) -> np.ndarray:
    m, e = normalize(bits)
    p_sig, p_exp, _ = multiply(m, e - BIAS_SHIFT, c.id_sig, c.id_exp)  # fl32(x * id), |.| < 127.5
    q = rha_shift(p_sig, np.maximum(-p_exp, 1))  # roundf
    return signed_code(q, np.asarray(bits, np.int64) >> 15)


# --- q4_0: d = max / -8, q = min(15, trunc(fl32(fl32(x * fl32(1/d)) + 8.5))) -----------------

@lru_cache(maxsize=None)
def q4_0_scale_table():
    """Per 15-bit ``|max|``: (|d| field, |id| sig, exp, void). ``max / -8`` is exact in fp32."""
    amax = np.arange(1 << 15, dtype=np.int64)
    m, e = normalize(amax)
    d_mag = to_fp16(0, m, e - BIAS_SHIFT - 3)
    i_sig, i_exp, void = _recip_or_zero(m, e - BIAS_SHIFT - 3)
    return d_mag, np.where(void, 0, i_sig), i_exp, void


def q4_0_header(bits: np.ndarray):
    amax, smax = fp16_q4_0.block_max(bits)  # sign-magnitude order is the same for BF16
    d_mag, i_sig, i_exp, void = q4_0_scale_table()
    d_bits = d_mag[amax] | ((1 - smax) << 15).astype(np.uint16)
    zeros = np.zeros_like(amax, dtype=np.int64)
    return d_bits, Const(i_sig[amax], i_exp[amax], 1 - smax, zeros, void[amax])


def q4_0_lane(bits: np.ndarray, c: Const) -> np.ndarray:
    m, e = normalize(bits)
    y_sig, y_exp, _ = multiply(m, e - BIAS_SHIFT, c.id_sig, c.id_exp)  # |fl32(x * id)| <= 8
    y_neg = (np.asarray(bits, np.int64) >> 15) ^ c.id_neg
    code = np.minimum(trunc_fp32_add(y_sig, y_exp, y_neg, fp16_q4_0.BIAS_FIXED), 15)
    return np.where(c.void, 0, code)


# --- q4_1: d = (max - min) / 15, m = min, q = min(15, trunc(fl32(fl32((x - min) * id) + 0.5))) -

def q4_1_header(bits: np.ndarray):
    mn, mx = fp16_q4_1.block_min_max(bits)  # kvpath's zero rule: the last zero in the block
    mn64 = mn.astype(np.int64)
    m_min, e_min = normalize(mn64)
    m_bits = to_fp16(mn64 >> 15, m_min, e_min - BIAS_SHIFT)
    s_sig, s_exp, s_inf, _ = add_signed(mx, mn, 1)  # fl32(max - min) >= 0
    zero = s_sig == 0
    d_sig, d_exp, _ = divide(np.where(zero, 1, s_sig), s_exp, 15)
    d_bits = np.where(s_inf, FP16_INF, to_fp16(0, np.where(zero, 0, d_sig), d_exp)).astype(np.uint16)
    i_sig, i_exp, i_inf = _recip_or_zero(np.where(zero | s_inf, 0, d_sig), d_exp)
    # Span Inf: d is Inf and id = 1/Inf = 0. id Inf: every product is Inf or NaN. Both void.
    void = s_inf | i_inf
    hdr = np.concatenate([d_bits, m_bits], axis=1).astype(np.uint16)
    zeros = np.zeros_like(mn64)
    return hdr, Const(np.where(void, 0, i_sig), i_exp, zeros, mn64, void)


def q4_1_lane(bits: np.ndarray, c: Const) -> np.ndarray:
    t_sig, t_exp, _, _ = add_signed(bits, c.min_bits, 1)  # fl32(x - min), never Inf unless void
    u_sig, u_exp, _ = multiply(t_sig, t_exp, c.id_sig, c.id_exp)  # fl32(t * id)
    return np.minimum(trunc_fp32_add(u_sig, u_exp, 0, fp16_q4_1.HALF_FIXED), 15)


_UNITS = {
    "q8_0": (q8_0_header, q8_0_lane, lambda q: q.astype(np.int8).view(np.uint8)),
    "q4_0": (q4_0_header, q4_0_lane, pack_nibbles),
    "q4_1": (q4_1_header, q4_1_lane, pack_nibbles),
}


def _units(fmt: str):
    f = get_format(fmt)
    if f.name not in _UNITS:
        raise ValueError(f"{f.name} is not a ggml format; BF16 input of the ggml family is q8_0, q4_0, q4_1")
    return f, _UNITS[f.name]


def header(bits: np.ndarray, fmt: str):
    """(nb, 32) sanitized BF16 patterns -> ((nb, fields) uint16 header, Const of (nb, 1) arrays)."""
    return _units(fmt)[1][0](np.asarray(bits, np.uint16))


def lane(bits: np.ndarray, c: Const, fmt: str) -> np.ndarray:
    """Codes (int64) of BF16 patterns ``bits`` with their blocks' constants ``c`` (broadcast)."""
    return _units(fmt)[1][1](bits, c)


def void_blocks(bits: np.ndarray, fmt: str) -> np.ndarray:
    """(nb,) bool: blocks whose codes kvpath's rule decides (gguf casts Inf/NaN products there)."""
    return np.asarray(header(bits, fmt)[1].void).reshape(-1).astype(bool)


SUB_BLOCKS = 8192  # lanes evaluate 256 Ki elements at a time: int64 temporaries stay at 2 MiB


def quantize_blocks(bits: np.ndarray, fmt: str) -> np.ndarray:
    """(nb, 32) sanitized BF16 patterns (uint16) -> (nb, block_bytes) uint8, gguf's byte layout."""
    f, (head, lane_fn, pack) = _units(fmt)
    bits = np.asarray(bits, np.uint16)
    if bits.ndim != 2 or bits.shape[1] != 32:
        raise ValueError(f"quantize_blocks expects (nb, 32) BF16 patterns, got shape {bits.shape}")
    out = np.empty((bits.shape[0], f.block_bytes), np.uint8)
    for lo in range(0, bits.shape[0], SUB_BLOCKS):
        part = bits[lo : lo + SUB_BLOCKS]
        hdr, c = head(part)
        out[lo : lo + SUB_BLOCKS, : f.header_bytes] = np.ascontiguousarray(hdr, "<u2").view(np.uint8)
        out[lo : lo + SUB_BLOCKS, f.header_bytes :] = pack(lane_fn(part.astype(np.int64), c))
    return out
