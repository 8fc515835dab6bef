"""The MX engine in the dequantizer's frame, in the Amaranth simulator, against kvpath.golden.mx, on
the special cases: E8M0 range ends, the output types' limits, NaN scale bytes and E4M3 NaN codes.
(The whole dequantizer is regressed on every bit pattern by ``kvpath sim`` /
tests/datapath/test_regression.py.)
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from kvpath.config import MX_FORMATS, get_format
from kvpath.golden import mx
from kvpath.hdl.dequant.frame import Dequantizer

SEED = 4242


@pytest.mark.parametrize("elem", ("fp16", "bf16"))
@pytest.mark.parametrize("fmt", MX_FORMATS)
def test_dequantizer_special_blocks(fmt, elem):
    """Scale bytes at the ends (0, 254), at the output types' limits and NaN (0xFF), random codes plus
    E4M3 NaN codes; 32 lanes, output always ready: values and both counters."""
    rng = np.random.default_rng(SEED)
    f = get_format(fmt)
    rows = rng.integers(0, 256, (48, f.block_bytes), dtype=np.uint8)
    # Scale bytes at the E8M0 ends, around FP16's subnormal and overflow limits, and NaN.
    rows[:16, 0] = [0, 1, 2, 86, 97, 100, 112, 126, 127, 141, 142, 143, 150, 253, 254, 255]
    if fmt == "mxfp8_e4m3":
        rows[::7, 1] = 0x7F
        rows[::5, 2] = 0xFF
    want, want_sat, want_bad = mx.dequantize_blocks(rows, fmt, elem)
    dut = Dequantizer(fmt, 32, elem)
    got, counts = [], {}

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        k = 0
        while len(got) < len(rows):
            ctx.set(dut.i.valid, k < len(rows))
            if k < len(rows):
                ctx.set(dut.i.payload, int.from_bytes(rows[k].tobytes(), "little"))
            accepted = k < len(rows) and ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid):  # transferred at this edge: o.ready is high
                got.append([ctx.get(dut.o.payload[e]) for e in range(32)])
            await ctx.tick()
            k += accepted
        for _ in range(4):  # counters trail the data by a few clocks
            await ctx.tick()
        counts["sat"], counts["bad"] = ctx.get(dut.saturated_count), ctx.get(dut.nonfinite_count)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    got = np.array(got, np.uint16)
    bad = np.argwhere(got != want)
    at = tuple(bad[0]) if bad.size else None
    assert bad.size == 0, f"seed={SEED} block {at[0]} element {at[1]}: {got[at]:#06x} want {want[at]:#06x}"
    assert (counts["sat"], counts["bad"]) == (want_sat, want_bad)
