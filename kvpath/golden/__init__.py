"""kvpath's golden model: the normative numerics of quantize-on-write and dequantize-on-read.

Byte-identical to gguf-py (ggml's reference) for finite inputs, with kvpath's defined behaviour
for non-finite inputs, non-finite scale fields and FP16 overflow on dequantize. Everything is
integer arithmetic on FP16 bit patterns; docs/numerics.md is the prose version of this package.
"""

from __future__ import annotations

import numpy as np

from kvpath.golden.num.fp16 import sanitize
from kvpath.golden.frame import dequantize_report, quantize_report
from kvpath.golden.ggml import quantize_blocks_exact
from kvpath.golden.ggml.recip import fp32_div, fp32_recip, recip_table_q4_0, recip_table_q8_0

__all__ = [
    "quantize",
    "dequantize",
    "quantize_report",
    "dequantize_report",
    "sanitize",
    "quantize_blocks_exact",
    "recip_table_q8_0",
    "recip_table_q4_0",
    "fp32_div",
    "fp32_recip",
]


def quantize(x: np.ndarray, fmt: str) -> np.ndarray:
    """float16 or ml_dtypes.bfloat16 ``(..., n)`` with ``n % 32 == 0`` -> uint8 blocks
    ``(..., n//32*block_bytes)``."""
    return quantize_report(x, fmt)[0]


def dequantize(blocks: np.ndarray, fmt: str, dtype=np.float16) -> np.ndarray:
    """uint8 blocks ``(..., k*block_bytes)`` -> ``dtype`` (float16 or ml_dtypes.bfloat16) ``(..., k*32)``."""
    return dequantize_report(blocks, fmt, dtype)[0]
