"""Golden quantize vs gguf-py, byte for byte, for q8_0 / q4_0 / q4_1.

Both evaluations are checked: ``golden.quantize`` (the software fast path) and
``quantize_blocks_exact`` (every lane chain evaluated literally, the normative spec). Seeds come
from KVPATH_SEED (default below) and are printed in every failure message.
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

from kvpath import golden
from kvpath.config import get_format
from kvpath import stimulus as V
from kvpath.golden.oracle.gguf import describe_mismatch, gguf_quantize
from kvpath.golden.ggml import quantize_blocks_exact

SEED = int(os.environ.get("KVPATH_SEED", "20251123"))
FORMATS = ["q8_0", "q4_0", "q4_1"]


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng([SEED, *(zlib.crc32(str(k).encode()) for k in key)])


def check(x: np.ndarray, fmt: str, what: str) -> None:
    ref = gguf_quantize(x, fmt).reshape(-1)
    fast = golden.quantize(x, fmt).reshape(-1)
    msg = describe_mismatch(x, fast, ref, fmt, f"{what}, quantize (seed={SEED})")
    assert not msg, msg
    exact = quantize_blocks_exact(np.ascontiguousarray(x).view(np.uint16).reshape(-1, 32), fmt).reshape(-1)
    msg = describe_mismatch(x, exact, ref, fmt, f"{what}, exact spec path (seed={SEED})")
    assert not msg, msg


@pytest.mark.parametrize("fmt", FORMATS)
def test_normal_data(fmt):
    rng = rng_for("normal", fmt)
    # 3 x 11000 blocks > 10**6 elements, at scales that put blocks in normal, subnormal-heavy
    # and large-exponent ranges.
    for scale in (1.0, 2.0**-14, 300.0):
        check(V.normal_blocks(rng, 11000, scale), fmt, f"normal scale={scale}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_heavy_tailed_data(fmt):
    check(V.heavy_tailed_blocks(rng_for("heavy", fmt), 32768), fmt, "student-t with outlier channels")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_pattern_sorted_and_shuffled(fmt):
    check(V.all_patterns_sorted(), fmt, "all finite patterns, sorted")
    rng = rng_for("shuffled", fmt)
    for k in range(4):
        check(V.all_patterns_shuffled(rng), fmt, f"all finite patterns, shuffle {k}")


# Block maxima for the "every pattern alone with this max" sweeps: the largest and smallest
# values, a subnormal, values on both sides of 1, and patterns whose 1/d is inexact.
ALONE_MAXIMA = [0x7BFF, 0xFBFF, 0x3C00, 0xBBFF, 0x0001, 0x03FF, 0x8400, 0x5A3F, 0x1C01]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_pattern_alone_with_chosen_max(fmt):
    rng = rng_for("alone", fmt)
    for big in ALONE_MAXIMA:
        check(V.alone_with(big, rng), fmt, f"every pattern alone with max {big:04x}")
    # q4_1's min is a second scale input: fill the other lanes with a negative value.
    check(V.alone_with(0x4C00, rng, fill=0xCC00), fmt, "every pattern with max 4c00, fill cc00")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_pattern_between_chosen_min_and_max(fmt):
    rng = rng_for("packed", fmt)
    for low, big in [(0xFBFF, 0x7BFF), (0x8001, 0x0400), (0x0000, 0x3555), (0xC001, 0x4002), (0x1000, 0x5000)]:
        check(V.packed_with(big, rng, low=low), fmt, f"patterns in [{low:04x}, {big:04x}]")


@pytest.mark.parametrize("fmt", FORMATS)
def test_ties(fmt):
    rng = rng_for("ties", fmt)
    check(V.exact_ties(fmt, rng, 8000), fmt, "power-of-two scales, exact half steps")
    near = V.near_ties(fmt, rng, 300, tol=2.0**-10)
    assert near.shape[0] > 50, f"too few near-tie blocks generated (seed={SEED})"
    check(near, fmt, "elements within 2**-10 of a rounding boundary")


@pytest.mark.parametrize("fmt", FORMATS)
def test_special_blocks(fmt):
    check(V.special_blocks(rng_for("special", fmt)), fmt, "zero / signed-zero / subnormal / 65504 blocks")


@pytest.mark.parametrize("fmt", FORMATS)
def test_nonfinite_inputs_follow_the_sanitize_rule(fmt):
    """Inf -> +/-65504 and NaN -> +0 before quantizing, and every such element is counted."""
    rng = rng_for("nonfinite", fmt)
    x = V.all_patterns_shuffled(rng, finite_only=False)
    blocks, n = golden.quantize_report(x, fmt)
    assert n == V.NONFINITE.size, f"non-finite count {n}, expected {V.NONFINITE.size} (seed={SEED})"
    msg = describe_mismatch(x, blocks, gguf_quantize(x, fmt), fmt, f"non-finite patterns (seed={SEED})")
    assert not msg, msg
    # The rule itself, spelled out on one block: +Inf, -Inf and two NaNs next to 1.0.
    one = np.zeros((1, 32), np.uint16)
    one[0, :5] = [0x7C00, 0xFC00, 0x7E00, 0xFD01, 0x3C00]
    want = one.copy()
    want[0, :4] = [0x7BFF, 0xFBFF, 0x0000, 0x0000]
    got, n = golden.quantize_report(one.view(np.float16), fmt)
    assert n == 4
    assert np.array_equal(got, golden.quantize(want.view(np.float16), fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_layouts(fmt):
    """Leading dimensions, non-contiguous input and chunk boundaries do not change any byte."""
    rng = rng_for("layouts", fmt)
    x = V.normal_blocks(rng, 3 * 17 * 4, 2.0).reshape(3, 17, 128)
    got = golden.quantize(x, fmt)
    assert got.shape == (3, 17, 4 * get_format(fmt).block_bytes)
    assert np.array_equal(got.reshape(-1), gguf_quantize(x, fmt).reshape(-1)), f"seed={SEED}"
    wide = V.normal_blocks(rng, 64, 1.0).reshape(8, 256)
    strided = wide[:, ::2]  # 128 elements per row, not contiguous
    assert np.array_equal(golden.quantize(strided, fmt), golden.quantize(strided.copy(), fmt))
    # One block more than the chunk size: the chunk loop's last partial chunk.
    n_blocks = golden.frame.CHUNK_BLOCKS + 1
    big = V.heavy_tailed_blocks(rng, n_blocks)
    msg = describe_mismatch(big, golden.quantize(big, fmt), gguf_quantize(big, fmt), fmt, f"chunk edge (seed={SEED})")
    assert not msg, msg


LONG = pytest.mark.skipif(os.environ.get("KVPATH_LONG") != "1", reason="long regression: set KVPATH_LONG=1")


@pytest.mark.long
@LONG
@pytest.mark.parametrize("fmt", FORMATS)
def test_long_every_max_significand(fmt):
    """Every 11-bit max significand, with every pattern of smaller magnitude (~25 M elements).

    q8_0/q4_0 scales depend on the max only through its significand, so two exponents (one
    giving a subnormal d) cover every reciprocal-table row against every element pattern.
    """
    rng = rng_for("long-max", fmt)
    for exp_field in (1, 20):
        for m in range(1024):
            check(V.packed_with((exp_field << 10) | m, rng), fmt, f"max {(exp_field << 10) | m:04x}")


@pytest.mark.long
@LONG
@pytest.mark.parametrize("fmt", FORMATS)
def test_long_many_ties(fmt):
    rng = rng_for("long-ties", fmt)
    for _ in range(5):  # 10000 random scales, every in-range pattern screened against each
        check(V.near_ties(fmt, rng, 2000, tol=2.0**-12), fmt, "near ties, long run")
