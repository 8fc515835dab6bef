"""Float cross-checks of the integer arithmetic: every primitive against IEEE hardware via NumPy.

The golden model never uses floating point; here float32 / float16 NumPy operations (which are
correctly rounded) serve as an independent check of each integer step.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from kvpath.golden import recip_table_q4_0, recip_table_q8_0, sanitize
from kvpath.golden.num import fp16
from kvpath import stimulus as V
from kvpath.golden.ggml.elementwise import ADD_FRAC_BITS, mul_rne24, roundf_fixed, trunc_fp32_add
from kvpath.golden.num.rounding import bit_length, div_round_sig, rha_shift, rne_shift, round_sig

SEED = int(os.environ.get("KVPATH_SEED", "20251123"))


def fp32_pattern(sig, exp):
    """IEEE fp32 bit pattern of the positive normal number sig * 2**exp (sig 24-bit normalized)."""
    sig, exp = np.asarray(sig, np.int64), np.asarray(exp, np.int64)
    return (((exp + 23 + 127) << 23) | (sig - (1 << 23))).astype(np.uint32)


def test_recip_table_q8_0_matches_float32_division():
    rom = recip_table_q8_0()
    m = np.arange(1024, 2048).astype(np.float32)
    d = m / np.float32(127)
    assert np.array_equal(fp32_pattern(rom.d_sig, rom.d_exp), d.view(np.uint32))
    assert np.array_equal(fp32_pattern(rom.id_sig, rom.id_exp), (np.float32(1) / d).view(np.uint32))
    assert rom.id_sig.shape == (1024,) and rom.id_sig.min() >= 1 << 23 and rom.id_sig.max() < 1 << 24


def test_recip_table_q4_0_matches_float32_division():
    rom = recip_table_q4_0()
    m = np.arange(1024, 2048).astype(np.float32)
    assert np.array_equal(fp32_pattern(rom.id_sig, rom.id_exp), (np.float32(1) / m).view(np.uint32))
    # The exponent offset is one per row: 1/1024 is exact, every other row is in (2**-11, 2**-10).
    assert set(rom.id_exp.tolist()) == {-33, -34} and rom.id_exp[0] == -33


def test_div_round_sig_matches_float32_division():
    rng = np.random.default_rng([SEED, 1])
    num = rng.integers(1, 1 << 24, 200_000)
    den = rng.integers(1, 1 << 24, 200_000)
    sig, exp = div_round_sig(num, den)
    want = num.astype(np.float32) / den.astype(np.float32)
    assert np.array_equal(fp32_pattern(sig, exp), want.view(np.uint32)), f"seed={SEED}"


def test_rounding_primitives_exhaustive_small():
    v = np.arange(1 << 13, dtype=np.int64)[:, None]
    s = np.arange(1, 14, dtype=np.int64)[None, :]
    q, r = v >> s, v & ((1 << s) - 1)
    half = 1 << (s - 1)
    want_rne = q + ((r > half) | ((r == half) & (q & 1 == 1)))
    assert np.array_equal(rne_shift(v, s), want_rne)
    assert np.array_equal(rha_shift(v, s), q + (r >= half))
    sig, exp = round_sig(v[1:, 0], 24)  # short values: exact, shifted up to 24 bits
    assert np.array_equal(sig << np.maximum(exp, 0) >> np.maximum(-exp, 0), v[1:, 0])
    assert np.array_equal(bit_length(v[:, 0]), [int(x).bit_length() for x in v[:, 0]])


def test_round_sig_matches_int_to_float32_conversion():
    rng = np.random.default_rng([SEED, 2])
    v = rng.integers(1, 1 << 45, 200_000)
    # Exact ties: 24 significant bits followed by a single 1 bit.
    k = rng.integers(1, 20, 50_000)
    ties = ((rng.integers(1 << 23, 1 << 24, 50_000) << 1) | 1) << k
    for vals in (v, ties, np.arange(1, 1 << 16)):
        sig, exp = round_sig(vals, 24)
        assert np.array_equal(fp32_pattern(sig, exp), vals.astype(np.float32).view(np.uint32)), f"seed={SEED}"


def test_mul_rne24_matches_float32_multiply():
    rng = np.random.default_rng([SEED, 3])
    a = rng.integers(1024, 2048, 300_000)
    b = rng.integers(1 << 23, 1 << 24, 300_000)
    r, e = mul_rne24(a, 0, b, 0)
    want = a.astype(np.float32) * b.astype(np.float32)
    sig = np.where(r >> 24 != 0, r >> 1, r)  # a carry to 2**24 is 2**23 one exponent up
    assert np.array_equal(fp32_pattern(sig, e + (r >> 24)), want.view(np.uint32)), f"seed={SEED}"
    a24 = rng.integers(1 << 23, 1 << 24, 300_000)
    r, e = mul_rne24(a24, 0, b, 0, a_bits=24)
    want = a24.astype(np.float32) * b.astype(np.float32)
    sig = np.where(r >> 24 != 0, r >> 1, r)
    assert np.array_equal(fp32_pattern(sig, e + (r >> 24)), want.view(np.uint32)), f"seed={SEED}"


def test_roundf_matches_c_roundf_on_float32():
    rng = np.random.default_rng([SEED, 4])
    sig = rng.integers(1 << 23, 1 << 24, 300_000)
    exp = rng.integers(-40, -16, 300_000)
    y = np.ldexp(sig.astype(np.float64), exp).astype(np.float32)  # exact: 24 bits
    want = np.floor(np.abs(y).astype(np.float64) + 0.5)  # roundf on a magnitude
    assert np.array_equal(roundf_fixed(sig, exp), want.astype(np.int64)), f"seed={SEED}"


@pytest.mark.parametrize("c", [8.5, 0.5])
def test_trunc_fp32_add_matches_float32(c):
    rng = np.random.default_rng([SEED, 5, int(c * 2)])
    sig = rng.integers(1 << 23, 1 << 24, 400_000)
    exp = rng.integers(-50, -20, 400_000)
    neg = rng.integers(0, 2, 400_000) if c == 8.5 else np.zeros(400_000, np.int64)
    # Half of the cases sit within a few ulps of |y| = k + 0.5, where c + y lands on an integer.
    t = rng.integers(1, 8, 200_000) + 0.5
    e = np.floor(np.log2(t)).astype(np.int64)
    exp[:200_000] = e - 23
    sig[:200_000] = (t * 2.0 ** (23 - e)).astype(np.int64) + rng.integers(-3, 4, 200_000)
    y = np.ldexp(sig.astype(np.float64), exp) * np.where(neg == 1, -1.0, 1.0)
    keep = np.abs(y) < (8.0 if c == 8.5 else 15.5)
    y32 = y.astype(np.float32)
    assert np.array_equal(y32.astype(np.float64), y)  # the inputs are exact fp32 values
    assert keep[:200_000].all()
    want = np.trunc(y32 + np.float32(c)).astype(np.int64)
    got = trunc_fp32_add(sig, exp, neg, int(c * 2) << (ADD_FRAC_BITS - 1))
    assert np.array_equal(got[keep], want[keep]), f"seed={SEED}"


def test_encode_matches_float32_to_float16_conversion():
    rng = np.random.default_rng([SEED, 6])
    sig = rng.integers(1 << 23, 1 << 24, 400_000)
    exp = rng.integers(-60, 0, 400_000)  # from far below the subnormals to beyond 65504
    sign = rng.integers(0, 2, 400_000)
    x = (np.ldexp(sig.astype(np.float64), exp) * np.where(sign == 1, -1.0, 1.0)).astype(np.float32)
    bits, overflow = fp16.encode(sign, sig, exp)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    inf = np.isinf(want)
    assert np.array_equal(overflow, inf)
    want_bits = np.where(inf, (sign << 15) | fp16.MAX_FINITE, want.view(np.uint16))
    assert np.array_equal(bits, want_bits), f"seed={SEED}"
    assert inf.any() and (want == 0).any() and ((want.view(np.uint16) & 0x7C00) == 0).any()


def test_fp16_decoding_matches_float_values():
    x = V.FINITE.view(np.float16).astype(np.float64)
    assert np.array_equal(np.ldexp(fp16.fx_signed(V.FINITE).astype(np.float64), -24), x)
    m, e = fp16.normalize(V.FINITE)
    assert np.array_equal(np.ldexp(m.astype(np.float64), e - 25), np.abs(x))
    nz = m != 0
    assert m[nz].min() == 1024 and m.max() == 2047


def test_sanitize_every_pattern():
    out, n = sanitize(V.ALL)
    assert n == V.NONFINITE.size == 2048
    fin = (V.ALL & 0x7C00) != 0x7C00
    assert np.array_equal(out[fin], V.ALL[fin])
    nan = ~fin & ((V.ALL & 0x03FF) != 0)
    assert (out[nan] == 0).all()
    assert out[V.ALL == 0x7C00][0] == 0x7BFF and out[V.ALL == 0xFC00][0] == 0xFBFF
    with pytest.raises(ValueError):
        sanitize(V.ALL.astype(np.int32))


def test_numpy_overshift_gives_zero():
    """The fast path relies on NumPy defining int64 shifts of 64 or more (and below 0) as 0."""
    a = np.array([1 << 40, 5, (1 << 62) - 1, 0], np.int64)
    s = np.array([64, 70, 100, -3], np.int64)
    assert not np.right_shift(a, s).any()
    assert not np.left_shift(np.ones(4, np.int64), s).any()
