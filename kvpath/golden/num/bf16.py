"""BF16 bit patterns: kvpath's input rule for BF16 K/V elements.

BF16 is FP32's upper half (1 sign, 8 exponent, 7 fraction bits), so every BF16 value is exactly an
FP32 value; the ggml formats' reference for BF16 input is gguf on ``x.astype(np.float32)``.
"""

from __future__ import annotations

from kvpath.golden.num.fp16 import sanitize_patterns

SIGN = 0x8000
EXP_MASK = 0x7F80
FRAC_MASK = 0x007F
MAX_FINITE = 0x7F7F  # 3.3895e38


def sanitize(x_bits):
    """The FP16 rule carried over: +/-Inf -> +/-max finite, any NaN -> +0. Returns ``(bits, count)``."""
    return sanitize_patterns(x_bits, EXP_MASK, FRAC_MASK, MAX_FINITE, "BF16")
