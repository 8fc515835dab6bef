"""Dequantize q8_0 / q4_0 / q4_1 blocks to BF16: ggml's fp32 result, rounded to BF16 (RNE).

The scale fields are FP16 as always; only the last rounding changes target. The reference is
``gguf.dequantize(blocks, type).astype(ml_dtypes.bfloat16)``: gguf computes ``d * q`` (q8_0, q4_0;
exact in fp32) and ``d * q + m`` (q4_1; the add rounds to fp32), and ml_dtypes rounds the float32
to BF16 to nearest even. For q4_1 that is a double rounding (exact sum -> fp32 -> BF16), kept here.

Non-finite ``d`` / ``m`` fields are sanitized and counted exactly as on the FP16 path
(``fp16.sanitize``). Results above BF16's largest finite value would saturate to +/-0x7F7F and be
counted, but with finite FP16 scales none can: ``|d*q + m| <= 65504 * 16 < 2**21``, and the
smallest non-zero result (2**-24) is far above BF16's smallest normal (2**-126). The encoder is
general anyway, so the count is measured rather than assumed.
"""

from __future__ import annotations

import numpy as np

from kvpath.golden.num import fp16
from kvpath.packing import unpack_nibbles
from kvpath.elements import ELEMENTS
from kvpath.golden.num import elem as E
from kvpath.golden.num.rounding import round_sig

BF16 = ELEMENTS["bf16"]


def encode(sign, sig, exp, length=None):
    """BF16 pattern of ``(-1)**sign * sig * 2**exp``, RNE, saturating (``elem.encode``)."""
    return E.encode(sign, sig, exp, BF16, length)


def scale_by_code(d_bits, q):
    """BF16 of ``fp32(d) * q`` for sanitized FP16 ``d`` and integer codes ``|q| <= 128``.

    ``M_d * |q|`` is exact (below 2**18), so this is one rounding. A zero product has the sign
    ``sign(d) XOR (q < 0)``: a zero code is +0, so it gives d's sign, as ggml's float multiply.
    """
    m, e = fp16.normalize(d_bits)
    q = np.asarray(q, np.int64)
    sign = (np.asarray(d_bits) >> 15).astype(np.int64) ^ (q < 0)
    return encode(sign, m * np.abs(q), e - 25)


def _q8_0(rows):
    d_bits, n_bad = fp16.sanitize(rows[:, 0:2].copy().view(np.uint16))
    return scale_by_code(d_bits, rows[:, 2:].view(np.int8).astype(np.int64)), n_bad


def _q4_0(rows):
    d_bits, n_bad = fp16.sanitize(rows[:, 0:2].copy().view(np.uint16))
    # gguf converts (q - 8) to float before multiplying: code 8 is +0 * d, d's sign.
    return scale_by_code(d_bits, unpack_nibbles(rows[:, 2:]) - 8), n_bad


def _q4_1(rows):
    hdr, n_bad = fp16.sanitize(rows[:, 0:4].copy().view(np.uint16))
    d_bits, m_bits = hdr[:, 0:1], hdr[:, 1:2]
    q = unpack_nibbles(rows[:, 4:])
    # d*q is exact in fixed point (2**-24 units); the sum with m is exact there too (< 2**41).
    dq = fp16.fx_magnitude(d_bits) * q
    dq_neg = (d_bits >> 15).astype(np.int64)
    total = np.where(dq_neg != 0, -dq, dq) + fp16.fx_signed(m_bits)
    w_sig, w_exp = round_sig(np.abs(total), 24)  # fl32(d*q + m): ggml's one fp32 rounding
    # IEEE zero sums: -0 only when both addends are -0; exact cancellation gives +0.
    neg_zero = (dq == 0) & (dq_neg != 0) & (m_bits == fp16.SIGN)
    sign = np.where(total == 0, neg_zero, total < 0).astype(np.int64)
    # ... then the float32 -> BF16 conversion rounds again (w_sig is normalized: 24 bits).
    return encode(sign, w_sig, w_exp - 24, length=np.where(w_sig == 0, 0, 24)), n_bad


_BLOCKS = {"q8_0": _q8_0, "q4_0": _q4_0, "q4_1": _q4_1}


def dequantize_blocks(rows: np.ndarray, fmt: str):
    """(nb, block_bytes) uint8 -> ((nb, 32) uint16 BF16 patterns, n_saturated, n_nonfinite_scale)."""
    try:
        unit = _BLOCKS[fmt]
    except KeyError:
        raise ValueError(f"BF16 dequantize of the ggml formats handles {', '.join(_BLOCKS)}, not {fmt!r}") from None
    (values, overflow), n_bad = unit(np.asarray(rows, np.uint8))
    return values, int(np.count_nonzero(overflow)), n_bad
