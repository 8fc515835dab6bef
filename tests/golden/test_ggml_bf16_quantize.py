"""Golden quantize from BF16 input vs gguf-py (on the float32 copy), byte for byte, q8_0/q4_0/q4_1.

Covers >= 10**6 elements per format of normal and heavy-tailed data scaled across BF16's exponent
range, all 65,536 BF16 patterns, every block maximum (so every overflow/underflow boundary of the
FP16 scale fields and of the fp32 scale, reciprocal and span), q4_1 spans that overflow fp32, and
exact and near ties at scales across the range. The one allowed difference is kvpath's rule for
void blocks (Inf/NaN products, whose integer cast NumPy leaves to the platform): on x86-64 gguf
agrees there too, elsewhere only those blocks may differ. Seeds: KVPATH_SEED (printed on failure).
"""

from __future__ import annotations

import os
import platform
import time
import zlib

import gguf
import ml_dtypes
import numpy as np
import pytest

from kvpath import golden
from kvpath.config import get_format
from kvpath.golden.ggml import bf16 as ggml_bf16
from kvpath.elements import ELEMENTS
from kvpath.golden.num.elem import sanitize

SEED = int(os.environ.get("KVPATH_SEED", "20251124"))
FORMATS = ["q8_0", "q4_0", "q4_1"]
BF16 = np.dtype(ml_dtypes.bfloat16)
X86 = platform.machine().lower() in ("x86_64", "amd64")


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng([SEED, *(zlib.crc32(str(k).encode()) for k in key)])


def to_bits(values) -> np.ndarray:
    """float64 values -> sanitized BF16 patterns, (nb, 32). Values beyond BF16 become Inf first."""
    with np.errstate(over="ignore"):
        bits = np.asarray(values, np.float32).astype(BF16).view(np.uint16)
    return sanitize(bits.reshape(-1, 32), ELEMENTS["bf16"])[0]


def gguf_bytes(bits: np.ndarray, fmt: str) -> np.ndarray:
    x = np.ascontiguousarray(bits).view(BF16).astype(np.float32)
    with np.errstate(all="ignore"):  # void blocks: Inf * 0 and the cast of Inf/NaN
        return gguf.quantize(x, gguf.GGMLQuantizationType[get_format(fmt).ggml_type])


def zero_sign_only(ours, ref, bits, fmt):
    """q4_1 rows that differ only in the sign of a zero m in a block holding both zeros: gguf's
    NumPy min picks either zero depending on alignment (docs/numerics.md section 7)."""
    if fmt != "q4_1":
        return np.zeros(len(ours), bool)
    diff = ours ^ ref
    only_sign = (diff[:, :3] == 0).all(axis=1) & (diff[:, 3] == 0x80) & (diff[:, 4:] == 0).all(axis=1)
    m_zero = ((ours[:, 2] == 0) & ((ours[:, 3] & 0x7F) == 0))
    both = ((bits == 0).any(axis=1)) & ((bits == 0x8000).any(axis=1))
    return only_sign & m_zero & both


def check(bits: np.ndarray, fmt: str, what: str) -> int:
    """Compare with gguf; returns how many void blocks the data held."""
    ours = ggml_bf16.quantize_blocks(bits, fmt)
    ref = gguf_bytes(bits, fmt)
    void = ggml_bf16.void_blocks(bits, fmt)
    bad = (ours != ref).any(axis=1) & ~zero_sign_only(ours, ref, bits, fmt)
    allowed = void if not X86 else np.zeros_like(void)
    wrong = np.flatnonzero(bad & ~allowed)
    if wrong.size:
        i = wrong[0]
        pytest.fail(f"{fmt} {what} (seed={SEED}): {wrong.size} of {len(bits)} blocks differ; block {i}\n"
                    f"  input  {' '.join(f'{v:04x}' for v in bits[i])}\n"
                    f"  kvpath {ours[i].tobytes().hex(' ')}\n  gguf   {ref[i].tobytes().hex(' ')}")
    # kvpath's rule itself: a void block's codes are all 0 and its header is still gguf's.
    f = get_format(fmt)
    assert (ours[void, f.header_bytes:] == 0).all(), f"{fmt} {what}: void block codes not 0 (seed={SEED})"
    assert (ours[void, :f.header_bytes] == ref[void, :f.header_bytes]).all(), f"{fmt} {what} (seed={SEED})"
    return int(void.sum())


def scaled(rng, values: np.ndarray, lo: int = -133, hi: int = 127) -> np.ndarray:
    """Blocks of ``values`` each scaled by 2**k, k uniform over BF16's binades."""
    v = values.reshape(-1, 32)
    return v * 2.0 ** rng.uniform(lo, hi, (len(v), 1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_normal_and_heavy_tailed_million(fmt):
    rng = rng_for("data", fmt)
    n_blocks = 1 << 15  # 2**20 elements each
    t = time.perf_counter()
    void = check(to_bits(scaled(rng, rng.standard_normal(n_blocks * 32))), fmt, "normal, scaled")
    df3 = rng.standard_t(3, (n_blocks, 32))
    df3[:, rng.choice(32, 2, replace=False)] *= 100  # outlier channels
    void += check(to_bits(np.clip(scaled(rng, df3), -3e38, 3e38)), fmt, "student-t, scaled")
    assert void > 0, "the scaled data should reach the void range (blocks below 2**-120)"
    # Unscaled data, the common case, with no void block at all.
    assert check(to_bits(rng.standard_normal(n_blocks * 32)), fmt, "normal") == 0
    assert time.perf_counter() - t < 30


@pytest.mark.parametrize("fmt", FORMATS)
def test_all_bf16_patterns(fmt):
    bits = sanitize(np.arange(1 << 16, dtype=np.uint16), ELEMENTS["bf16"])[0]
    check(bits.reshape(-1, 32), fmt, "all patterns, sorted")
    rng = rng_for("shuffle", fmt)
    for k in range(4):
        check(rng.permutation(bits).reshape(-1, 32), fmt, f"all patterns, shuffle {k}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_block_maximum(fmt):
    """Every finite magnitude as the block's largest element: crosses every boundary where d or m
    overflows or underflows FP16, d becomes an fp32 subnormal and id overflows to Inf."""
    rng = rng_for("maxima", fmt)
    mags = np.arange(1, 0x7F80, dtype=np.uint16)
    big = mags | (rng.integers(0, 2, mags.size).astype(np.uint16) << 15)
    for spread in (1.0, 2.0**-12):
        rest = rng.uniform(-1, 1, (mags.size, 31)) * spread
        vals = np.concatenate([big.view(BF16).astype(np.float64)[:, None],
                               big.view(BF16).astype(np.float64)[:, None] * rest], axis=1)
        vals = vals[np.arange(len(vals))[:, None], rng.permuted(np.tile(np.arange(32), (len(vals), 1)), axis=1)]
        check(to_bits(vals), fmt, f"every maximum, others within {spread} of it")
    # Every magnitude against the extremes, and every magnitude as both max and -min (q4_1 spans
    # that overflow fp32 when they reach 2**128).
    lone = np.zeros((mags.size, 32), np.uint16)
    lone[:, 0] = mags
    lone[:, 1] = mags | 0x8000
    lone[:, 2:] = rng.integers(0, 0x7F80, (mags.size, 30)).astype(np.uint16) & rng.choice([0x7F, 0xFF, 0x7FFF], (mags.size, 1)).astype(np.uint16)
    check(lone, fmt, "+m and -m with small company")
    against = np.repeat(np.array([[0x7F7F, 0xFF7F, 0x0001, 0x8001, 0x3F80]], np.uint16), mags.size, 0)
    for j, fill in enumerate(against.T):
        block = np.tile(mags[:, None], (1, 32))
        block[:, 7] = fill
        check(block, fmt, f"every magnitude with one element {fill[0]:04x}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_ties_across_the_range(fmt):
    """Elements exactly on (and one BF16 ulp beside) the codes' rounding boundaries, with the scale
    pinned to an exact power of two, at binades across BF16's range."""
    rng = rng_for("ties", fmt)
    n = 4096
    if fmt == "q8_0":
        pin, half = [127.0], np.arange(-127, 127) + 0.5
    elif fmt == "q4_0":
        pin, half = [-8.0], np.arange(-8, 8) + 0.5
    else:
        pin, half = [0.0, 15.0], np.arange(0, 15) + 0.5
    body = rng.choice(half, (n, 32 - len(pin))).astype(np.float32).astype(BF16).view(np.int16)
    body = (body + rng.integers(-1, 2, body.shape).astype(np.int16)).view(BF16).astype(np.float64)
    blocks = np.concatenate([np.tile(pin, (n, 1)), body], axis=1)
    scale = 2.0 ** rng.integers(-130, 120, (n, 1)).astype(np.float64)
    check(to_bits(blocks * scale), fmt, "ties at scales 2**-130 .. 2**120")


def test_frame_api_takes_bfloat16_and_counts_nonfinite():
    rng = rng_for("api")
    x = rng.standard_normal((4, 64)).astype(np.float32).astype(BF16)
    x[0, 3], x[2, 40], x[3, 0] = np.inf, -np.inf, np.nan
    for fmt in FORMATS:
        blocks, n_bad = golden.quantize_report(x, fmt)
        assert n_bad == 3
        assert blocks.shape == (4, 2 * get_format(fmt).block_bytes)
        bits = sanitize(x.view(np.uint16).reshape(-1, 32), ELEMENTS["bf16"])[0]
        assert (blocks.reshape(-1, get_format(fmt).block_bytes) == gguf_bytes(bits, fmt)).all()
        assert (golden.quantize(x, fmt) == blocks).all()


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        ggml_bf16.quantize_blocks(np.zeros((2, 16), np.uint16), "q8_0")
    with pytest.raises(ValueError):
        ggml_bf16.quantize_blocks(np.zeros((2, 32), np.uint16), "mxfp4")


def test_million_elements_in_a_few_seconds():
    rng = rng_for("speed")
    bits = to_bits(scaled(rng, rng.standard_normal(1 << 20)))
    for fmt in FORMATS:
        t = time.perf_counter()
        ggml_bf16.quantize_blocks(bits, fmt)
        assert time.perf_counter() - t < 3.0, f"{fmt}: 2**20 BF16 elements took over 3 s"
