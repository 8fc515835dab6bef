"""The stream harness itself: every beat delivered once, in order, under every throttle, and a DUT
that can take a beat per clock is measured at (nearly) one beat per clock."""

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from kvpath.sim.datapath.regression import THROTTLES, simulate_stream
from kvpath.sim.lib.runner import SIMULATORS

WIDTH = 40


class RegisterSlice(wiring.Component):
    """A full-throughput stream register that also adds 1 to the payload, so a harness that merely
    echoed its stimulus could not pass."""

    i: In(stream.Signature(unsigned(WIDTH)))
    o: Out(stream.Signature(unsigned(WIDTH)))
    beats: Out(32)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload + 1)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += self.beats.eq(self.beats + 1)
        return m


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_harness_delivers_every_beat(simulator, tmp_path):
    seed = 20261123
    rng = np.random.default_rng(seed)
    n = 3000
    words = rng.integers(0, 1 << WIDTH - 1, n, dtype=np.int64)
    beats = words.astype("<u8").view(np.uint8).reshape(n, 8)[:, : WIDTH // 8]
    runs = simulate_stream(RegisterSlice(), "slice", beats, n, WIDTH // 8, {"beats": 32}, simulator,
                           tmp_path / simulator, seed)
    assert len(runs) == len(THROTTLES)
    for k, r in enumerate(runs):
        got = np.zeros((r.out_beats, 8), np.uint8)
        got[:, : WIDTH // 8] = r.outputs
        assert np.array_equal(got.view("<u8").reshape(-1), words[: r.out_beats] + 1), f"pass {k} seed {seed}"
        assert r.counters["beats"] == r.in_beats, f"pass {k} seed {seed}"
    assert runs[0].out_beats == n
    assert n / runs[0].cycles > 0.99, runs[0].cycles
    assert runs[0].steady_beats_per_cycle == 1.0, runs[0].stamps
    assert runs[3].cycles > 1.5 * runs[3].out_beats  # throttling really made bubbles
