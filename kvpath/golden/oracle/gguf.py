"""gguf-py as a reference: the one adapter through which kvpath's tests and tools call it.

gguf (llama.cpp's Python package) reproduces ggml's C reference byte for byte for q8_0, q4_0, q4_1
and MXFP4. Inputs here are finite FP16 or BF16 arrays or raw blocks; kvpath's own rules for what
the reference leaves to chance (non-finite inputs and scales, Inf results) are applied around the
calls, each one named where it happens.
"""

from __future__ import annotations

import warnings

import gguf
import numpy as np

from kvpath.config import BLOCK_ELEMS, get_format
from kvpath.golden.num.fp16 import sanitize

FP4_HALF_UNITS = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float64)


def qtype(fmt: str):
    f = get_format(fmt)
    if f.ggml_type is None:
        raise ValueError(f"{f.name} has no ggml type; its reference is gfloat")
    return gguf.GGMLQuantizationType[f.ggml_type]


def gguf_quantize(x: np.ndarray, fmt: str) -> np.ndarray:
    """gguf.quantize on float32 of the *sanitized* FP16 input (kvpath's rule for Inf/NaN)."""
    bits, _ = sanitize(np.ascontiguousarray(x).view(np.uint16))
    return gguf.quantize(bits.view(np.float16).astype(np.float32), qtype(fmt))


def quantize_rows(rows: np.ndarray, fmt: str) -> np.ndarray:
    """gguf.quantize of finite (nb, 32) rows, on their float32 copies: (nb, block_bytes) uint8."""
    return gguf.quantize(np.asarray(rows).astype(np.float32), qtype(fmt)).reshape(-1, get_format(fmt).block_bytes)


def dequantize_f32(blocks: np.ndarray, fmt: str) -> tuple[np.ndarray, int]:
    """``(values, n_nonfinite_fields)``: gguf.dequantize's float32 values (nb, 32) of the blocks with
    their header fields sanitized first (kvpath's rule: Inf -> +/-65504, NaN -> +0, counted)."""
    f = get_format(fmt)
    blocks = np.array(blocks, dtype=np.uint8).reshape(-1, f.block_bytes)
    hdr, n_nonfinite = sanitize(blocks[:, : f.header_bytes].copy().view(np.uint16))
    blocks[:, : f.header_bytes] = hdr.view(np.uint8)
    return gguf.dequantize(blocks, qtype(fmt)), n_nonfinite


def gguf_dequantize(blocks: np.ndarray, fmt: str) -> tuple[np.ndarray, int, int]:
    """gguf.dequantize(...).astype(float16) with header fields sanitized and Inf saturated.

    Saturating gguf's Inf results to +/-65504 is kvpath's defined behaviour; returns
    ``(values, n_inf, n_nonfinite_fields)`` so callers can check both counters too.
    """
    values, n_nonfinite = dequantize_f32(blocks, fmt)
    with np.errstate(over="ignore"):
        vals = values.astype(np.float16)
    inf = np.isinf(vals)
    vals = np.where(inf, np.copysign(np.float16(65504), vals), vals).astype(np.float16)
    return vals, int(np.count_nonzero(inf)), n_nonfinite


def roundtrip(x: np.ndarray, fmt: str) -> np.ndarray:
    """gguf's own quantize -> dequantize of float32 copies of ``x``: float32 values."""
    q = qtype(fmt)
    return gguf.dequantize(gguf.quantize(np.asarray(x).astype(np.float32), q), q).reshape(-1)


def quantize_mxfp4(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(blocks, defined)`` for (nb, 32) float64 rows: gguf's MXFP4 bytes, and the blocks where they
    mean something. gguf casts a negative shared exponent to uint8 (BF16 blocks with
    ``0 < amax < 2**-125``) and so writes a meaningless scale byte there; ``mxfp4_clamped`` gives
    ggml's element rule under kvpath's clamped scale for those blocks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # gguf's uint8 cast of a negative exponent
        blocks = gguf.quantize(rows.astype(np.float32), gguf.GGMLQuantizationType.MXFP4)
    amax = np.abs(rows).max(axis=1)
    return blocks.reshape(-1, get_format("mxfp4").block_bytes), ~((amax > 0) & (amax < 2.0 ** -125))


def mxfp4_clamped(x) -> np.ndarray:
    """ggml's MXFP4 element rule (nearest of the doubled E2M1 grid, first index on ties) at a given
    scale byte: kvpath's ``max(floor(log2 amax) - 2 + 127, 0)``, 0 for a zero block. Exact in float64."""
    rows = np.asarray(x).astype(np.float64).reshape(-1, BLOCK_ELEMS)
    amax = np.abs(rows).max(axis=1)
    with np.errstate(divide="ignore"):
        e = np.where(amax > 0, np.maximum(np.floor(np.log2(np.where(amax > 0, amax, 1))) - 2 + 127, 0), 0)
    d = 2.0 ** (e - 128)
    errs = np.abs(d[:, None, None] * FP4_HALF_UNITS[None, None, :] - rows[:, :, None])
    best = np.argmin(errs, axis=-1).astype(np.uint8)
    return np.concatenate([e[:, None].astype(np.uint8), best[:, :16] | (best[:, 16:] << 4)], axis=1)


def values_mxfp4(rows: np.ndarray) -> np.ndarray:
    """Exact float64 element values (nb, 32) of MXFP4 blocks by gguf's decoder."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        v = gguf.dequantize(rows.reshape(-1), gguf.GGMLQuantizationType.MXFP4).astype(np.float64)
    return v.reshape(-1, BLOCK_ELEMS)


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
