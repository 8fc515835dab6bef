"""gguf-py as the reference, and readable mismatch reports, for tests of the golden model and RTL."""

from __future__ import annotations

import numpy as np

from kvpath.config import get_format

from kvpath.golden.num.fp16 import sanitize


def _gguf_type(fmt: str):
    import gguf

    return gguf.GGMLQuantizationType[get_format(fmt).ggml_type]


def gguf_quantize(x: np.ndarray, fmt: str) -> np.ndarray:
    """gguf.quantize on float32 of the *sanitized* input (kvpath's rule for Inf/NaN)."""
    import gguf

    bits, _ = sanitize(np.ascontiguousarray(x).view(np.uint16))
    return gguf.quantize(bits.view(np.float16).astype(np.float32), _gguf_type(fmt))


def gguf_dequantize(blocks: np.ndarray, fmt: str) -> tuple[np.ndarray, int, int]:
    """gguf.dequantize(...).astype(float16) with header fields sanitized and Inf saturated.

    Saturating gguf's Inf results to +/-65504 is kvpath's defined behaviour; returns
    ``(values, n_inf, n_nonfinite_fields)`` so callers can check both counters too.
    """
    import gguf

    f = get_format(fmt)
    blocks = np.array(blocks, dtype=np.uint8).reshape(-1, f.block_bytes)
    hdr, n_nonfinite = sanitize(blocks[:, : f.header_bytes].copy().view(np.uint16))
    blocks[:, : f.header_bytes] = hdr.view(np.uint8)
    with np.errstate(over="ignore"):
        vals = gguf.dequantize(blocks, _gguf_type(fmt)).astype(np.float16)
    inf = np.isinf(vals)
    vals = np.where(inf, np.copysign(np.float16(65504), vals), vals).astype(np.float16)
    return vals, int(np.count_nonzero(inf)), n_nonfinite


def describe_mismatch(x: np.ndarray, ours: np.ndarray, ref: np.ndarray, fmt: str, context: str = "") -> str:
    """'' if ``ours`` and ``ref`` (block bytes) are equal, else a report of the first bad block."""
    f = get_format(fmt)
    ours = np.asarray(ours).reshape(-1, f.block_bytes)
    ref = np.asarray(ref).reshape(-1, f.block_bytes)
    bad = np.flatnonzero((ours != ref).any(axis=1))
    if bad.size == 0:
        return ""
    i = bad[0]
    xin = np.asarray(x).reshape(-1, 32)[i].view(np.uint16)
    return (
        f"{context}: {bad.size} of {ours.shape[0]} {fmt} blocks differ; first is block {i}\n"
        f"  input  {' '.join(f'{v:04x}' for v in xin)}\n"
        f"  kvpath {ours[i].tobytes().hex(' ')}\n"
        f"  gguf   {ref[i].tobytes().hex(' ')}"
    )
