"""Scale and reciprocal ROMs, built by integer long division (no floating point).

For q8_0 and q4_0 the block scale ``d`` and its fp32 reciprocal ``id`` depend on the block
maximum ``amax = M * 2**(E - 25)`` only through its 11-bit significand ``M``: scaling by 2**E is
exact in fp32 over the whole FP16 range, so a 1024-entry table indexed by ``M - 1024`` holds the
24-bit significands and the exponents, and ``E`` is added afterwards. The RTL builds its ROM from
these same functions.

q4_1 divides by a data-dependent ``max - min``, so it uses :func:`fp32_div` per block instead
(hardware: a pipelined divider).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from kvpath.golden.num.rounding import div_round_sig

ROM_ENTRIES = 1024  # one per 11-bit significand M in [1024, 2047]


class RecipRom(NamedTuple):
    """Per-``M`` entries; significands are 24-bit normalized, ``value = sig * 2**exp``.

    ``d_sig``/``d_exp`` describe fl32(M / divisor) (the unscaled block scale) and
    ``id_sig``/``id_exp`` describe fl32(1 / that), the reciprocal ggml multiplies by.
    """

    d_sig: np.ndarray
    d_exp: np.ndarray
    id_sig: np.ndarray
    id_exp: np.ndarray


def _frozen(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays


@lru_cache(maxsize=None)
def recip_table_q8_0() -> RecipRom:
    """q8_0: d = fl32(M / 127), id = fl32(1 / d).

    With ``amax = M * 2**(E-25)``: ``d = d_sig * 2**(d_exp + E - 25)`` and
    ``id = id_sig * 2**(id_exp - E + 25)``.
    """
    m = np.arange(1024, 2048, dtype=np.int64)
    d_sig, d_exp = div_round_sig(m, 127)
    id_sig, id_exp = div_round_sig(1, d_sig)
    return RecipRom(*_frozen(d_sig, d_exp, id_sig, id_exp - d_exp))


@lru_cache(maxsize=None)
def recip_table_q4_0() -> RecipRom:
    """q4_0: d = max / -8 is exact, id = fl32(1 / d) = -fl32(8 / max).

    The table holds fl32(1 / M) (``d_sig``/``d_exp`` hold ``M`` itself, for symmetry); with
    ``|max| = M * 2**(E-25)``: ``|id| = id_sig * 2**(id_exp - E + 28)``, sign opposite to max.
    """
    m = np.arange(1024, 2048, dtype=np.int64)
    id_sig, id_exp = div_round_sig(1, m)
    return RecipRom(*_frozen(m.copy(), np.zeros_like(m), id_sig, id_exp))


def fp32_div(sig, exp, divisor: int):
    """fl32(sig * 2**exp / divisor) for a normalized 24-bit ``sig`` and a small integer divisor."""
    q_sig, q_exp = div_round_sig(sig, divisor, num_len=24, den_len=int(divisor).bit_length())
    return q_sig, q_exp + exp


def fp32_recip(sig, exp):
    """fl32(1 / (sig * 2**exp)) for a normalized 24-bit ``sig``."""
    r_sig, r_exp = div_round_sig(1, sig, num_len=1, den_len=24)
    return r_sig, r_exp - exp
