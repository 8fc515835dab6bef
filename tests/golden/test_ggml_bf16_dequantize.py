"""Golden BF16 dequantize of q8_0 / q4_0 / q4_1 against gguf.dequantize + ml_dtypes' RNE conversion.

The reference for finite scale fields is ``gguf.dequantize(blocks, type).astype(ml_dtypes.bfloat16)``;
non-finite fields must give the result of their sanitized replacement and be counted. Every FP16
``d`` meets every code; q4_1 sweeps every ``d`` (and every ``m``) against chosen partners and covers
the cases where the double rounding (exact -> fp32 -> BF16) differs from a single one.
"""

from __future__ import annotations

import os

import gguf
import ml_dtypes
import numpy as np
import pytest

from kvpath import golden
from kvpath.config import get_format
from kvpath.golden.ggml import dequant_bf16
from kvpath import stimulus as V
from kvpath.golden.num.fp16 import sanitize

SEED = int(os.environ.get("KVPATH_SEED", "20261201"))
BF16 = np.dtype(ml_dtypes.bfloat16)
GGML = ("q8_0", "q4_0", "q4_1")


def reference(blocks: np.ndarray, fmt: str) -> np.ndarray:
    """BF16 patterns from gguf for blocks whose scale fields are finite."""
    f = get_format(fmt)
    f32 = gguf.dequantize(np.ascontiguousarray(blocks).reshape(-1), getattr(gguf.GGMLQuantizationType, f.ggml_type))
    assert np.isfinite(f32).all(), "reference() needs finite scale fields"
    return f32.astype(BF16).view(np.uint16)


def sanitized_copy(blocks: np.ndarray, fmt: str) -> tuple[np.ndarray, int]:
    f = get_format(fmt)
    out = np.array(blocks, np.uint8).reshape(-1, f.block_bytes)
    hdr, n = sanitize(out[:, : f.header_bytes].copy().view(np.uint16))
    out[:, : f.header_bytes] = hdr.view(np.uint8)
    return out, n


def check(blocks: np.ndarray, fmt: str, what: str) -> tuple[np.ndarray, int, int]:
    """Golden vs reference on ``blocks`` (any bytes); returns the golden result and counters."""
    vals, n_sat, n_bad = golden.dequantize_report(blocks.reshape(-1), fmt, BF16)
    assert vals.dtype == BF16
    clean, n_replaced = sanitized_copy(blocks, fmt)
    want = reference(clean, fmt)
    got = vals.view(np.uint16).reshape(-1)
    bad = np.flatnonzero(got != want)
    f = get_format(fmt)
    assert bad.size == 0, (
        f"{what} (seed={SEED}): {bad.size} BF16 values differ; first at element {bad[0]}: kvpath "
        f"{got[bad[0]]:04x} gguf+ml_dtypes {want[bad[0]]:04x}, block "
        f"{blocks.reshape(-1, f.block_bytes)[bad[0] // 32].tobytes().hex(' ')}")
    assert n_bad == n_replaced, f"{what}: non-finite scale count {n_bad}, expected {n_replaced} (seed={SEED})"
    # Finite FP16 scales times 4/8-bit codes stay below 2**21: nothing can saturate in BF16.
    assert n_sat == 0, f"{what}: {n_sat} saturations (seed={SEED})"
    return got, n_sat, n_bad


def headers(*fields: np.ndarray) -> np.ndarray:
    return np.stack(fields, axis=1).astype("<u2").view(np.uint8)


def nibble_codes(n: int) -> np.ndarray:
    nib = np.arange(16, dtype=np.uint8)
    return np.tile(nib | (nib[::-1] << 4), (n, 1))


def test_q8_0_every_scale_with_every_code():
    d = np.repeat(V.ALL, 8)  # every pattern, Inf and NaN included
    codes = np.tile(np.arange(256, dtype=np.uint8).reshape(8, 32), (V.ALL.size, 1))
    got, _, n_bad = check(np.concatenate([headers(d), codes], axis=1), "q8_0", "q8_0 every d x code")
    assert n_bad == 8 * V.NONFINITE.size
    # Subnormal d must come out normalized: the smallest product 2**-24 is 0x3380 in BF16.
    assert (got == 0x3380).any()


def test_q4_0_every_scale_with_every_code():
    blocks = np.concatenate([headers(V.ALL), nibble_codes(V.ALL.size)], axis=1)
    _, _, n_bad = check(blocks, "q4_0", "q4_0 every d x code")
    assert n_bad == V.NONFINITE.size


# Zeros of both signs, the smallest subnormal, 1, -65504, the largest negative subnormal, and
# patterns with bits that BF16 rounds off (ties and near-ties of the 8-bit significand).
Q4_1_SPECIAL = [0x0000, 0x8000, 0x0001, 0x3C00, 0xFBFF, 0x83FF, 0x3C04, 0x3C0C, 0xBC03, 0x0007]


def test_q4_1_every_d_with_every_code_for_chosen_m():
    rng = np.random.default_rng([SEED, 1])
    for m in Q4_1_SPECIAL + list(rng.choice(V.FINITE, 3)):
        m_col = np.full(V.ALL.size, m, np.uint16)
        check(np.concatenate([headers(V.ALL, m_col), nibble_codes(V.ALL.size)], axis=1), "q4_1",
              f"q4_1 every d, m={m:04x}")


def test_q4_1_every_m_with_every_code_for_chosen_d():
    rng = np.random.default_rng([SEED, 2])
    for d in Q4_1_SPECIAL + list(rng.choice(V.FINITE, 3)):
        d_col = np.full(V.ALL.size, d, np.uint16)
        check(np.concatenate([headers(d_col, V.ALL), nibble_codes(V.ALL.size)], axis=1), "q4_1",
              f"q4_1 every m, d={d:04x}")


def exact_q4_1(blocks: np.ndarray) -> np.ndarray:
    """d*q + m per element in float64 (exact: FP16 operands need far fewer than 53 bits)."""
    hdr = blocks[:, :4].copy().view(np.float16).astype(np.float64)
    q = np.concatenate([blocks[:, 4:] & 15, blocks[:, 4:] >> 4], axis=1).astype(np.float64)
    return hdr[:, 0:1] * q + hdr[:, 1:2]


def round_once_to_bf16(x: np.ndarray) -> np.ndarray:
    """BF16 patterns of float64 values rounded once, to nearest even (ml_dtypes goes through
    float32 from float64, which is the very double rounding under test). Normal range only."""
    bits = np.abs(x).view(np.uint64)
    lo = (bits & ~np.uint64((1 << 45) - 1)).view(np.float64)  # truncated to 8 significant bits
    ulp = np.ldexp(1.0, np.frexp(lo)[1] - 8)
    hi = lo + ulp
    below, above = np.abs(x) - lo, hi - np.abs(x)  # exact: same binade
    odd = ((bits >> np.uint64(45)) & np.uint64(1)).astype(bool)
    mag = np.where((above < below) | ((above == below) & odd), hi, lo)
    return np.where(x == 0, x, np.copysign(mag, x)).astype(BF16).view(np.uint16)


def test_q4_1_double_rounding():
    """Every pair of exponent fields; the set must contain sums where rounding the exact value
    straight to BF16 differs from gguf's fp32-then-BF16, and the golden model must follow gguf."""
    rng = np.random.default_rng([SEED, 3])
    e = np.arange(31)
    ed, em = (a.reshape(-1) for a in np.meshgrid(e, e))
    ed, em = np.repeat(ed, 200), np.repeat(em, 200)
    d = (rng.integers(0, 2, ed.size) << 15) | (ed << 10) | rng.integers(0, 1024, ed.size)
    m = (rng.integers(0, 2, ed.size) << 15) | (em << 10) | rng.integers(0, 1024, ed.size)
    codes = rng.integers(0, 256, (ed.size, 16), dtype=np.uint8)
    blocks = np.concatenate([headers(d, m), codes], axis=1)
    got, _, _ = check(blocks, "q4_1", "q4_1 exponent grid")
    exact = exact_q4_1(blocks).reshape(-1)
    once = round_once_to_bf16(exact)
    differs = (once != got) & (exact != 0)
    assert differs.sum() > 100, f"only {differs.sum()} double-rounding cases (seed={SEED})"


def bf16_data(rng: np.random.Generator, n_blocks: int) -> np.ndarray:
    """Normal, heavy-tailed and wide-range BF16 K/V rows, as float32 (exactly the BF16 values)."""
    third = n_blocks // 3
    normal = rng.standard_normal((third, 32))
    heavy = rng.standard_t(3, (third, 32)) * np.where(rng.random((1, 32)) < 1 / 16, 100.0, 1.0)
    wide = rng.standard_normal((n_blocks - 2 * third, 32)) * 2.0 ** rng.integers(-40, 40, (n_blocks - 2 * third, 1))
    x = np.concatenate([normal, heavy, wide]) * 2.0 ** rng.integers(-8, 8, (n_blocks, 1))
    return x.astype(np.float32).astype(BF16).astype(np.float32)


@pytest.mark.parametrize("fmt", GGML)
def test_random_and_quantized_blocks(fmt):
    """>= 10**6 elements per format: random bytes (any scale, non-finite ones included) and blocks
    gguf wrote from BF16 data (reference: gguf.quantize(x_bf16.astype(float32)))."""
    f = get_format(fmt)
    rng = np.random.default_rng([SEED, 4, f.block_bytes])
    junk = rng.integers(0, 256, (20_000, f.block_bytes), dtype=np.uint8)
    x = bf16_data(rng, 12_000)
    with np.errstate(over="ignore"):  # huge BF16 blocks give Inf d fields: sanitized and counted
        written = gguf.quantize(x, getattr(gguf.GGMLQuantizationType, f.ggml_type)).reshape(-1, f.block_bytes)
    blocks = np.concatenate([junk, written])
    assert blocks.shape[0] * 32 >= 10**6
    _, _, n_bad = check(blocks, fmt, f"{fmt} random + gguf-written blocks")
    assert n_bad > 0  # junk holds Inf/NaN fields


@pytest.mark.parametrize("fmt", GGML)
def test_nonfinite_scale_fields(fmt):
    """Inf -> +/-65504, NaN -> +0 before use, one count per replaced field."""
    f = get_format(fmt)
    rng = np.random.default_rng([SEED, 5, f.block_bytes])
    n = 512
    blocks = rng.integers(0, 256, (n, f.block_bytes), dtype=np.uint8)
    fields = rng.choice(V.NONFINITE, (n, len(f.scale_fields)))
    blocks[:, : f.header_bytes] = fields.astype("<u2").view(np.uint8)
    vals, n_sat, n_bad = golden.dequantize_report(blocks.reshape(-1), fmt, BF16)
    assert n_bad == fields.size and n_sat == 0
    clean = blocks.copy()
    rep = np.where(fields & 0x3FF, 0, (fields & 0x8000) | 0x7BFF)
    clean[:, : f.header_bytes] = rep.astype("<u2").view(np.uint8)
    want, _, n_clean = golden.dequantize_report(clean.reshape(-1), fmt, BF16)
    assert n_clean == 0 and np.array_equal(vals.view(np.uint16), want.view(np.uint16))


def test_api_shapes_and_dtype():
    rng = np.random.default_rng([SEED, 6])
    blocks = rng.integers(0, 256, (3, 2, 4 * 20), dtype=np.uint8)
    out = golden.dequantize(blocks, "q4_1", dtype=ml_dtypes.bfloat16)
    assert out.dtype == BF16 and out.shape == (3, 2, 128)
    with pytest.raises(ValueError):
        dequant_bf16.dequantize_blocks(blocks.reshape(-1, 20), "mxfp4")


def test_encoder_against_ml_dtypes_over_the_float32_range():
    """The BF16 encoder (RNE, subnormals, saturation) on float32 values from 2**-149 to the top:
    every rounding case it can meet, not only the ones dequantize produces."""
    rng = np.random.default_rng([SEED, 7])
    bits = np.concatenate([rng.integers(0, 0x7F800000, 400_000, dtype=np.uint32),
                           rng.integers(0x7F7F0000, 0x7F800000, 10_000, dtype=np.uint32),  # overflow edge
                           rng.integers(0, 0x01000000, 10_000, dtype=np.uint32)])  # subnormal edge
    bits |= rng.integers(0, 2, bits.size, dtype=np.uint32) << 31
    e = (bits >> 23) & 0xFF
    frac = (bits & 0x7FFFFF).astype(np.int64)
    sig = np.where(e > 0, frac | (1 << 23), frac)
    exp = np.maximum(e.astype(np.int64), 1) - 150
    got, overflow = dequant_bf16.encode((bits >> 31).astype(np.int64), sig, exp)
    with np.errstate(over="ignore"):
        want = bits.view(np.float32).astype(BF16)
    inf = np.isinf(want)
    want_bits = np.where(inf, (want.view(np.uint16) & 0x8000) | 0x7F7F, want.view(np.uint16))
    assert np.array_equal(got, want_bits), f"seed={SEED}: {np.count_nonzero(got != want_bits)} differ"
    assert np.array_equal(overflow, inf) and inf.any() and (want_bits & 0x7F80 == 0).any()
