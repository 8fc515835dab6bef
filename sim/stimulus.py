"""Seeded K/V stimulus for the datapath regressions: the data a KV cache sees, and the data that breaks
quantizers.

Every generator returns float16 arrays whose length is a whole number of blocks; ``mixed`` interleaves
them so that even a short run touches every class. ``mixed(..., elem="bf16")`` returns
ml_dtypes.bfloat16 arrays with the same classes plus BF16's own corners (scales that overflow or
underflow FP16, the full BF16 exponent range).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from kvpath.config import BLOCK_ELEMS, check_elem, get_format

FP16_MAX_BITS = 0x7BFF
BF16 = np.dtype(ml_dtypes.bfloat16)
BF16_MAX = float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)


def normal(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float16)


def heavy_tailed(rng: np.random.Generator, n: int, channels: int = 256) -> np.ndarray:
    """Student-t values with a few outlier channels, the shape of real key caches (KIVI, KVQuant)."""
    rows = -(-n // channels)
    x = rng.standard_t(df=3, size=(rows, channels))
    outliers = rng.choice(channels, size=max(1, channels // 32), replace=False)
    x[:, outliers] *= rng.uniform(20, 200, size=outliers.size)
    return np.clip(x, -65504, 65504).astype(np.float16).reshape(-1)[:n]


def all_bit_patterns(rng: np.random.Generator) -> np.ndarray:
    """All 65,536 FP16 bit patterns (Inf and NaN included), once in order and once shuffled."""
    bits = np.arange(1 << 16, dtype=np.uint16)
    return np.concatenate([bits, rng.permutation(bits)]).view(np.float16)


def edge_blocks(rng: np.random.Generator) -> np.ndarray:
    """Blocks that exercise the scale arithmetic's corners."""
    blocks = []
    zeros = np.zeros(BLOCK_ELEMS, np.float16)
    blocks.append(zeros)
    blocks.append(-zeros)
    mixed_zero = zeros.copy()
    mixed_zero[rng.random(BLOCK_ELEMS) < 0.5] = -0.0
    blocks.append(mixed_zero)
    blocks.append(np.full(BLOCK_ELEMS, 65504, np.float16))
    blocks.append(np.full(BLOCK_ELEMS, -65504, np.float16))
    alt = np.full(BLOCK_ELEMS, 65504, np.float16)
    alt[1::2] = -65504
    blocks.append(alt)
    blocks.append(np.full(BLOCK_ELEMS, 1.0, np.float16))
    for _ in range(32):
        # Subnormal maxima: every element subnormal, including the block's largest.
        sub = rng.integers(0, 0x400, BLOCK_ELEMS).astype(np.uint16)
        sub |= (rng.random(BLOCK_ELEMS) < 0.5).astype(np.uint16) << 15
        blocks.append(sub.view(np.float16))
        # Widest dynamic range: one huge value among tiny ones.
        wide = (rng.integers(0, 0x400, BLOCK_ELEMS).astype(np.uint16)).view(np.float16).copy()
        wide[rng.integers(BLOCK_ELEMS)] = np.float16(rng.choice([65504.0, -65504.0, 1024.0, -0.5]))
        blocks.append(wide)
        # Magnitude ties between +max and -max (q4_0 keeps the first).
        tie = (rng.standard_normal(BLOCK_ELEMS) * 0.1).astype(np.float16)
        i, j = rng.choice(BLOCK_ELEMS, 2, replace=False)
        tie[i], tie[j] = np.float16(3.0), np.float16(-3.0)
        blocks.append(tie)
    return np.concatenate(blocks)


def tie_blocks(rng: np.random.Generator, fmt: str, count: int = 64, elem: str = "fp16") -> np.ndarray:
    """Blocks whose scale comes out exact (1 or a power of two) and whose elements sit on the rounding
    thresholds of the format, and one ulp of the element type either side of them. Every threshold
    has at most 8 significant bits, so it is exact in BF16 as well as FP16."""
    name = get_format(fmt).name
    dt = np.dtype(np.float16) if check_elem(elem) == "fp16" else BF16
    cast = lambda v: np.asarray(v, np.float32).astype(dt)  # noqa: E731
    # MX: (pin, thresholds) in units of the shared scale 2**X. The pin 2**emax makes X exact; the
    # thresholds are the element grid's decision points (mxfp4 ties go down, the others to even)
    # and its saturation points (mxfp4 past 6, mxint8 at 127.5/64, mxfp8_e4m3 at 464 = (448+480)/2).
    e4m3 = np.array([(8 | (c & 7)) * 2.0 ** ((c >> 3) - 10) if c >> 3 else c * 2.0 ** -9 for c in range(0x7F)])
    mx_ties = {
        "mxfp4": (4.0, np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0])),
        "mxint8": (1.0, (np.arange(128) + 0.5) / 64),
        "mxfp8_e4m3": (256.0, np.concatenate([(e4m3[:-1] + e4m3[1:]) / 2, [464.0]])),
    }
    blocks = []
    for _ in range(count):
        scale = np.float16(2.0 ** int(rng.integers(-8, 6)))
        if name in mx_ties:
            pin, thresholds = mx_ties[name]
            vals = rng.choice(thresholds, BLOCK_ELEMS - 1) * rng.choice([-1.0, 1.0], BLOCK_ELEMS - 1)
            vals = cast(vals * float(scale))
            nudge = rng.integers(-1, 2, vals.size).astype(np.int16)
            # Every threshold stays below 2 * pin after a one-ulp nudge, so the pin keeps setting X.
            vals = (vals.view(np.int16) + nudge).view(dt)
            blocks.append(rng.permutation(np.concatenate([cast([pin * float(scale)]), vals])))
            continue
        if name == "q8_0":
            pin = [127.0]  # d = 127/127 = 1
            half = np.arange(-127, 127) + 0.5
        elif name == "q4_0":
            pin = [-8.0]  # d = -8/-8 = 1
            half = np.arange(-8, 8) + 0.5
        else:
            pin = [0.0, 15.0]  # d = (15 - 0)/15 = 1, min 0
            half = np.arange(0, 15) + 0.5
        vals = cast(rng.choice(half, BLOCK_ELEMS - len(pin)))
        nudge = rng.integers(-1, 2, vals.size).astype(np.int16)
        # One ulp either way stays well inside the pinned range, so the pins keep setting the scale.
        vals = (vals.view(np.int16) + nudge).view(dt)
        block = np.concatenate([cast(pin), vals]).astype(np.float32) * np.float32(scale)
        blocks.append(rng.permutation(cast(block)))
    return np.concatenate(blocks)


def bf16_edge_blocks(rng: np.random.Generator) -> np.ndarray:
    """BF16's corners: the FP16 edge blocks' shapes at BF16's extremes, and blocks whose ggml scale
    ``d`` overflows or underflows FP16 (BF16 reaches 3.4e38 and 9.2e-41, FP16 only 65504 and 6e-8)."""
    blocks = [edge_blocks(rng).astype(np.float32).astype(BF16)]
    b = lambda v: np.asarray(v, np.float32).astype(BF16)  # noqa: E731
    blocks.append(b(np.full(BLOCK_ELEMS, BF16_MAX)))
    blocks.append(b(np.full(BLOCK_ELEMS, -BF16_MAX)))
    for _ in range(32):
        sub = rng.integers(0, 0x80, BLOCK_ELEMS).astype(np.uint16)  # BF16 subnormals
        sub |= (rng.random(BLOCK_ELEMS) < 0.5).astype(np.uint16) << 15
        blocks.append(sub.view(BF16))
        # Largest magnitude around the FP16 limits of d = amax / 127, / 7 or / 15, both sides.
        for amax in (65504.0 * 127, 65504.0 * 15, 65504.0 * 8, 65504.0 * 7, 6e-8 * 127, 6e-8 * 8, 6e-8,
                     2.0 ** -24 * 7, 2.0 ** -25, 2.0 ** -26 * 127):
            amax *= float(2.0 ** rng.uniform(-1.0, 1.0))
            v = rng.uniform(-1, 1, BLOCK_ELEMS) * amax
            v[rng.integers(BLOCK_ELEMS)] = amax * rng.choice([-1.0, 1.0])
            blocks.append(b(v))
        # Whole-range dynamic range: exponents spread across BF16's 254 binades.
        wide = rng.choice([-1.0, 1.0], BLOCK_ELEMS) * 2.0 ** rng.uniform(-133, 127, BLOCK_ELEMS)
        blocks.append(b(wide))
    return np.concatenate(blocks)


def all_bf16_patterns(rng: np.random.Generator) -> np.ndarray:
    """All 65,536 BF16 bit patterns (Inf and NaN included), once in order and once shuffled."""
    bits = np.arange(1 << 16, dtype=np.uint16)
    return np.concatenate([bits, rng.permutation(bits)]).view(BF16)


def mixed(fmt: str, n: int, seed: int, elem: str = "fp16") -> np.ndarray:
    """``n`` elements (rounded up to whole blocks): edge, tie and bit-pattern blocks first, then normal
    and heavy-tailed data, in seeded order of blocks. float16, or ml_dtypes.bfloat16 for ``elem="bf16"``."""
    check_elem(elem)
    rng = np.random.default_rng(seed)
    n = -(-n // BLOCK_ELEMS) * BLOCK_ELEMS
    if elem == "bf16":
        ties = tie_blocks(rng, fmt, elem="bf16")
        special = np.concatenate([bf16_edge_blocks(rng), ties, all_bf16_patterns(rng)])
        if n <= special.size:
            return _interleave(rng, special, None, n)
        rest = n - special.size
        half = rest // 2 // BLOCK_ELEMS * BLOCK_ELEMS
        scale = 2.0 ** rng.integers(-100, 100, size=(max(1, rest // BLOCK_ELEMS), 1))
        data = np.concatenate([rng.standard_normal(half).astype(np.float32),
                               heavy_tailed(rng, rest - half).astype(np.float32)])
        data = (data.reshape(-1, BLOCK_ELEMS) * scale[: len(data) // BLOCK_ELEMS]).astype(np.float32)
        return _interleave(rng, special, data.reshape(-1).astype(BF16), n)
    special = np.concatenate([edge_blocks(rng), tie_blocks(rng, fmt), all_bit_patterns(rng)])
    if n <= special.size:
        return _interleave(rng, special, None, n)
    rest = n - special.size
    half = rest // 2 // BLOCK_ELEMS * BLOCK_ELEMS
    data = np.concatenate([normal(rng, half), heavy_tailed(rng, rest - half)])
    return _interleave(rng, special, data, n)


def _interleave(rng, special, data, n):
    if n <= special.size:
        # Short runs still see a slice of every class of special block.
        blocks = special.reshape(-1, BLOCK_ELEMS)
        pick = np.sort(rng.choice(len(blocks), n // BLOCK_ELEMS, replace=False))
        return blocks[pick].reshape(-1)
    blocks = np.concatenate([special, data]).reshape(-1, BLOCK_ELEMS)
    return blocks[rng.permutation(len(blocks))].reshape(-1)
