"""The MX quantizer units in the Amaranth simulator, against kvpath.golden.mx, on the special cases:
E8M0 range ends, zero and signed-zero blocks, grid thresholds, saturation and subnormal inputs. (The whole quantizer and dequantizer are
regressed on every bit pattern by ``kvpath sim`` / tests/datapath/test_regression.py.)
"""

import ml_dtypes
import numpy as np
import pytest
from amaranth.sim import Simulator

from kvpath.config import MX_FORMATS
from kvpath.golden import mx
from kvpath.elements import element as elem_type
from kvpath.hdl.quant.mx import MXDatapath

SEED = 4242
ELEMS = ("fp16", "bf16")
DTYPES = {"fp16": np.float16, "bf16": ml_dtypes.bfloat16}


def _special_blocks(elem: str, rng) -> np.ndarray:
    """(n, 32) finite patterns: zeros, -0, extremes, subnormal maxima, thresholds around 2**k."""
    et = elem_type(elem)
    smallest_normal = 1 << et.frac_bits
    rows = [np.zeros(32, np.uint16), np.full(32, 0x8000, np.uint16),
            np.full(32, et.max_finite, np.uint16), np.full(32, et.max_finite | 0x8000, np.uint16),
            np.full(32, 1, np.uint16), np.full(32, smallest_normal - 1, np.uint16)]
    for _ in range(24):
        top = int(rng.integers(1, et.max_finite + 1))
        r = (rng.random(32) * (top + 1)).astype(np.uint16)
        r[rng.integers(32)] = top
        r |= (rng.random(32) < 0.5).astype(np.uint16) << 15
        rows.append(r)
        # Elements on the E2M1 / INT8 / E4M3 decision points relative to a power-of-two maximum.
        scale = 2.0 ** int(rng.integers(-10, 10))
        t = rng.choice([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, 0.5 / 64, 1.5 / 64, 127.5 / 64, 248 / 64,
                        2.0 ** -10 * 64, 3 * 2.0 ** -10], 32) * rng.choice([-1.0, 1.0], 32)
        t[0] = 4.0
        rows.append(np.asarray(t * scale, np.float32).astype(DTYPES[elem]).view(np.uint16))
    return np.array(rows, np.uint16)


def _run(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("elem", ELEMS)
@pytest.mark.parametrize("fmt", MX_FORMATS)
def test_block_unit_and_lane_unit(fmt, elem):
    rng = np.random.default_rng(SEED)
    blocks = _special_blocks(elem, rng)
    want_header, x = mx.header(blocks, fmt, elem)
    want_codes = mx.lane(blocks, x, fmt, elem)
    path = MXDatapath(fmt, elem)

    bu = path.block_unit()
    got_header = []

    async def block_tb(ctx):
        ctx.set(bu.en, 1)
        ctx.set(bu.take, 1)  # 32 lanes: each block is one beat, its first
        ctx.set(bu.first, 1)
        for k in range(len(blocks) + bu.latency):
            if k < len(blocks):
                for e in range(32):
                    ctx.set(bu.beat[e], int(blocks[k, e]))
            await ctx.tick()
            if k + 1 >= bu.latency:
                got_header.append(ctx.get(bu.header))
                assert ctx.get(bu.const.scale) == got_header[-1]

    _run(bu, block_tb)
    got_header = np.array(got_header[: len(blocks)])
    bad = np.flatnonzero(got_header != want_header[:, 0])
    assert bad.size == 0, (f"seed={SEED} block {bad[0]}: {blocks[bad[0]]} header {got_header[bad[0]]} "
                           f"want {want_header[bad[0], 0]}")

    lu = path.lane_unit()
    xs, scales, want = blocks.reshape(-1), np.repeat(want_header[:, 0], 32), want_codes.reshape(-1)
    got = []

    async def lane_tb(ctx):
        ctx.set(lu.en, 1)
        for k in range(len(xs) + lu.latency):
            if k < len(xs):
                ctx.set(lu.x, int(xs[k]))
                ctx.set(lu.const.scale, int(scales[k]))
            await ctx.tick()
            if k + 1 >= lu.latency:
                got.append(ctx.get(lu.code))

    _run(lu, lane_tb)
    got = np.array(got[: len(xs)])
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"seed={SEED} {fmt} {elem}: element {xs[bad[0]]:#06x} scale {scales[bad[0]]} "
                           f"code {got[bad[0]]:#x} want {want[bad[0]]:#x} ({bad.size} bad)")
