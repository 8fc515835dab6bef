"""Seeded stimulus for every test and regression of kvpath: the one place inputs are chosen.

Two kinds, both seeded through the ``rng`` or ``seed`` argument; floating point is fine here, these
functions only choose inputs and never decide an expected result:

* **Blocks** for golden-model and unit tests: FP16 arrays of shape ``(nb, 32)``, one row per block
  (every pattern, patterns alone with a block maximum, near and exact rounding ties, special blocks).
* **Streams** for the RTL regressions and the benchmarks: flat float16 or ml_dtypes.bfloat16 arrays
  whose length is a whole number of blocks -- the data a KV cache sees (normal, heavy-tailed with
  outlier channels) and the data that breaks quantizers (edge, tie and bit-pattern blocks);
  ``mixed`` interleaves them so that even a short run touches every class.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from kvpath.config import BLOCK_ELEMS, check_elem, get_format

BF16 = np.dtype(ml_dtypes.bfloat16)
BF16_MAX = float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)

# --- blocks for golden-model and unit tests ---------------------------------------------------

ALL = np.arange(1 << 16, dtype=np.uint16)
FINITE = ALL[(ALL & 0x7C00) != 0x7C00]  # 63488 patterns
NONFINITE = ALL[(ALL & 0x7C00) == 0x7C00]  # +/-Inf and the NaNs
MAX_FP16 = 65504.0


def as_blocks(bits: np.ndarray) -> np.ndarray:
    """uint16 patterns -> float16 (nb, 32), dropping a ragged tail."""
    bits = np.asarray(bits, np.uint16).reshape(-1)
    n = bits.size // BLOCK_ELEMS * BLOCK_ELEMS
    return bits[:n].view(np.float16).reshape(-1, BLOCK_ELEMS)


def normal_blocks(rng: np.random.Generator, n_blocks: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal((n_blocks, BLOCK_ELEMS)) * scale).astype(np.float16)


def heavy_tailed_blocks(rng: np.random.Generator, n_blocks: int) -> np.ndarray:
    """Student-t (df 2..4) rows with a few outlier channels, as K/V activations have.

    Rows are grouped in 8-block "tokens" sharing channels; 1 in 16 channels is scaled by up to
    2**10. Values are clipped into the finite FP16 range.
    """
    df = rng.choice([2.0, 3.0, 4.0], size=(n_blocks, 1))
    x = rng.standard_t(df, size=(n_blocks, BLOCK_ELEMS))
    channel_gain = np.where(rng.random(8 * BLOCK_ELEMS) < 1 / 16, 2.0 ** rng.integers(3, 11, 8 * BLOCK_ELEMS), 1.0)
    x = x * np.resize(channel_gain.reshape(8, BLOCK_ELEMS), (n_blocks, BLOCK_ELEMS))
    x = x * 2.0 ** rng.integers(-12, 6, size=(n_blocks, 1))  # per-row magnitude spread
    return np.clip(x, -MAX_FP16, MAX_FP16).astype(np.float16)


def all_patterns_sorted(finite_only: bool = True) -> np.ndarray:
    """Every pattern once, in order: neighbouring patterns share a block."""
    return as_blocks(FINITE if finite_only else ALL)


def all_patterns_shuffled(rng: np.random.Generator, finite_only: bool = True) -> np.ndarray:
    return as_blocks(rng.permutation(FINITE if finite_only else ALL))


def alone_with(big: int, rng: np.random.Generator, fill: int = 0) -> np.ndarray:
    """One block per finite pattern ``p`` with ``|p| <= |big|``: ``big`` and ``p`` at random lanes.

    The other 30 lanes hold ``fill`` (a pattern, default +0), so ``p`` is alone with the block
    maximum ``big`` and every code a block with that scale can produce is exercised.
    """
    big = np.uint16(big)
    ps = FINITE[(FINITE & 0x7FFF) <= (big & 0x7FFF)]
    blocks = np.full((ps.size, BLOCK_ELEMS), fill, np.uint16)
    lanes = np.argsort(rng.random((ps.size, BLOCK_ELEMS)), axis=1)[:, :2]
    rows = np.arange(ps.size)
    blocks[rows, lanes[:, 0]] = big
    blocks[rows, lanes[:, 1]] = ps
    return blocks.view(np.float16)


def packed_with(big: int, rng: np.random.Generator, low: int | None = None) -> np.ndarray:
    """All finite patterns between ``low`` and ``big`` (by value), 30 per block with both.

    ``low`` defaults to ``-|big|``; blocks then have max magnitude ``|big|``. For q4_1 pass the
    wanted block min as ``low`` so every block has exactly that min and max.
    """
    vals = FINITE.view(np.float16).astype(np.float64)
    hi = float(np.uint16(big).view(np.float16))
    lo = -abs(hi) if low is None else float(np.uint16(low).view(np.float16))
    lo, hi = min(lo, hi), max(lo, hi)
    ps = rng.permutation(FINITE[(vals >= lo) & (vals <= hi)])
    ps = ps[: ps.size // 30 * 30].reshape(-1, 30)
    lo_bits = np.float16(lo).view(np.uint16)
    hi_bits = np.float16(hi).view(np.uint16)
    blocks = np.concatenate([np.full((ps.shape[0], 1), lo_bits), np.full((ps.shape[0], 1), hi_bits), ps], axis=1)
    blocks = np.take_along_axis(blocks, np.argsort(rng.random(blocks.shape), axis=1), axis=1)
    return blocks.astype(np.uint16).view(np.float16)


def _scale(fmt: str, lo: np.ndarray, hi: np.ndarray):
    """(offset, id) per block exactly as gguf computes them in float32, for choosing inputs."""
    lo32, hi32 = lo.astype(np.float32), hi.astype(np.float32)
    with np.errstate(divide="ignore"):
        if fmt == "q8_0":
            d = np.maximum(np.abs(lo32), np.abs(hi32)) / np.float32(127)
            off = np.zeros_like(d)
        elif fmt == "q4_0":
            d = np.where(np.abs(lo32) > np.abs(hi32), lo32, hi32) / np.float32(-8)
            off = np.zeros_like(d)
        else:
            d = (hi32 - lo32) / np.float32(15)
            off = lo32
        ident = np.where(d == 0, np.float32(0), np.float32(1) / d)
    return off, ident


def near_ties(fmt: str, rng: np.random.Generator, n_scales: int, tol: float = 2.0**-12) -> np.ndarray:
    """Blocks of elements whose scaled value lies within ``tol`` of a rounding boundary.

    For ``n_scales`` random block scales (a random max, and a random min for q4_1) every finite
    pattern in range is tried; those with ``(x - offset) * id`` within ``tol`` of a half-integer
    (where roundf and the q4 thresholds decide) are packed 30 per block with the scale-setting
    elements. These are the inputs on which every fp32 rounding step of ggml matters.
    """
    vals = FINITE.view(np.float16).astype(np.float64)
    out = []
    for _ in range(n_scales):
        hi = np.float16(rng.choice(vals[(vals > 0)]) * rng.choice([1.0, -1.0]))
        lo = np.float16(-abs(hi)) if fmt != "q4_1" else np.float16(rng.choice(vals[vals < float(hi)]))
        a, b = sorted([float(lo), float(hi)])
        cand = FINITE[(vals >= a) & (vals <= b)]
        off, ident = _scale(fmt, np.array([lo]), np.array([hi]))
        w = np.abs((cand.view(np.float16).astype(np.float64) - float(off[0])) * float(ident[0]))
        frac = np.abs((w + 0.5) - np.round(w + 0.5))
        pick = rng.permutation(cand[frac < tol])
        if pick.size == 0:
            continue
        # Pad the last block with an element that cannot move the scale: +0 below a max
        # (q8_0, q4_0), the min itself for q4_1.
        lo_bits, hi_bits = np.float16(lo).view(np.uint16), np.float16(hi).view(np.uint16)
        fill = lo_bits if fmt == "q4_1" else np.uint16(0)
        pick = np.concatenate([pick, np.full(-pick.size % 30, fill, np.uint16)]).reshape(-1, 30)
        ends = np.broadcast_to(np.array([fill, hi_bits], np.uint16), (pick.shape[0], 2))
        blk = np.concatenate([ends, pick], axis=1)
        out.append(np.take_along_axis(blk, np.argsort(rng.random(blk.shape), axis=1), axis=1))
    return np.concatenate(out).astype(np.uint16).view(np.float16) if out else np.empty((0, BLOCK_ELEMS), np.float16)


def exact_ties(fmt: str, rng: np.random.Generator, n_blocks: int) -> np.ndarray:
    """Blocks whose scale is a power of two, with elements at exact half-steps of it.

    q8_0: max = 127 * 2**k, so d = 2**k and x = (n + 0.5) * 2**k makes x * id exactly n + 0.5.
    q4_0: max = -8 * 2**k the same way; q4_1: min = 0, max = 15 * 2**k.
    """
    k = rng.integers(-20, 8, size=(n_blocks, 1)).astype(np.float64)
    step = 2.0**k
    levels = {"q8_0": 127, "q4_0": 8, "q4_1": 15}[fmt]
    n = rng.integers(0, levels, size=(n_blocks, BLOCK_ELEMS))
    sign = rng.choice([-1.0, 1.0], size=(n_blocks, BLOCK_ELEMS)) if fmt != "q4_1" else 1.0
    x = sign * (n + 0.5) * step
    lane = rng.integers(0, BLOCK_ELEMS, n_blocks)
    top = {"q8_0": 127.0, "q4_0": -8.0, "q4_1": 15.0}[fmt] * step[:, 0]
    x[np.arange(n_blocks), lane] = top
    if fmt == "q4_1":
        x[np.arange(n_blocks), (lane + 1) % BLOCK_ELEMS] = 0.0
    return x.astype(np.float16)


def special_blocks(rng: np.random.Generator) -> np.ndarray:
    """Zero blocks of every zero-sign mix, subnormal-only blocks, 65504 blocks, blocks far from zero
    with a span of a few ulps, and blocks mixing huge and tiny values."""
    rows = []
    z = np.zeros(BLOCK_ELEMS, np.uint16)
    rows += [z, z | 0x8000]
    for _ in range(64):
        rows.append(np.where(rng.random(BLOCK_ELEMS) < 0.5, 0x8000, 0).astype(np.uint16))
    for _ in range(256):  # subnormal-only blocks, some with zeros of both signs
        b = rng.integers(0, 0x0400, BLOCK_ELEMS).astype(np.uint16) | (rng.integers(0, 2, BLOCK_ELEMS) << 15).astype(np.uint16)
        rows.append(b)
    for _ in range(256):  # +/-65504 with anything
        b = rng.choice(FINITE, BLOCK_ELEMS)
        b[rng.integers(0, BLOCK_ELEMS)] = rng.choice([0x7BFF, 0xFBFF])
        rows.append(b)
    # Far from zero with a span of one to three ulps: q4_1's |x| * id reaches ~15 * 2**10.
    # The base leaves room in the fraction, so adding a few ulps never changes the exponent.
    bases = FINITE[((FINITE & 0x7FFF) > 0x0400) & ((FINITE & 0x3FF) < 0x3FC)]
    for k in range(256):
        rows.append((rng.choice(bases) + rng.integers(0, 2 + 2 * (k % 2), BLOCK_ELEMS)).astype(np.uint16))
    for _ in range(256):  # huge and tiny together: fl32(x - min) has to round
        b = rng.integers(0, 0x0400, BLOCK_ELEMS).astype(np.uint16) | (rng.integers(0, 2, BLOCK_ELEMS) << 15).astype(np.uint16)
        b[rng.integers(0, BLOCK_ELEMS, 3)] = rng.integers(0x6000, 0x7BFF, 3)
        rows.append(b)
    return np.array(rows, np.uint16).view(np.float16)


# --- streams for the RTL regressions and benchmarks --------------------------------------------

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
    return np.concatenate([ALL, rng.permutation(ALL)]).view(np.float16)


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
    return np.concatenate([ALL, rng.permutation(ALL)]).view(BF16)


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
