"""q8_0: d = amax/127 (fp16), codes = roundf(x * fl32(1/d)) as int8. 34-byte blocks.

``header`` is the block unit (block -> scale field + lane constants), ``lane`` the exact
per-element chain; together they are the normative definition.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from kvpath.golden.num import fp16
from kvpath.golden.ggml.extremes import block_min_max
from kvpath.golden.ggml.elementwise import mul_rne24, roundf_fixed, signed_code
from kvpath.golden.ggml.recip import recip_table_q8_0
from kvpath.packing import pack_codes


class Const(NamedTuple):
    """Per-block lane constants: ``id = id_sig * 2**id_exp`` (``id_sig == 0`` in a zero block)."""

    id_sig: np.ndarray
    id_exp: np.ndarray


def scale_unit(amax: np.ndarray):
    """The block unit's arithmetic: ``amax`` (FP16 magnitude pattern) -> (d field, Const)."""
    ma, ea = fp16.normalize(amax)
    rom = recip_table_q8_0()
    row = np.maximum(ma - 1024, 0)
    zero = amax == 0
    d_bits, _ = fp16.encode(0, rom.d_sig[row], rom.d_exp[row] + ea - 25)
    d_bits = np.where(zero, 0, d_bits).astype(np.uint16)
    # ggml: id = d == 0 ? 0 : 1/d, so a zero block multiplies by a zero reciprocal.
    return d_bits, Const(np.where(zero, 0, rom.id_sig[row]), rom.id_exp[row] - ea + 25)


@lru_cache(maxsize=None)
def _scale_table():
    # The block unit depends on amax alone, so software evaluates it once for all 32768 values.
    d_bits, c = scale_unit(np.arange(1 << 15, dtype=np.uint16))
    return d_bits, c.id_sig, c.id_exp


def header(bits: np.ndarray):
    """(nb, 32) sanitized patterns -> ((nb, 1) uint16 d field, Const of (nb, 1) arrays)."""
    mn, mx = block_min_max(bits)
    amax = np.maximum(mn & fp16.MAG, mx & fp16.MAG)  # largest |x| is |min| or |max|
    d_bits, id_sig, id_exp = _scale_table()
    return d_bits[amax], Const(id_sig[amax], id_exp[amax])


def lane(bits: np.ndarray, c: Const) -> np.ndarray:
    """Exact codes (int64 in [-127, 127]) for patterns ``bits``; ``c`` broadcasts against them."""
    mx, ex = fp16.normalize(bits)
    y, y_exp = mul_rne24(mx, ex - 25, c.id_sig, c.id_exp)  # fl32(x * id)
    return signed_code(roundf_fixed(y, y_exp), bits >> 15)  # roundf, then the int8 cast


def pack(codes: np.ndarray) -> np.ndarray:
    return pack_codes(codes, "q8_0")


def dequantize_blocks(blocks: np.ndarray):
    """(nb, 34) bytes -> ((nb, 32) FP16 patterns, n_saturated, n_nonfinite_scale)."""
    d_bits, n_bad = fp16.sanitize(blocks[:, 0:2].copy().view(np.uint16))
    q = blocks[:, 2:].view(np.int8).astype(np.int64)
    # fp32(d) * q is exact (11 x 8 bits), so the only rounding is the final one to FP16.
    out, sat = fp16.scale_by_code(d_bits, q)
    return out, int(np.count_nonzero(sat)), n_bad
