"""Per-block minimum and maximum in FP16 value order: the block unit's comparator trees.

Every format's block unit starts from these: q8_0 needs max(|min|, |max|), q4_0 the one of the
two with the larger magnitude, q4_1 both. Ties between +0 and -0 (equal values, different
patterns) are left to the caller, which knows its format's rule.
"""

from __future__ import annotations

import numpy as np

from kvpath.golden.num import fp16


def order_key(bits: np.ndarray) -> np.ndarray:
    """int16 key ordered like the FP16 values: negative patterns get their magnitude bits inverted.

    -0 maps to -1 and +0 to 0, so the two zeros are adjacent. The map is its own inverse.
    """
    b = bits.view(np.int16)
    return b ^ ((b >> 15) & fp16.MAG)


def block_min_max(bits: np.ndarray):
    """``(min pattern, max pattern)`` of each row of (nb, 32) patterns, as (nb, 1) uint16.

    Among equal values the zero of the more extreme key is returned (-0 for a min, +0 for a
    max); callers that care about the sign of a zero resolve it themselves.
    """
    key = order_key(bits)
    nb = key.shape[0]
    # NumPy reduces 32-element rows slowly (a loop per row); reducing across rows is fast. So
    # move a block's 32 keys onto the slow axis cheaply: transpose the block's eight 64-bit
    # words (4 keys each), reduce over the words, then over the 4 keys left per block.
    words = np.ascontiguousarray(key.view(np.int64).reshape(nb, 8).T).view(np.int16).reshape(8, nb, 4)
    kmin = np.ascontiguousarray(words.min(axis=0).T).min(axis=0)[:, None]
    kmax = np.ascontiguousarray(words.max(axis=0).T).max(axis=0)[:, None]
    return order_key(kmin.view(np.uint16)).view(np.uint16), order_key(kmax.view(np.uint16)).view(np.uint16)
