"""The static-scale golden model against an exact rational reference (Python fractions), and its rules:
ties, clamping, sanitizing, entries, the write rule, nibble order, contexts."""

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from kvpath import scales
from kvpath.config import KVPathConfig
from kvpath.elements import element
from kvpath.golden import static as gs
from kvpath.golden.num import elem as E

SEED = 20240604
DTYPES = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16}


def finite_patterns(rng, n, elem):
    bits = rng.integers(0, 1 << 16, n).astype(np.uint16)
    return bits[E.finite(bits, element(elem))]


def ref_code(x_bits, inv_bits, code_bits, elem):
    qmax = gs.QMAX[code_bits]
    v = gs.value_of(x_bits, elem) * gs.value_of(inv_bits, elem)
    q = int(abs(v) + Fraction(1, 2))  # floor(|v| + 1/2): ties away from zero
    return (-1 if v < 0 else 1) * min(q, qmax), q > qmax


@pytest.mark.parametrize("elem", ["fp16", "bf16"])
@pytest.mark.parametrize("code_bits", [8, 4])
def test_quantize_elements_equal_rational_reference(elem, code_bits):
    rng = np.random.default_rng([SEED, code_bits])
    x = finite_patterns(rng, 6000, elem)
    inv = finite_patterns(rng, 2 * len(x), elem)[:len(x)]
    # Half the pairs with inv near 1/x * qmax so codes land in range, not only 0 or clamped.
    near = rng.random(len(x)) < 0.5
    tuned = (rng.uniform(-1.2, 1.2, len(x)) * gs.QMAX[code_bits]
             / np.maximum(np.abs(x.view(DTYPES[elem]).astype(np.float64)), 1e-30))
    with np.errstate(over="ignore"):
        tuned_bits = tuned.astype(np.float32).astype(DTYPES[elem]).view(np.uint16)
    inv = np.where(near & E.finite(tuned_bits, element(elem)), tuned_bits, inv).astype(np.uint16)
    codes, sat = gs.quantize_elements(x, inv, code_bits, elem)
    for k in range(len(x)):
        want, want_sat = ref_code(int(x[k]), int(inv[k]), code_bits, elem)
        assert (codes[k], sat[k]) == (want, want_sat), \
            f"seed {SEED}: x={x[k]:#06x} inv={inv[k]:#06x}: got {codes[k]}, expected {want}"


@pytest.mark.parametrize("elem", ["fp16", "bf16"])
def test_ties_go_away_from_zero_and_clamp_is_symmetric(elem):
    one = gs.round_scale(1.0, elem)
    x = np.array([gs.round_scale(v, elem) for v in (2.5, -2.5, 0.5, -0.5, 126.5, 127.5, -200.0, 7.5)],
                 np.uint16)
    codes8, sat8 = gs.quantize_elements(x, np.full(len(x), one, np.uint16), 8, elem)
    assert codes8.tolist() == [3, -3, 1, -1, 127, 127, -127, 8]
    assert sat8.tolist() == [False, False, False, False, False, True, True, False]
    codes4, _ = gs.quantize_elements(x, np.full(len(x), one, np.uint16), 4, elem)
    assert codes4.tolist() == [3, -3, 1, -1, 7, 7, -7, 7]


@pytest.mark.parametrize("elem", ["fp16", "bf16"])
def test_dequantize_elements_equal_rational_reference(elem):
    rng = np.random.default_rng([SEED, 2])
    scale = rng.integers(0, 1 << 16, 8000).astype(np.uint16)
    codes = rng.integers(-128, 128, len(scale))
    bits, sat, bad = gs.dequantize_elements(codes, scale, elem)
    max_finite = element(elem).max_finite
    for k in range(len(scale)):
        if not E.finite(scale[k], element(elem)):
            assert bad[k] and bits[k] == ((1 << 15) if codes[k] < 0 else 0), f"seed {SEED}: k={k}"
            continue
        v = codes[k] * gs.value_of(int(scale[k]), elem)
        want, over = gs.encode_fraction(v, elem)
        if v == 0:  # the sign of a zero product: sign(code) XOR sign(scale)
            want = (int(codes[k] < 0) ^ (int(scale[k]) >> 15)) << 15
        assert (int(bits[k]), bool(sat[k])) == (want, over), \
            f"seed {SEED}: code={codes[k]} scale={scale[k]:#06x}: got {bits[k]:#06x} expected {want:#06x}"
        assert (want & 0x7FFF) <= max_finite


def test_fp16_dequantize_equals_numpy_rounding():
    # float64 holds code * scale exactly; NumPy's float64 -> float16 cast rounds to nearest even once.
    rng = np.random.default_rng([SEED, 3])
    scale = rng.integers(0, 0x7C00, 50000).astype(np.uint16)  # positive finite
    codes = rng.integers(-128, 128, len(scale))
    bits, sat, _ = gs.dequantize_elements(codes, scale, "fp16")
    exact = codes * scale.view(np.float16).astype(np.float64)
    with np.errstate(over="ignore"):
        ref = exact.astype(np.float16)
    ok = np.isfinite(ref)
    assert np.array_equal(bits[ok], ref.view(np.uint16)[ok] | np.where(exact[ok] == 0, bits[ok] & 0x8000, 0))
    assert np.all(sat[~ok]) and np.all((bits[~ok] & 0x7FFF) == 0x7BFF)


@pytest.mark.parametrize("elem", ["fp16", "bf16"])
def test_entry_reciprocal_is_rne_of_exact_inverse(elem):
    rng = np.random.default_rng([SEED, 4])
    lo = gs.min_scale(elem)
    patterns = rng.integers(lo, element(elem).max_finite + 1, 3000)
    for p in patterns.tolist():
        entry = gs.make_entry(p, elem)
        s, inv = scales.unpack_entry(entry)
        assert int(s) == p
        exact = 1 / gs.value_of(p, elem)
        got = gs.value_of(int(inv), elem)
        # No pattern of the type lies strictly closer to 1/scale than the stored one.
        for nb in (int(inv) - 1, int(inv) + 1):
            if 0 < nb <= element(elem).max_finite:
                assert abs(gs.value_of(nb, elem) - exact) >= abs(got - exact), f"scale {p:#06x}"
    with pytest.raises(ValueError, match="overflows"):
        gs.make_entry(lo - 1, elem)
    with pytest.raises(ValueError, match="not finite"):
        gs.make_entry(element(elem).exp_mask, elem)
    assert gs.make_entry(0, elem) == 0


def test_fp16_entry_matches_numpy_reciprocal():
    p = np.arange(gs.min_scale("fp16"), 0x7C00, dtype=np.uint16)
    inv64 = 1.0 / p.view(np.float16).astype(np.float64)
    ref = inv64.astype(np.float16).view(np.uint16)
    got = np.array([scales.unpack_entry(gs.make_entry(int(v)))[1] for v in p[::7]], np.uint16)
    assert np.array_equal(got, ref[::7])


def test_write_rule_refuses_out_of_range_and_nonfinite_keeps_last():
    table = np.zeros(10, np.uint32)
    inf_scale = np.uint32(0x7C00)
    nan_inv = np.uint32(0x7E00 << 16)
    refused = gs.apply_writes(table, [3, 10, 3, 4, 5, -1, 3], [1, 2, 7, inf_scale, nan_inv, 9, 8], "fp16")
    assert refused.tolist() == [False, True, False, True, True, True, False]
    assert table.tolist() == [0, 0, 0, 8, 0, 0, 0, 0, 0, 0]
    # BF16's Inf (0x7F80) is finite as an FP16 pattern and vice versa: the element type decides.
    assert gs.apply_writes(np.zeros(2, np.uint32), [0], [0x7C00], "bf16").tolist() == [False]
    assert gs.apply_writes(np.zeros(2, np.uint32), [0], [0x7F80], "bf16").tolist() == [True]


def test_nibble_order_and_byte_codes():
    assert gs.pack_codes([1, -2, 7, -8], "int4_ph").tolist() == [0xE1, 0x87]
    assert gs.pack_codes([1, -2, 127, -127], "int8_ph").tolist() == [0x01, 0xFE, 0x7F, 0x81]
    rng = np.random.default_rng([SEED, 5])
    for fmt, bits in (("int4_pc", 4), ("int8_pc", 8)):
        c = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (7, 32))
        assert np.array_equal(gs.unpack_codes(gs.pack_codes(c, fmt), fmt), c)


def test_index_formula_and_gemma_size():
    cfg = KVPathConfig()
    assert scales.entry_count("channel", cfg) == 20480
    assert scales.entry_count("head", cfg) == 80
    assert scales.entry_index("head", 3, 1, 1, config=cfg) == (3 * 2 + 1) * 2 + 1
    assert scales.entry_index("channel", 3, 1, 1, 17, cfg) == ((3 * 2 + 1) * 2 + 1) * 256 + 17
    with pytest.raises(ValueError, match="outside"):
        scales.entry_index("channel", 20, 0, 0, 0, cfg)
    with pytest.raises(ValueError, match="outside"):
        scales.entry_index("channel", 0, 0, 0, 256, cfg)


@pytest.mark.parametrize("fmt", ["int8_pc", "int4_pc", "int8_ph", "int4_ph"])
def test_array_api_round_trip_and_counters(fmt):
    rng = np.random.default_rng([SEED, 6])
    table = gs.empty_table(fmt)
    x = (rng.standard_normal((40, 64)) * 3).astype(np.float16)
    x[0, 5], x[1, 7], x[2, 9] = np.inf, -np.inf, np.nan
    scope = scales.scope_of(fmt)
    qmax = gs.QMAX[8 if fmt.startswith("int8") else 4]
    amax = np.maximum(np.abs(np.nan_to_num(x.astype(np.float64), posinf=0, neginf=0)).max(axis=0), 1e-3)
    per = amax if scope == "channel" else np.full(64, amax.max())
    for ch in range(64 if scope == "channel" else 1):
        idx = scales.entry_index(scope, 2, 1, 0, 32 + ch)
        table[idx] = gs.make_entry(gs.round_scale(per[ch] / qmax, "fp16"))
    codes, n_bad, n_sat = gs.quantize_report(x, fmt, table, 2, 1, 0, channel0=32)
    assert n_bad == 3
    assert n_sat >= 2  # the two infinities sanitize to +-65504, far beyond qmax * scale
    back = gs.dequantize(codes, fmt, table, 2, 1, 0, channel0=32)
    assert back.dtype == np.float16 and back.shape == x.shape
    finite = np.isfinite(x)
    err = np.abs(back.astype(np.float64) - x.astype(np.float64))
    # Half a step, plus the element type's rounding of scale, reciprocal and result.
    bound = np.broadcast_to(per / qmax, x.shape) * 0.5 + np.abs(x.astype(np.float64)) * 2.0 ** -9
    bad = finite & (err > bound)
    assert not bad.any(), f"seed {SEED}: {x[bad][:4]} -> {back[bad][:4]}"
    if scope == "channel":
        with pytest.raises(ValueError, match="max_head_dim"):
            gs.quantize(x, fmt, table, 2, 1, 0, channel0=200)
    with pytest.raises(ValueError, match="entries"):
        gs.quantize(x, fmt, table[:-1], 2, 1, 0)


def test_beats_zero_bad_contexts_and_count_them():
    table = gs.empty_table("int8_pc")
    table[:] = gs.make_entry(gs.round_scale(1.0, "fp16"))
    x = np.full((4, 16), 0x4000, np.uint16)  # 2.0
    layer = [0, 20, 0, 31]  # 20 and 31 exceed max_layers
    chan = [0, 0, 8, 16]  # 8 is not a multiple of 16 lanes
    codes, c = gs.quantize_beats(x, "int8_pc", table, layer, [0] * 4, [0] * 4, chan)
    assert codes[:, 0].tolist() == [2, 0, 0, 0]
    assert c == {"nonfinite_count": 0, "saturated_count": 0, "context_error_count": 3}
