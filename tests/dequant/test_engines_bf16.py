"""The BF16-output dequantizer: arithmetic model vs golden model, engines vs model in the Amaranth
simulator, and the whole Dequantizer vs the golden model in cocotb (Icarus).

Chain of evidence, as on the FP16 path: golden (kvpath.golden.ggml.dequant_bf16) == gguf + ml_dtypes
(tests/golden/test_ggml_bf16_dequantize.py); model (kvpath/golden/ggml/dequant_steps.py) == golden on every scale and code
here; RTL == model on corner scales, exponent grids and double-rounding cases under a toggling
enable; and the Verilog of the whole block == golden, counters included, under bubbles and
back-pressure.
"""

import gguf
import ml_dtypes
import numpy as np
import pytest
from tests.dequant.support import corner_scales, lane_blocks, q41_pairs, run_engine

from kvpath.config import get_format
from kvpath.golden.ggml import dequant_bf16
from kvpath.golden.oracle.gguf import dequantize_f32 as gguf_dequantize_f32
from kvpath import stimulus as V
from kvpath.golden.ggml import dequant_steps as dm
from kvpath.hdl.dequant.mul import MulEngine
from kvpath.hdl.dequant.q4_1 import Q41Engine
from kvpath.hdl.dequant.frame import Dequantizer
from kvpath.sim.datapath import regression

SEED = 20261202
BF16 = np.dtype(ml_dtypes.bfloat16)
FINITE = V.FINITE.astype(np.int64)


def assert_same(got, exp, what, seed, describe):
    bad = np.argwhere(np.asarray(got) != np.asarray(exp))
    if len(bad):
        i = tuple(bad[0])
        raise AssertionError(f"seed {seed}: {what}: {len(bad)} mismatches; first at {describe(i)}: "
                             f"got {int(got[i]):04x} expected {int(exp[i]):04x}")


# --- model vs golden ---------------------------------------------------------------------------

def test_model_fp16_to_bf16_every_pattern():
    want = V.FINITE.view(np.float16).astype(BF16).view(np.uint16)
    assert_same(dm.fp16_to_bf16(FINITE), want, "fp16 -> bf16", SEED, lambda i: f"{FINITE[i[0]]:04x}")


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_model_mul_every_scale_every_code(fmt):
    if fmt == "q8_0":
        codes = dm.q80_code(np.arange(256))
    else:
        codes = dm.q40_code(np.arange(16))
    got, sat = dm.mul_element_bf16(FINITE[:, None], codes[None, :])
    want, overflow = dequant_bf16.scale_by_code(FINITE[:, None].astype(np.uint16), codes[None, :])
    assert not sat.any() and not overflow.any()
    assert_same(got, want, f"{fmt} model", SEED, lambda i: f"d={FINITE[i[0]]:04x} code={codes[i[1]]}")


def q41_golden(d, m, q):
    rows = np.concatenate([np.stack([d, m], 1).astype("<u2").view(np.uint8),
                           (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)], axis=1)
    return dequant_bf16.dequantize_blocks(rows, "q4_1")[0]


def q41_model(d, m, q):
    got, sat = dm.q41_element(dm.q41_block(d[:, None], m[:, None]), q, "bf16")
    assert not sat.any()
    return got


def test_model_q41_every_d_against_chosen_m():
    rng = np.random.default_rng(SEED)
    codes = np.tile(np.concatenate([np.arange(16), 15 - np.arange(16)]), (FINITE.size, 1))
    for m in [0x0000, 0x8000, 0x0001, 0x83FF, 0x3C04, 0xFBFF, *rng.choice(FINITE, 2)]:
        m_col = np.full(FINITE.size, m)
        assert_same(q41_model(FINITE, m_col, codes), q41_golden(FINITE, m_col, codes), f"q4_1 m={m:04x}",
                    SEED, lambda i: f"d={FINITE[i[0]]:04x} q={codes[i]}")


def test_model_q41_exponent_grid_and_double_rounding():
    """Every pair of exponent fields (every window case) and mined double-rounding pairs."""
    rng = np.random.default_rng(SEED + 1)
    d, m = q41_pairs(rng, 64)
    q = rng.integers(0, 16, (len(d), 32))
    q[:, 0], q[:, 1] = 0, 15
    assert_same(q41_model(d, m, q), q41_golden(d, m, q), "q4_1 grid", SEED + 1,
                lambda i: f"d={d[i[0]]:04x} m={m[i[0]]:04x} q={q[i]}")


# --- engines in the Amaranth simulator ------------------------------------------------------

@pytest.mark.parametrize("fmt,lanes", [("q8_0", 8), ("q4_0", 64), pytest.param("q8_0", 128, marks=pytest.mark.long)])
def test_mul_engine_bf16(fmt, lanes):
    """Every corner scale (subnormal d included) meets every code, under a toggling enable."""
    seed = SEED + lanes
    rng = np.random.default_rng(seed)
    engine = MulEngine(fmt, lanes, "bf16")
    ncodes = 256 if fmt == "q8_0" else 16
    slot = min(lanes, 32)
    scales = corner_scales()
    if fmt == "q8_0" and lanes < 128:
        # Python-simulated q8_0 is slow: every subnormal corner (the normalizing path) and a sample.
        sub = scales[(scales & 0x7C00) == 0]
        scales = np.concatenate([sub, rng.choice(scales[(scales & 0x7C00) != 0], 34, replace=False)])
    elif lanes >= 128:
        scales = np.concatenate([scales, rng.choice(FINITE, 400)])
    per = -(-ncodes // slot)
    s_all = np.repeat(scales, per)
    c_all = np.tile(np.resize(np.arange(ncodes), per * slot).reshape(per, slot), (len(scales), 1))
    n = -(-len(s_all) // engine.blocks)
    pad = n * engine.blocks - len(s_all)
    s_all = np.concatenate([s_all, rng.choice(scales, pad)])
    c_all = np.concatenate([c_all, rng.integers(0, ncodes, (pad, slot))])
    d, codes = s_all.reshape(n, engine.blocks), c_all.reshape(n, engine.blocks * slot)
    signed = dm.q80_code(codes) if fmt == "q8_0" else dm.q40_code(codes)
    exp = dm.mul_element_bf16(d[:, lane_blocks(engine)], signed)
    got = run_engine(engine, d, None, codes, seed)
    assert not got[1].any()
    assert_same(got[0], exp[0], f"{fmt} lanes {lanes} engine", seed,
                lambda i: f"beat {i[0]} lane {i[1]} d={d[i[0], lane_blocks(engine)[i[1]]]:04x} code={codes[i]}")


@pytest.mark.parametrize("lanes,table,n_pairs", [(8, False, 500), (32, True, 250),
                                                 pytest.param(16, True, None, marks=pytest.mark.long)])
def test_q41_engine_bf16(lanes, table, n_pairs):
    seed = SEED + 7 * lanes + table
    rng = np.random.default_rng(seed)
    engine = Q41Engine("q4_1", lanes, "bf16", table=table)
    slot = min(lanes, 32)
    d_pairs, m_pairs = q41_pairs(rng, 1)
    if n_pairs is not None:
        pick = rng.choice(len(d_pairs), n_pairs, replace=False)
        d_pairs, m_pairs = d_pairs[pick], m_pairs[pick]
    codes = rng.integers(0, 16, (len(d_pairs), slot))
    codes[:, 0], codes[:, 1] = 0, 15  # code 0 is the m -> BF16 conversion
    n = -(-len(d_pairs) // engine.blocks)
    idx = np.concatenate([np.arange(len(d_pairs)), rng.integers(len(d_pairs), size=n * engine.blocks - len(d_pairs))])
    d, m = d_pairs[idx].reshape(n, engine.blocks), m_pairs[idx].reshape(n, engine.blocks)
    c = codes[idx].reshape(n, engine.blocks * slot)
    lb = lane_blocks(engine)
    exp = dm.q41_element(dm.q41_block(d[:, lb], m[:, lb]), c, "bf16")
    got = run_engine(engine, d, m, c, seed)
    assert not got[1].any()
    assert_same(got[0], exp[0], f"q4_1 lanes {lanes} table {table}", seed,
                lambda i: f"d={d[i[0], lb[i[1]]]:04x} m={m[i[0], lb[i[1]]]:04x} q={c[i]}")


# --- the whole block, Verilog in cocotb ------------------------------------------------------

def test_dequantizer_latency():
    for fmt, extra in (("q8_0", 1), ("q4_0", 1), ("q4_1", 0)):
        for lanes in (8, 32):
            pair = [Dequantizer(fmt, lanes, elem) for elem in ("bf16", "fp16")]
            for dut in pair:  # built only to read latency: not meant to be elaborated
                dut._MustUse__silence = dut._engine._MustUse__silence = True
            assert pair[0].latency == pair[1].latency + extra


def read_stimulus(fmt: str, n_blocks: int, seed: int) -> np.ndarray:
    """What a BF16 write path leaves in DDR (gguf's blocks of BF16 data, wide range, so that some
    d fields overflow to Inf) and 25 % arbitrary bytes (any d and m, Inf and NaN included)."""
    f = get_format(fmt)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_blocks, 32)) * 2.0 ** rng.integers(-30, 26, (n_blocks, 1))
    x = x.astype(np.float32).astype(BF16).astype(np.float32)
    with np.errstate(over="ignore"):
        blocks = gguf.quantize(x, getattr(gguf.GGMLQuantizationType, f.ggml_type)).reshape(n_blocks, f.block_bytes)
    junk = rng.integers(0, 256, blocks.shape, dtype=np.uint8)
    hdr = junk[:, : f.header_bytes].copy().view(np.uint16)
    force = rng.random(hdr.shape) < 0.3  # short runs must still meet Inf and NaN fields
    hdr[force] = rng.choice(np.array([0x7C00, 0xFC00, 0x7E00, 0xFFFF, 0x7C01], np.uint16), force.sum())
    junk[:, : f.header_bytes] = hdr.view(np.uint8)
    return np.where((rng.random(n_blocks) < 0.25)[:, None], junk, blocks)


@pytest.mark.parametrize("fmt,lanes,n_blocks", [("q4_1", 8, 96), ("q8_0", 32, 96), ("q4_0", 16, 64),
                                                pytest.param("q4_1", 128, 512, marks=pytest.mark.long)])
def test_dequantizer_bf16_icarus(fmt, lanes, n_blocks, build_root):
    seed = SEED + lanes
    blocks = read_stimulus(fmt, n_blocks, seed)
    expected, counters = regression.ref_dequantize(blocks, fmt, lanes, elem="bf16")
    assert counters["nonfinite_count"] > 0
    # The golden model this compares against equals an independent computation: gguf's float32
    # values of the sanitized blocks, rounded to BF16 by ml_dtypes (nothing reaches BF16's limit).
    ref32, n_bad = gguf_dequantize_f32(blocks, fmt)
    assert np.array_equal(ref32.astype(BF16).view(np.uint8).reshape(expected.shape), expected)
    assert counters["nonfinite_count"] == n_bad
    throttles = regression.THROTTLES[:2] + regression.THROTTLES[3:]
    runs = regression.rtl_dequantize(blocks, fmt, lanes, simulator="icarus", elem="bf16",
                                     build_dir=build_root / f"bf16_{fmt}_{lanes}", seed=seed, throttles=throttles)
    for k, run in enumerate(runs):
        got = run.outputs.view(np.uint16)
        want = expected[: run.out_beats].view(np.uint16)
        assert got.shape == want.shape, f"seed {seed} pass {k}: {got.shape} vs {want.shape}"
        assert_same(got, want, f"{fmt} lanes {lanes} pass {k}", seed, lambda i: f"beat {i[0]} lane {i[1]}")
        assert run.counters["saturated_count"] == 0
        prefix = blocks[: run.in_beats * max(1, lanes // 32)]
        assert run.counters["nonfinite_count"] == regression.ref_dequantize(prefix, fmt, lanes, elem="bf16")[1][
            "nonfinite_count"], f"seed {seed} pass {k}: non-finite count"
    assert runs[0].steady_beats_per_cycle == 1.0
