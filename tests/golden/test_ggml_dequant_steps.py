"""The dequantizer's arithmetic model (kvpath/golden/ggml/dequant_steps.py, which the RTL mirrors) against gguf-py.

Every FP16 scale with every code for q8_0 and q4_0; for q4_1 every FP16 d against a set of m values
(extremes plus seeded random ones) and every pair of exponents. The reference is gguf.dequantize on
the sanitized block, cast to FP16, with kvpath's saturation rule (Inf -> +/-65504).
"""

import gguf
import numpy as np
import pytest

from kvpath.golden.ggml import dequant_steps as dm

SEED = 20261124
Q = gguf.GGMLQuantizationType
FINITE = np.arange(1 << 16, dtype=np.int64)
FINITE = FINITE[(FINITE & 0x7C00) != 0x7C00]
M_EXTREMES = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x83FF, 0x0400, 0x8400, 0x3C00, 0xBC00,
              0x7BFF, 0xFBFF, 0x7800, 0xF800, 0x3BFF, 0x1400]


def reference(f32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(FP16 bits, saturated)`` of gguf's float32 output under kvpath's saturation rule."""
    with np.errstate(over="ignore"):
        h = f32.astype(np.float16)
    bits = h.view(np.uint16).astype(np.int64)
    inf = np.isinf(h)
    assert not np.isnan(h).any()
    return np.where(inf, (bits & dm.SIGN) | dm.MAX_FINITE, bits), inf


def header(values, width: int) -> np.ndarray:
    """Little-endian bytes of 16-bit fields, ``(n, 2 * width)``."""
    v = np.asarray(values, dtype=np.uint16).reshape(-1, width)
    return v.view(np.uint8).reshape(len(v), 2 * width)


def assert_same(got, got_sat, exp, exp_sat, what: str, labels):
    bad = np.argwhere((got != exp) | (got_sat != exp_sat))
    if len(bad):
        first = tuple(bad[0])
        raise AssertionError(f"seed {SEED}: {what}: {len(bad)} mismatches; first at {labels(first)}: "
                             f"model {int(got[first]):04x} (sat {bool(got_sat[first])}) "
                             f"reference {int(exp[first]):04x} (sat {bool(exp_sat[first])})")


def q41_reference(d, m, q):
    """gguf's q4_1 for per-row ``d``, ``m`` (n,) and codes ``q`` (n, 32)."""
    blocks = np.concatenate([header(np.stack([d, m], 1), 2),
                             (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)], axis=1)
    return reference(gguf.dequantize(blocks.reshape(-1), Q.Q4_1).reshape(len(d), 32))


def test_q8_0_every_scale_every_code():
    codes = np.arange(256)
    blocks = np.concatenate([
        np.repeat(header(FINITE, 1), 8, axis=0),
        np.tile(codes.reshape(8, 32).astype(np.uint8), (len(FINITE), 1)),
    ], axis=1)
    exp, exp_sat = reference(gguf.dequantize(blocks.reshape(-1), Q.Q8_0).reshape(len(FINITE), 256))
    got, got_sat = dm.mul_element(FINITE[:, None], dm.q80_code(codes)[None, :])
    assert exp_sat.any() and (exp & 0x7C00 == 0).any()  # saturations and subnormals both occur
    assert_same(got, got_sat, exp, exp_sat, "q8_0", lambda i: f"d={FINITE[i[0]]:04x} byte={i[1]:02x}")


def test_q4_0_every_scale_every_code():
    q = np.arange(16)
    blocks = np.concatenate([header(FINITE, 1), np.tile((q | q << 4).astype(np.uint8), (len(FINITE), 1))],
                            axis=1)
    exp, exp_sat = reference(gguf.dequantize(blocks.reshape(-1), Q.Q4_0).reshape(len(FINITE), 32))
    got, got_sat = dm.mul_element(FINITE[:, None], dm.q40_code(np.concatenate([q, q]))[None, :])
    assert exp_sat.any()
    assert_same(got, got_sat, exp, exp_sat, "q4_0", lambda i: f"d={FINITE[i[0]]:04x} q={i[1] % 16}")


def _q41_check(d, m, q, what):
    exp, exp_sat = q41_reference(d, m, q)
    got, got_sat = dm.q41_element(dm.q41_block(d[:, None], m[:, None]), q)
    assert_same(got, got_sat, exp, exp_sat, what,
                lambda i: f"d={d[i[0]]:04x} m={m[i[0]]:04x} q={q[i]}")
    return exp


def test_q4_1_every_d_against_chosen_m():
    rng = np.random.default_rng(SEED)
    ms = np.concatenate([M_EXTREMES, rng.choice(FINITE, 8)])
    codes = np.concatenate([np.arange(16), 15 - np.arange(16)])
    for m in ms:
        _q41_check(FINITE, np.full(len(FINITE), m), np.tile(codes, (len(FINITE), 1)), f"q4_1 m={m:04x}")


def _exponent_grid(rng, per_pair: int):
    """(d, m) pairs covering every pair of FP16 exponent fields (0..30) and both signs."""
    e = np.arange(31)
    ed, em = (a.reshape(-1) for a in np.meshgrid(e, e))
    ed, em = np.repeat(ed, per_pair), np.repeat(em, per_pair)
    n = len(ed)
    d = (rng.integers(0, 2, n) << 15) | (ed << 10) | rng.integers(0, 1024, n)
    m = (rng.integers(0, 2, n) << 15) | (em << 10) | rng.integers(0, 1024, n)
    return d, m


def double_rounding_matters(d, m, q) -> np.ndarray:
    """Where fp16(fl32(d*q + m)) differs from a single rounding of the exact sum."""
    exact = (d.view(np.float16).astype(np.float64)[:, None] * q
             + m.view(np.float16).astype(np.float64)[:, None])  # exact: < 53 significant bits
    with np.errstate(over="ignore"):
        once = exact.astype(np.float16)
        twice = exact.astype(np.float32).astype(np.float16)
    return once.view(np.uint16) != twice.view(np.uint16)


def test_q4_1_every_exponent_pair():
    rng = np.random.default_rng(SEED + 1)
    d, m = _exponent_grid(rng, 64)
    q = rng.integers(0, 16, (len(d), 32))
    q[:, 0], q[:, 1] = 0, 15
    _q41_check(d, m, q, "q4_1 exponent grid")
    # The set must be able to tell a double rounding from a single one, and reach every window case.
    assert double_rounding_matters(d.astype(np.uint16), m.astype(np.uint16), q).sum() > 100
    delta = np.maximum((d >> 10) & 31, 1) - np.maximum((m >> 10) & 31, 1)
    # d dominates (and m reaches the sticky bit), m dominates (and d*q has fraction bits), near.
    for lo, hi in ((2, 24), (25, 29), (-21, -6), (-29, -22), (-5, 1)):
        assert ((delta >= lo) & (delta <= hi)).any()


def test_q4_1_double_rounding_cases():
    """Sums just off an FP16 midpoint by less than half an fp32 ulp, where fl32 moves them onto it."""
    rng = np.random.default_rng(SEED + 2)
    d, m = _exponent_grid(rng, 400)
    q = np.tile(np.arange(16), (len(d), 2))
    hit = double_rounding_matters(d.astype(np.uint16), m.astype(np.uint16), q).any(axis=1)
    assert hit.sum() > 1000
    _q41_check(d[hit], m[hit], q[hit], "q4_1 double rounding")


def test_sanitize_rule():
    bits, flag = dm.sanitize(np.array([0x7C00, 0xFC00, 0x7C01, 0xFE00, 0x7BFF, 0x8000, 0x0001]))
    assert bits.tolist() == [0x7BFF, 0xFBFF, 0, 0, 0x7BFF, 0x8000, 0x0001]
    assert flag.tolist() == [True, True, True, True, False, False, False]


@pytest.mark.long
def test_q4_1_every_d_against_many_m():
    rng = np.random.default_rng(SEED + 3)
    codes = np.concatenate([np.arange(16), 15 - np.arange(16)])
    for m in rng.choice(FINITE, 600, replace=False):
        _q41_check(FINITE, np.full(len(FINITE), m), np.tile(codes, (len(FINITE), 1)), f"q4_1 m={m:04x}")
