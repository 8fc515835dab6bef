"""Where each element's code sits in a stored block: the one description the golden model, the RTL
(quantizer packing, dequantizer unpacking) and the driver's image decoding read.

* ggml and MX blocks: the scale fields first (``header_bytes``), then the codes. 8-bit codes are
  one byte per element in order; 4-bit codes follow ggml: byte ``j`` holds element ``j`` in its
  low nibble and element ``j + 16`` in its high nibble.
* static-scale formats have no header; codes are packed in element order, ``code_bits`` apart
  (4-bit: element ``2k`` in the low nibble of byte ``k``, ``2k + 1`` in the high one), so a beat of
  any lane count packs on its own.

Codes here are raw unsigned fields; what a field means (offset, two's complement, E2M1, ...) is the
format's own business.
"""

from __future__ import annotations

import numpy as np

from kvpath.config import BLOCK_ELEMS, BlockFormat, get_format

HALF = BLOCK_ELEMS // 2


def code_offset(fmt: BlockFormat | str, element: int) -> int:
    """Bit offset of ``element``'s code in its block (element order within the block)."""
    f = fmt if isinstance(fmt, BlockFormat) else get_format(fmt)
    if f.family == "static" or f.code_bits == 8:
        return 8 * f.header_bytes + f.code_bits * element
    if f.code_bits == 4:
        return 8 * f.header_bytes + 8 * (element % HALF) + 4 * (element // HALF)
    raise ValueError(f"no packing for {f.code_bits}-bit codes")


def pack_codes(codes: np.ndarray, fmt: BlockFormat | str) -> np.ndarray:
    """Raw codes ``(..., n)`` (``n`` a multiple of 32 for block formats) -> code bytes ``(..., n * bits // 8)``."""
    f = fmt if isinstance(fmt, BlockFormat) else get_format(fmt)
    c = np.asarray(codes)
    if f.code_bits == 8:
        return c.astype(np.uint8)  # an integer cast keeps the low byte: two's complement codes too
    if f.family == "static":
        if c.shape[-1] % 2:
            raise ValueError(f"4-bit codes pack in pairs; got {c.shape[-1]} per row")
        c = c.astype(np.int64) & 0xF
        return (c[..., 0::2] | (c[..., 1::2] << 4)).astype(np.uint8)
    rows = c.reshape(-1, BLOCK_ELEMS)
    return pack_nibbles(rows).reshape(*c.shape[:-1], c.shape[-1] // 2)


def unpack_codes(data: np.ndarray, fmt: BlockFormat | str) -> np.ndarray:
    """Code bytes ``(..., k)`` -> raw codes ``(..., k * 8 // bits)`` (int64): inverse of ``pack_codes``."""
    f = fmt if isinstance(fmt, BlockFormat) else get_format(fmt)
    b = np.asarray(data, np.uint8).astype(np.int64)
    if f.code_bits == 8:
        return b
    if f.family == "static":
        return np.stack([b & 0xF, b >> 4], axis=-1).reshape(*b.shape[:-1], 2 * b.shape[-1])
    rows = b.reshape(-1, HALF)
    return np.concatenate([rows & 0x0F, rows >> 4], axis=1).reshape(*b.shape[:-1], 2 * b.shape[-1])


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """ggml's 4-bit layout, fast: (nb, 32) codes in [0, 15] -> (nb, 16) bytes."""
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
    """ggml's 4-bit layout: (nb, 16) bytes -> (nb, 32) int64 codes in [0, 15]."""
    b = b.astype(np.int64)
    return np.concatenate([b & 0x0F, b >> 4], axis=1)
