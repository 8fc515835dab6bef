"""gfloat as the reference for mxint8 and mxfp8_e4m3 (OCP MX v1.0), the formats ggml does not have.

``quantize`` is gfloat's block encoding: ``compute_scale_amax`` (vectorized as ``scale_amax``),
then ``round_ndarray`` + ``encode_ndarray`` with ties to even and saturation, which is what
``gfloat.encode_block`` does one element at a time (``quantize_scalar``, slow, checks that).
"""

from __future__ import annotations

import numpy as np
from gfloat import compute_scale_amax, decode_ndarray, encode_block, encode_ndarray, round_ndarray
from gfloat.formats import format_info_mxfp8_e4m3, format_info_mxint8

from kvpath.config import get_format

FORMATS = {"mxint8": format_info_mxint8, "mxfp8_e4m3": format_info_mxfp8_e4m3}


def _info(fmt: str):
    name = get_format(fmt).name
    if name not in FORMATS:
        raise ValueError(f"gfloat is kvpath's reference for {', '.join(FORMATS)}, not {name}")
    return FORMATS[name]


def scale_amax(emax: int, amax: np.ndarray) -> np.ndarray:
    """gfloat's ``compute_scale_amax`` for many blocks at once (its formula, vectorized; the tests
    compare the two on every binade): ``2**clip(floor(log2 amax) - emax, -127, 127)``, 2**-127 for 0."""
    with np.errstate(divide="ignore"):
        q = np.where(amax == 0, -127.0, np.clip(np.floor(np.log2(np.where(amax == 0, 1.0, amax))) - emax, -127, 127))
    return 2.0 ** q


def quantize(rows: np.ndarray, fmt: str) -> np.ndarray:
    """(nb, 32) float64 rows -> (nb, block_bytes) uint8 blocks."""
    fi = _info(fmt)
    scales = scale_amax(fi.etype.emax, np.abs(rows).max(axis=1))
    codes = encode_ndarray(fi.etype, round_ndarray(fi.etype, rows / scales[:, None], sat=True))
    scale_bytes = encode_ndarray(fi.stype, scales)
    return np.concatenate([scale_bytes[:, None], codes], axis=1).astype(np.uint8)


def quantize_scalar(rows: np.ndarray, fmt: str) -> np.ndarray:
    """gfloat's ``encode_block`` with ``compute_scale_amax``: the per-element reference (slow)."""
    fi = _info(fmt)
    out = []
    for r in rows:
        scale = compute_scale_amax(fi.etype.emax, r)
        out.append(list(encode_block(fi, scale, r / scale)))
    return np.array(out, np.uint8)


def values(rows: np.ndarray, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """``(values float64 (nb, 32), nan_element (nb, 32) bool)`` by gfloat's decoder."""
    fi = _info(fmt)
    scale = decode_ndarray(fi.stype, rows[:, 0].astype(np.int64))
    elems = decode_ndarray(fi.etype, rows[:, 1:].astype(np.int64))
    with np.errstate(invalid="ignore", over="ignore"):
        v = scale[:, None] * elems
    return v, np.isnan(elems)
