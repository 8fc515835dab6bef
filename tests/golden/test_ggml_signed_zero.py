"""Signed zeros: where ggml's results depend on the sign of a zero, and kvpath's rules.

* q8_0: amax = max |x| is never -0, so d is +0 in a zero block.
* q4_0: d = max / -8 with max the first element of largest |x|: a zero block stores the
  opposite of the first element's zero sign (gguf is deterministic here: np.argmax).
* q4_1: m = min. When the min is zero and the block holds both +0 and -0, gguf's NumPy
  reduction returns whichever its SIMD lanes meet last, which depends on the buffer's
  alignment. kvpath takes the last zero in the block. In all-zero blocks gguf always returns the
  last element and d = +0, so kvpath equals gguf there; elsewhere the two may differ in the sign
  bit of m only.
"""

from __future__ import annotations

import os

import numpy as np

from kvpath import golden
from kvpath.golden.oracle.gguf import gguf_quantize

SEED = int(os.environ.get("KVPATH_SEED", "20251123"))


def zero_blocks(rng, n):
    return np.where(rng.random((n, 32)) < 0.5, 0x8000, 0).astype(np.uint16)


def misaligned(x: np.ndarray, offset: int) -> np.ndarray:
    """Copy of float32 ``x`` starting ``offset`` floats into a fresh buffer (gguf sees the view)."""
    buf = np.empty(x.size + offset + 16, np.float32)
    view = buf[offset : offset + x.size].reshape(x.shape)
    view[...] = x
    return view


def gguf_q4_1_at(x16: np.ndarray, offset: int) -> np.ndarray:
    import gguf

    return gguf.quantize(misaligned(x16.astype(np.float32), offset), gguf.GGMLQuantizationType.Q4_1)


def test_q8_0_zero_block_has_positive_d():
    rng = np.random.default_rng([SEED, 1])
    x = zero_blocks(rng, 256).view(np.float16)
    got = golden.quantize(x, "q8_0")
    assert np.array_equal(got, gguf_quantize(x, "q8_0")), f"seed={SEED}"
    assert not got[:, :2].any(), "q8_0 zero blocks must store d = +0 and zero codes"


def test_q4_0_zero_block_d_sign_is_opposite_of_first_zero():
    rng = np.random.default_rng([SEED, 2])
    bits = zero_blocks(rng, 512)
    x = bits.view(np.float16)
    got = golden.quantize(x, "q4_0")
    assert np.array_equal(got, gguf_quantize(x, "q4_0")), f"seed={SEED}"
    d = got[:, :2].copy().view(np.uint16)[:, 0]
    assert np.array_equal(d, (bits[:, 0] ^ 0x8000)), f"d sign must flip the first element's sign (seed={SEED})"
    assert (got[:, 2:] == 0x88).all(), "a zero block's q4_0 codes are all 8"


def test_q4_0_tie_between_plus_and_minus_max_takes_the_first():
    x = np.zeros((2, 32), np.float16)
    x[0, 3], x[0, 9] = 2.0, -2.0
    x[1, 3], x[1, 9] = -2.0, 2.0
    got = golden.quantize(x, "q4_0")
    assert np.array_equal(got, gguf_quantize(x, "q4_0"))
    d = got[:, :2].copy().view(np.float16)[:, 0]
    assert d[0] == np.float16(-0.25) and d[1] == np.float16(0.25)


def test_q4_1_all_zero_blocks_equal_gguf_at_every_alignment():
    rng = np.random.default_rng([SEED, 3])
    bits = zero_blocks(rng, 1024)
    ours = golden.quantize(bits.view(np.float16), "q4_1")
    m = ours[:, 2:4].copy().view(np.uint16)[:, 0]
    assert np.array_equal(m, bits[:, 31]), f"m must be the last zero (seed={SEED})"
    assert not ours[:, :2].any(), "d must be +0 in an all-zero block"
    for offset in range(16):
        ref = gguf_q4_1_at(bits.view(np.float16), offset)
        assert np.array_equal(ours, ref), f"offset {offset} floats (seed={SEED})"


def last_zero_rule(bits: np.ndarray) -> np.ndarray:
    """kvpath's m for blocks whose min is zero, by a plain loop: the last zero's pattern."""
    out = []
    for row in bits:
        zeros = [int(v) for v in row if (int(v) & 0x7FFF) == 0]
        out.append(zeros[-1])
    return np.array(out, np.uint16)


def test_q4_1_zero_min_sign_is_last_zero_and_differs_from_gguf_only_there():
    rng = np.random.default_rng([SEED, 4])
    n = 4096
    bits = zero_blocks(rng, n)
    positive = rng.random((n, 32)) < rng.random((n, 1))
    values = (rng.random((n, 32)) * 4 + 0.01).astype(np.float16).view(np.uint16)
    bits = np.where(positive, values, bits)
    bits[:, 0] = np.where(positive.all(axis=1), 0, bits[:, 0])  # every block has a zero min
    x = bits.view(np.float16)
    ours = golden.quantize(x, "q4_1")
    m = ours[:, 2:4].copy().view(np.uint16)[:, 0]
    assert np.array_equal(m, last_zero_rule(bits)), f"m must be the last zero (seed={SEED})"

    zeros = (bits & 0x7FFF) == 0
    mixed = (zeros & (bits == 0)).any(axis=1) & (zeros & (bits == 0x8000)).any(axis=1)
    n_diff = 0
    for offset in range(16):
        ref = gguf_q4_1_at(x, offset)
        other = np.ones(20, bool)
        other[3] = False  # the high byte of m holds its sign bit
        assert np.array_equal(ours[:, other], ref[:, other]), f"offset {offset}: bytes other than m's sign differ (seed={SEED})"
        assert np.array_equal(ours[:, 3] & 0x7F, ref[:, 3] & 0x7F)
        differs = ours[:, 3] != ref[:, 3]
        assert not (differs & ~mixed).any(), f"offset {offset}: m differs in a block without both zeros (seed={SEED})"
        n_diff += int(differs.sum())
    print(f"q4_1 blocks whose m sign differs from gguf over 16 alignments: {n_diff} (seed={SEED})")
