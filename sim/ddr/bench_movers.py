"""Throughput of the movers (cocotb module run by ``kvpath bench movers``; not a test): every
channel always ready, cocotbext-axi's RAM on the bus. Each scenario's figures go to
``$KVPATH_BENCH_OUT`` as one JSON line.

Window: from the first data handshake to the last one of the scenario. Writer: W beats and
command bytes per cycle on W. Reader: R beats per cycle, and output beats and command bytes per
cycle on ``data``. Also counted: cycles the RAM model held READY (W) or VALID (R) low
(``slave_stall``), so a shortfall of the model can be told apart from one of the DUT.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from kvpath.sim.ddr import tb_reader, tb_writer

LONG = 16384


def scenarios(rng, size: int, lanes: int):
    """(name, [(offset, length)]) for one seed: long aligned commands, then token rows of the
    default build (144 B: head_dim 256 in q4_0; 36 B: head_dim 64 in q4_0) at an unaligned base,
    one after the other (a READ run, or rows of consecutive slots) or scattered."""
    yield "aligned 16 KiB", [(k * LONG, LONG) for k in range(12)]
    for row in (144, 36):
        base = rng.randrange(1, lanes) + rng.randrange(size // 2 // 4096) * 4096
        yield f"{row} B rows, contiguous", [(base + k * row, row) for k in range(60000 // row)]
        yield f"{row} B rows, scattered", [(rng.randrange(size - row), row) for _ in range(60000 // row)]


class Meter:
    """Counts handshakes on one channel, and the cycles the slave stalled it, from the first to the
    last handshake."""

    def __init__(self, valid, ready, slave_drives: str):
        self.valid, self.ready = valid, ready
        self.slave_drives = slave_drives  # "ready" (W), "valid" (R), or "none" (a DUT output)
        self.beats = self.cycle = self.stall = 0
        self.first = self.last = None
        self.stall_at_last = 0

    async def run(self, clk):
        while True:
            await RisingEdge(clk)
            self.cycle += 1
            v, r = int(self.valid.value), int(self.ready.value)
            if v and r:
                if self.first is None:
                    self.first = self.cycle
                self.last = self.cycle
                self.beats += 1
                self.stall_at_last = self.stall
            elif self.first is not None and ((self.slave_drives == "ready" and v and not r)
                                             or (self.slave_drives == "valid" and not v)):
                self.stall += 1

    @property
    def cycles(self) -> int:
        return self.last - self.first + 1


def emit(record: dict):
    with open(os.environ["KVPATH_BENCH_OUT"], "a") as fh:
        fh.write(json.dumps(record) + "\n")


@cocotb.test()
async def bench_writer(dut):
    tb = tb_writer.TB(dut)
    for name, cmds in scenarios(tb.rng, tb.size, tb.lanes):
        await tb.reset("none")
        meter = Meter(dut.axi__wvalid, dut.axi__wready, "ready")
        task = cocotb.start_soon(meter.run(dut.clk))
        for offset, length in cmds:
            tb.submit(offset, length)
        await tb.finish()
        task.cancel()
        nbytes = sum(length for _, length in cmds)
        emit({"dut": "writer", "seed": tb.seed, "scenario": name, "commands": len(cmds), "bytes": nbytes,
              "cycles": meter.cycles, "data_beats": sum(-(-length // tb.lanes) for _, length in cmds),
              "axi_beats": meter.beats, "slave_stall": meter.stall_at_last})
        await ClockCycles(dut.clk, 5)


@cocotb.test()
async def bench_reader(dut):
    tb = tb_reader.TB(dut)
    for name, cmds in scenarios(tb.rng, tb.size, tb.lanes):
        await tb.reset("none")
        r_meter = Meter(dut.axi__rvalid, dut.axi__rready, "valid")
        o_meter = Meter(dut.data__valid, dut.data__ready, "none")
        tasks = [cocotb.start_soon(r_meter.run(dut.clk)), cocotb.start_soon(o_meter.run(dut.clk))]
        for offset, length in cmds:
            tb.submit(offset, length)
        await tb.finish()
        for t in tasks:
            t.cancel()
        nbytes = sum(length for _, length in cmds)
        emit({"dut": "reader", "seed": tb.seed, "scenario": name, "commands": len(cmds), "bytes": nbytes,
              "cycles": o_meter.cycles, "data_beats": o_meter.beats, "axi_cycles": r_meter.cycles,
              "axi_beats": r_meter.beats, "slave_stall": r_meter.stall_at_last})
        await ClockCycles(dut.clk, 5)
