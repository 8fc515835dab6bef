"""ggml's 4-bit code layout: byte j of a block holds element j (low) and element j + 16 (high)."""

from __future__ import annotations

import numpy as np


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """(nb, 32) codes in [0, 15] -> (nb, 16) bytes."""
    q = np.ascontiguousarray(q, dtype=np.uint8)
    # Eight codes per uint64 word, four words per block: words 0-1 hold elements 0-15, words
    # 2-3 elements 16-31. A code is at most 15, so shifting a word left by 4 moves every byte's
    # code into its own high nibble without touching the next byte. Strided 1-D views keep
    # NumPy's inner loops long (a (nb, 2) slice would loop per block).
    w = q.view(np.uint64).reshape(-1)
    out = np.empty(w.size // 2, np.uint64)
    for half in (0, 1):
        np.left_shift(w[2 + half :: 4], np.uint64(4), out=out[half::2])
        out[half::2] |= w[half::4]
    return out.view(np.uint8).reshape(q.shape[0], q.shape[1] // 2)


def unpack_nibbles(b: np.ndarray) -> np.ndarray:
    """(nb, 16) bytes -> (nb, 32) int64 codes in [0, 15]."""
    b = b.astype(np.int64)
    return np.concatenate([b & 0x0F, b >> 4], axis=1)
