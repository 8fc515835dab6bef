"""The dequantizer's element engines in the Amaranth simulator, held to the arithmetic model.

The model (kvpath/golden/ggml/dequant_steps.py) is checked against gguf over every scale and code in
tests/golden/test_ggml_dequant_steps.py; here the RTL must equal the model, bit for bit, on corner scales with
every code, on exponent-pair grids, on the double-rounding cases of q4_1, and on random data, while
the enable toggles at random (a disabled clock must change nothing).
"""

import numpy as np
import pytest

from kvpath.golden.ggml import dequant_steps as dm
from kvpath.hdl.dequant.mul import MulEngine
from kvpath.hdl.dequant.q4_1 import Q41Engine
from tests.dequant.support import check, corner_scales, lane_blocks, pack, q41_pairs, run_engine, scales_with_every_code

SEED = 20261125


MUL_CASES = [("q8_0", 64, 96), ("q4_0", 64, None), ("q8_0", 8, 32), ("q4_0", 16, 48),
             pytest.param("q8_0", 128, None, marks=pytest.mark.long),
             pytest.param("q4_0", 128, "every", marks=pytest.mark.long)]


@pytest.mark.parametrize("fmt,lanes,n_scales", MUL_CASES)
def test_mul_engine(fmt, lanes, n_scales):
    """Corner scales (all of them, ``n_scales`` of them, or every finite FP16 value) with every
    code, and random scales."""
    seed = SEED + lanes
    rng = np.random.default_rng(seed)
    engine = MulEngine(fmt, lanes)
    slot = min(lanes, 32)
    ncodes = 256 if fmt == "q8_0" else 16
    scales = corner_scales()
    if n_scales == "every":
        scales = np.arange(1 << 16)
        scales = scales[(scales & 0x7C00) != 0x7C00]
    elif n_scales is not None:
        scales = rng.choice(scales, n_scales, replace=False)
    s_all, c_all = scales_with_every_code(scales, ncodes, slot)
    rand = dm.sanitize(rng.integers(0, 1 << 16, 64))[0]
    s_all = np.concatenate([s_all, rand])
    c_all = np.concatenate([c_all, rng.integers(0, ncodes, (len(rand), slot))])
    d, codes = pack(engine, s_all, c_all, rng)
    signed = dm.q80_code(codes) if fmt == "q8_0" else dm.q40_code(codes)
    exp = dm.mul_element(d[:, lane_blocks(engine)], signed)
    got = run_engine(engine, d, None, codes, seed)
    check(got, exp, f"{fmt} lanes {lanes}", seed,
          lambda t, i: f"d={d[t, lane_blocks(engine)[i]]:04x} code={codes[t, i]}")


Q41_CASES = [(8, False, None), (32, True, None), (64, False, 256),
             pytest.param(16, True, None, marks=pytest.mark.long),
             pytest.param(128, True, None, marks=pytest.mark.long)]


@pytest.mark.parametrize("lanes,table,n_pairs", Q41_CASES)
def test_q41_engine(lanes, table, n_pairs):
    """Every exponent pair, extremes and double-rounding cases (or ``n_pairs`` of them)."""
    seed = SEED + 7 * lanes + table
    rng = np.random.default_rng(seed)
    engine = Q41Engine("q4_1", lanes, table=table)
    slot = min(lanes, 32)
    d_pairs, m_pairs = q41_pairs(rng, 1)
    if n_pairs is not None:
        pick = rng.choice(len(d_pairs), n_pairs, replace=False)
        d_pairs, m_pairs = d_pairs[pick], m_pairs[pick]
    # Every slot sees codes 0 and 15; the rest are random.
    codes = rng.integers(0, 16, (len(d_pairs), slot))
    codes[:, 0], codes[:, 1] = 0, 15
    idx = np.arange(len(d_pairs))
    n = -(-len(idx) // engine.blocks)
    idx = np.concatenate([idx, rng.integers(len(idx), size=n * engine.blocks - len(idx))])
    d = d_pairs[idx].reshape(n, engine.blocks)
    m = m_pairs[idx].reshape(n, engine.blocks)
    c = codes[idx].reshape(n, engine.blocks * slot)
    lb = lane_blocks(engine)
    exp = dm.q41_element(dm.q41_block(d[:, lb], m[:, lb]), c)
    got = run_engine(engine, d, m, c, seed)
    check(got, exp, f"q4_1 lanes {lanes} table {table}", seed,
          lambda t, i: f"d={d[t, lb[i]]:04x} m={m[t, lb[i]]:04x} q={c[t, i]}")
