"""MX golden model (kvpath.golden.mx) against gguf (mxfp4) and gfloat (mxint8, mxfp8_e4m3), byte for byte.

Default suite: 2**20 elements per format and input type against gguf / gfloat's vectorized encoder,
every input bit pattern, tie vectors, wide-dynamic-range blocks, dequantize, round trip, and gfloat's
scalar ``encode_block`` on a 16,384-element sample. ``KVPATH_LONG=1`` adds the scalar reference on
2**20 elements per format and input type (minutes: gfloat encodes one element per Python call).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from kvpath import golden
from kvpath.config import MX_FORMATS, get_format
from kvpath.golden import mx
from kvpath.elements import element
from kvpath.golden.num import elem as E
from kvpath.golden import oracle
from kvpath import stimulus

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = {"fp16": np.dtype(np.float16), "bf16": BF16}
ELEMS = ("fp16", "bf16")
MILLION = 1 << 20


def _sanitized(x, elem):
    bits, _ = E.sanitize(np.ascontiguousarray(x).view(np.uint16).reshape(-1), element(elem))
    return bits.view(DTYPES[elem])


def _check_against_reference(x, fmt, elem, seed, what):
    """quantize(x) equals the reference wherever it defines the bytes, and the clamped-scale ggml rule
    where gguf does not (BF16 mxfp4 blocks with 0 < amax < 2**-125)."""
    got = golden.quantize(x, fmt).reshape(-1, get_format(fmt).block_bytes)
    clean = _sanitized(x, elem)
    ref, defined = oracle.quantize(clean, fmt)
    if not defined.all():
        ref = ref.copy()
        ref[~defined] = oracle.gguf.mxfp4_clamped(clean.reshape(-1, 32)[~defined])
    bad = np.flatnonzero(np.any(got != ref, axis=1))
    assert bad.size == 0, (f"{fmt} {elem} {what} seed={seed}: {bad.size} blocks differ, first {bad[0]}: "
                           f"x={clean.reshape(-1, 32)[bad[0]].astype(np.float32)} got={got[bad[0]]} ref={ref[bad[0]]}")
    return got, defined


@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("fmt", MX_FORMATS)
def test_million_elements_vs_reference(fmt, elem):
    seed = 20251
    x = stimulus.mixed(fmt, MILLION, seed, elem)  # specials, ties, all patterns, normal, heavy-tailed
    assert x.size >= 10 ** 6
    _check_against_reference(x, fmt, elem, seed, "mixed")


@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("fmt", MX_FORMATS)
def test_every_bit_pattern(fmt, elem):
    """Every magnitude pattern sets the scale of one block, as +x and -x, among 30 random patterns of
    no larger magnitude (non-finite ones included: they are sanitized and counted)."""
    seed = 7
    rng = np.random.default_rng(seed)
    mags = np.arange(1 << 15, dtype=np.uint16)
    others = (rng.random((mags.size, 30)) * (mags[:, None].astype(np.float64) + 1)).astype(np.uint16)
    others |= (rng.random(others.shape) < 0.5).astype(np.uint16) << 15
    blocks = np.concatenate([mags[:, None], mags[:, None] | 0x8000, others], axis=1)
    blocks = rng.permuted(blocks, axis=1)
    x = blocks.reshape(-1).view(DTYPES[elem])
    _, nonfinite = golden.quantize_report(x, fmt)
    frac = 10 if elem == "fp16" else 7
    ones = (1 << (15 - frac)) - 1
    assert nonfinite == int(np.count_nonzero(((blocks >> frac) & ones) == ones))
    _check_against_reference(x, fmt, elem, seed, "bit patterns")


def _bf16_nudged(x16_ties, rng):
    """The FP16 tie blocks on BF16's grid, each non-pin element one BF16 ulp either way (or not)."""
    x = x16_ties.astype(np.float32).astype(BF16).reshape(-1, 32)
    mags = np.abs(x.astype(np.float32))
    pin = mags == mags.max(axis=1, keepdims=True)
    nudge = np.where(pin, 0, rng.integers(-1, 2, x.shape)).astype(np.int16)
    return (x.view(np.int16) + nudge).view(BF16).reshape(-1)


@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("fmt", MX_FORMATS)
def test_tie_vectors(fmt, elem):
    seed = 99
    rng = np.random.default_rng(seed)
    x = stimulus.tie_blocks(rng, fmt, count=2048)
    if elem == "bf16":
        x = _bf16_nudged(x, rng)
    _check_against_reference(x, fmt, elem, seed, "ties")


def _one_block(values, dtype=np.float16):
    x = np.zeros(32, np.float32)
    x[: len(values)] = values
    return x.astype(dtype)


@pytest.mark.parametrize("elem", ELEMS)
def test_tie_rules_by_hand(elem):
    """Exact thresholds, computed from the spec, not from the model: amax 4 sets X = 0 (mxfp4),
    amax 1 sets X = 0 (mxint8), amax 256 sets X = 0 (mxfp8_e4m3)."""
    dt = DTYPES[elem]
    # mxfp4: ties go to the smaller magnitude; E2M1 codes 0..7 = 0, .5, 1, 1.5, 2, 3, 4, 6.
    b = golden.quantize(_one_block([4.0, 0.25, 0.75, 1.25, 2.5, 3.5, 5.0, 7.5, -0.25, -5.0], dt), "mxfp4")
    codes = np.concatenate([b[1:] & 0xF, b[1:] >> 4])
    assert b[0] == 127 and list(codes[:10]) == [6, 0, 1, 2, 4, 5, 6, 7, 0, 8 | 6]
    # mxint8: 64 t rounded half to even, 127 / -128 at the ends.
    b = golden.quantize(_one_block([1.0, 0.5 / 64, 1.5 / 64, 2.5 / 64, 1.984375, -1.9921875, -1.0], dt), "mxint8")
    assert b[0] == 127 and list(b[1:8]) == [64, 0, 2, 2, 127, 0x80, 0xC0]
    # mxfp8_e4m3 (ties to even): 256 -> 0x78; 248, halfway from 240 (0x77) to 256, -> 0x78;
    # 2**-10, half the subnormal step, -> 0; 3 * 2**-10 -> 2**-8 (0x02); -0 -> 0x80.
    b = golden.quantize(_one_block([256.0, 248.0, 2.0 ** -10, 3 * 2.0 ** -10, -0.0], dt), "mxfp8_e4m3")
    assert b[0] == 127 and list(b[1:6]) == [0x78, 0x78, 0x00, 0x02, 0x80]
    # Saturation: amax 2**9 - 1 ulp is in binade 8, so X = 0 and 511 saturates to 448 (0x7E).
    top = 511.0 if elem == "fp16" else 510.0
    b = golden.quantize(_one_block([top, -top], dt), "mxfp8_e4m3")
    assert b[0] == 127 and list(b[1:3]) == [0x7E, 0xFE]


def _wide_blocks(rng, elem, n_blocks):
    """Blocks spanning an element type's whole exponent range, and maxima at the E8M0 limits."""
    lo, hi = (-24, 16) if elem == "fp16" else (-133, 128)
    exps = rng.uniform(lo, hi, (n_blocks, 32))
    x = rng.choice([-1.0, 1.0], (n_blocks, 32)) * 2.0 ** exps
    # Maxima at the E8M0 ends for BF16 (shared exponent would leave [-127, 127]) and FP16's ends.
    amax_exp = rng.integers(lo, hi, n_blocks)
    x[np.arange(n_blocks), rng.integers(0, 32, n_blocks)] = 2.0 ** amax_exp * rng.uniform(1, 2, n_blocks)
    small = rng.random(n_blocks) < 0.3
    x[small] *= 2.0 ** (lo - amax_exp[small, None])  # whole block pushed to the bottom of the range
    with np.errstate(over="ignore"):
        y = x.astype(np.float32).astype(DTYPES[elem])
    y[~np.isfinite(y.astype(np.float32))] = 0
    return y.reshape(-1)


@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("fmt", MX_FORMATS)
def test_wide_dynamic_range(fmt, elem):
    seed = 5
    x = _wide_blocks(np.random.default_rng(seed), elem, 8192)
    _, defined = _check_against_reference(x, fmt, elem, seed, "wide range")
    if fmt == "mxfp4" and elem == "bf16":
        assert not defined.all(), "the clamped range was not exercised"


def test_e8m0_limits_bf16():
    """kvpath clamps the shared exponent to [-127, 127] as gfloat's compute_scale_amax does; gguf's
    MXFP4 wraps a negative biased exponent (amax < 2**-125) through a uint8 cast instead."""
    for v, byte4, byte8, bytefp8 in ((2.0 ** -133, 0, 0, 0), (2.0 ** -125, 0, 2, 0), (2.0 ** -126, 0, 1, 0),
                                     (2.0 ** 127 * 1.5, 252, 254, 246)):
        x = _one_block([v, -v / 2], BF16)
        assert golden.quantize(x, "mxfp4")[0] == byte4
        assert golden.quantize(x, "mxint8")[0] == byte8 == oracle.quantize(x, "mxint8")[0][0, 0]
        assert golden.quantize(x, "mxfp8_e4m3")[0] == bytefp8 == oracle.quantize(x, "mxfp8_e4m3")[0][0, 0]
    ggml_block, defined = oracle.quantize(_one_block([2.0 ** -126], BF16), "mxfp4")
    assert not defined[0] and ggml_block[0, 0] != 0  # gguf: 255 on this machine's NumPy


@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("fmt", MX_FORMATS)
def test_dequantize_vs_reference(fmt, elem):
    """Any bytes (every scale byte, NaN scales and NaN elements included) and quantized data."""
    seed = 11
    rng = np.random.default_rng(seed)
    f = get_format(fmt)
    junk = rng.integers(0, 256, (1 << 14, f.block_bytes), dtype=np.uint8)
    junk[:256, 0] = np.arange(256)
    valid = golden.quantize(stimulus.mixed(fmt, 1 << 18, seed, elem), fmt).reshape(-1, f.block_bytes)
    blocks = np.concatenate([junk, valid])
    got, sat, bad = golden.dequantize_report(blocks.reshape(-1), fmt, DTYPES[elem])
    ref, ref_sat, ref_bad = oracle.dequantize(blocks, fmt, DTYPES[elem])
    diff = np.flatnonzero(got.reshape(-1).view(np.uint16) != ref.reshape(-1))
    assert diff.size == 0, (f"{fmt} {elem} seed={seed}: {diff.size} values differ, first element {diff[0]}: "
                            f"got {got.reshape(-1)[diff[0]]} ref {ref.reshape(-1).view(DTYPES[elem])[diff[0]]}")
    assert (sat, bad) == (ref_sat, ref_bad)
    assert bad >= 1 and sat >= 1


@pytest.mark.parametrize("fmt", MX_FORMATS)
def test_nonfinite_scale_and_elements_read_as_plus_zero(fmt):
    f = get_format(fmt)
    block = np.full(f.block_bytes, 0x33, np.uint8)
    block[0] = 0xFF
    for dt in DTYPES.values():
        v, sat, bad = golden.dequantize_report(block, fmt, dt)
        assert (v.view(np.uint16) == 0).all() and sat == 0 and bad == 1
    if fmt == "mxfp8_e4m3":
        block[0] = 127
        block[1:4] = [0x7F, 0xFF, 0x7E]
        v, sat, bad = golden.dequantize_report(block, fmt, np.float16)
        assert list(v[:3].astype(np.float32)) == [0.0, 0.0, 448.0] and not np.signbit(v[1]) and bad == 2


@pytest.mark.parametrize("fmt", MX_FORMATS)
def test_nonfinite_inputs_are_sanitized_and_counted(fmt):
    for elem, dt in DTYPES.items():
        x = _one_block([1.0, 2.0], dt)
        x[5], x[6], x[7] = np.inf, -np.inf, np.nan
        blocks, count = golden.quantize_report(x, fmt)
        top = element(elem).max_finite
        clean = x.view(np.uint16).copy()
        clean[5], clean[6], clean[7] = top, top | 0x8000, 0
        assert count == 3
        assert np.array_equal(blocks, golden.quantize(clean.view(dt), fmt))


@pytest.mark.parametrize("fmt", MX_FORMATS)
def test_zero_blocks(fmt):
    for dt in DTYPES.values():
        z = np.zeros(64, dt)
        z[32:] = -z[32:]  # second block all -0
        b = golden.quantize(z, fmt).reshape(2, -1)
        assert (b[:, 0] == 0).all() and (b[0, 1:] == 0).all()
        # -0 codes: +0 in mxfp4 (ggml) and mxint8 (no -0), -0 (0x80) in E4M3 (gfloat keeps the sign).
        assert (b[1, 1:] == (0x80 if fmt == "mxfp8_e4m3" else 0)).all()


@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("fmt", MX_FORMATS)
def test_round_trip(fmt, elem):
    """Valid blocks whose largest code is in its grid's top binade read back to values that quantize to
    the same bytes (mxint8's -128 is excluded: it reads back as -2 * 2**X, a binade higher)."""
    seed = 3
    rng = np.random.default_rng(seed)
    f = get_format(fmt)
    n = 4096
    lo, hi = (87, 142) if elem == "fp16" else (1, 255)
    scale = rng.integers(lo, hi, n).astype(np.uint8)
    if fmt == "mxfp4":
        codes = rng.integers(0, 16, (n, 32))
        codes[codes == 8] = 0  # -0 reads back as +0
        codes[:, 0] = rng.choice([6, 7, 14, 15], n)
        body = (codes[:, :16] | (codes[:, 16:] << 4)).astype(np.uint8)
    elif fmt == "mxint8":
        body = rng.integers(-127, 128, (n, 32))
        body[:, 0] = rng.choice([1, -1], n) * rng.integers(64, 128, n)
        body = (body & 0xFF).astype(np.uint8)
    else:
        body = rng.integers(0, 256, (n, 32)).astype(np.uint8)
        body[(body & 0x7F) == 0x7F] = 0x7E
        body[:, 0] = (rng.integers(0, 2, n) << 7) | rng.integers(0x78, 0x7F, n)
    blocks = np.concatenate([scale[:, None], body], axis=1)
    # Keep the blocks whose values the output type holds exactly (no saturation, no underflow).
    exact, _ = oracle.values(blocks, fmt)
    y0 = golden.dequantize(blocks.reshape(-1), fmt, DTYPES[elem]).reshape(-1, 32)
    blocks = blocks[np.all(y0.astype(np.float64) == exact, axis=1)]
    y, sat, bad = golden.dequantize_report(blocks.reshape(-1), fmt, DTYPES[elem])
    assert sat == 0 and bad == 0
    again = golden.quantize(y, fmt).reshape(-1, f.block_bytes)
    diff = np.flatnonzero(np.any(again != blocks, axis=1))
    assert len(blocks) > n // 4
    assert diff.size == 0, f"seed={seed}: block {diff[:1]} {blocks[diff[:1]]} -> {again[diff[:1]]}"


def test_literal_lane_matches_reference_rule_on_all_pairs():
    """The mxfp4 lane against a direct argmin over E2M1 for every FP16 magnitude at every shared
    exponent its block could have (X from floor(log2|x|) - 2 up to 15 - 2)."""
    mags = np.arange(1, 0x7C00, dtype=np.uint16)
    v = mags.view(np.float16).astype(np.float64)
    lx = np.floor(np.log2(v)).astype(np.int64)
    for dx in range(0, 6):
        x = np.minimum(lx - 2 + dx, 13)
        codes = mx.lane(mags, x, "mxfp4", "fp16")
        t = v / 2.0 ** x
        grid = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6])
        expect = np.argmin(np.abs(t[:, None] - grid[None, :]), axis=1)  # first index on ties
        assert np.array_equal(codes, expect), f"dx={dx}"


def test_vectorized_scale_equals_gfloat_compute_scale_amax():
    """oracle.scale_amax (used for the 10**6-element comparisons) is gfloat's compute_scale_amax on the
    smallest and largest magnitude of every FP16 and BF16 binade, zero included."""
    from gfloat import compute_scale_amax
    mags = []
    for dt, frac, top in ((np.float16, 10, 0x7C00), (BF16, 7, 0x7F80)):
        starts = np.arange(0, top, 1 << frac, dtype=np.uint16)
        bits = np.unique(np.concatenate([starts, starts + (1 << frac) - 1, [1, 2, 3]]).astype(np.uint16))
        mags.append(bits.view(dt).astype(np.float64))
    mags = np.concatenate(mags)
    for emax in (0, 2, 8):
        ref = np.array([compute_scale_amax(emax, np.array([v, -v / 3])) for v in mags])
        assert np.array_equal(oracle.gfloat.scale_amax(emax, mags), ref), f"emax={emax}"


@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("fmt", ("mxint8", "mxfp8_e4m3"))
def test_gfloat_scalar_encode_block_sample(fmt, elem):
    """gfloat's per-element encode_block agrees with the vectorized reference used above (and the model)."""
    seed = 17
    x = _sanitized(stimulus.mixed(fmt, 1 << 14, seed, elem), elem)
    ref = oracle.gfloat.quantize_scalar(np.asarray(x).astype(np.float64).reshape(-1, 32), fmt)
    assert np.array_equal(ref, oracle.quantize(x, fmt)[0])
    assert np.array_equal(golden.quantize(x, fmt).reshape(ref.shape), ref), f"seed={seed}"


@pytest.mark.long
@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("fmt", ("mxint8", "mxfp8_e4m3"))
def test_gfloat_scalar_encode_block_million(fmt, elem):
    seed = 20251
    x = _sanitized(stimulus.mixed(fmt, MILLION, seed, elem), elem)
    ref = oracle.gfloat.quantize_scalar(np.asarray(x).astype(np.float64).reshape(-1, 32), fmt)
    got = golden.quantize(x, fmt).reshape(ref.shape)
    bad = np.flatnonzero(np.any(got != ref, axis=1))
    assert bad.size == 0, f"seed={seed}: {bad.size} blocks differ, first {bad[0]}"
