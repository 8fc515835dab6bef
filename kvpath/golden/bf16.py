"""BF16 bit patterns: kvpath's input rule for BF16 K/V elements.

BF16 is FP32's upper half (1 sign, 8 exponent, 7 fraction bits), so every BF16 value is exactly an
FP32 value; the ggml formats' reference for BF16 input is gguf on ``x.astype(np.float32)``.
"""

from __future__ import annotations

import numpy as np

SIGN = 0x8000
EXP_MASK = 0x7F80
FRAC_MASK = 0x007F
MAX_FINITE = 0x7F7F  # 3.3895e38


def sanitize(x_bits):
    """The FP16 rule carried over: +/-Inf -> +/-max finite, any NaN -> +0. Returns ``(bits, count)``."""
    x_bits = np.asarray(x_bits)
    if x_bits.dtype != np.uint16:
        raise ValueError(f"sanitize expects uint16 BF16 bit patterns, got dtype {x_bits.dtype}")
    nonfinite = (x_bits & EXP_MASK) == EXP_MASK
    count = int(np.count_nonzero(nonfinite))
    if count == 0:
        return x_bits, 0
    nan = nonfinite & ((x_bits & FRAC_MASK) != 0)
    out = np.where(nonfinite, (x_bits & SIGN) | MAX_FINITE, x_bits)
    out[nan] = 0
    return out.astype(np.uint16), count
