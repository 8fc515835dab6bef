"""The stream harness itself: every beat delivered once, in order, under every throttle; a DUT that
can take a beat per clock is measured at (nearly) one beat per clock; and a DUT that breaks the
AXI-Stream rule on its output fails the run."""

import numpy as np
import pytest
from amaranth.hdl import Module, unsigned
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


class ImpatientSlice(RegisterSlice):
    """Breaks the stream rule one way: ``withdraw`` drops VALID after one cycle of back-pressure,
    ``change`` alters the offered payload while it waits."""

    def __init__(self, fault: str):
        self.fault = fault
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload + 1)]
        with m.Elif(self.fault == "withdraw"):
            m.d.sync += self.o.valid.eq(0)
        with m.Else():
            m.d.sync += self.o.payload.eq(self.o.payload ^ 1)
        return m


@pytest.mark.parametrize("fault", ["withdraw", "change"])
def test_harness_fails_a_dut_that_breaks_the_stream_rule(fault, tmp_path):
    n = 500
    beats = np.arange(n, dtype="<u8").view(np.uint8).reshape(n, 8)[:, : WIDTH // 8]
    with pytest.raises(RuntimeError, match="cocotb tests failed"):
        simulate_stream(ImpatientSlice(fault), "impatient", beats, n, WIDTH // 8, {"beats": 32}, "icarus",
                        tmp_path / fault, 1)
    log = (tmp_path / fault / "sim.log").read_text()
    assert "broke the AXI-Stream rule" in log, log[-2000:]
