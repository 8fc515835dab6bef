"""Stimulus for golden-model and RTL tests: FP16 arrays of shape (nb, 32), one row per block.

Everything is seeded through the ``rng`` argument. Floating point is fine here: these functions
only choose inputs, they never decide an expected result.
"""

from __future__ import annotations

import numpy as np

from kvpath.config import BLOCK_ELEMS

ALL = np.arange(1 << 16, dtype=np.uint16)
FINITE = ALL[(ALL & 0x7C00) != 0x7C00]  # 63488 patterns
NONFINITE = ALL[(ALL & 0x7C00) == 0x7C00]  # +/-Inf and the NaNs
MAX_FP16 = 65504.0


def as_blocks(bits: np.ndarray) -> np.ndarray:
    """uint16 patterns -> float16 (nb, 32), dropping a ragged tail."""
    bits = np.asarray(bits, np.uint16).reshape(-1)
    n = bits.size // BLOCK_ELEMS * BLOCK_ELEMS
    return bits[:n].view(np.float16).reshape(-1, BLOCK_ELEMS)


def normal(rng: np.random.Generator, n_blocks: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal((n_blocks, BLOCK_ELEMS)) * scale).astype(np.float16)


def heavy_tailed(rng: np.random.Generator, n_blocks: int) -> np.ndarray:
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
