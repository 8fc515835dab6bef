"""cocotb test of a writer and a reader sharing one full AXI4 master port (``connect_split``):
random rows are written, then read back while other rows are being written, through one RAM."""

from __future__ import annotations

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiRam

from kvpath.hdl.ddr.reader import BurstReader
from kvpath.hdl.ddr.writer import BurstWriter
from kvpath.sim.lib.streams import HandshakeChecker, StreamSink, StreamSource, pause_generator, pack_fields as pack, unpack_fields as unpack

SIZE = 1 << 18


@cocotb.test()
async def write_then_read_back(dut):
    seed = int(os.environ.get("KVPATH_DDR_SEED", "1"))
    rng = random.Random(f"{seed}-shared")
    w, r = BurstWriter(), BurstReader()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    ram = AxiRam(AxiBus.from_prefix(dut, "axi_"), dut.clk, dut.rst, size=SIZE)
    for i in (ram.write_if, ram.read_if):
        i.log.setLevel("WARNING")
    for ch in (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel, ram.read_if.ar_channel,
               ram.read_if.r_channel):
        ch.set_pause_generator(pause_generator(rng, "mixed"))
    check = HandshakeChecker(dut, dut.rst)
    for ch, fields in (("aw", ("addr", "len")), ("w", ("data", "strb", "last")), ("ar", ("addr", "len")),
                       ("r", ("data", "last"))):
        check.add_axi(dut, "axi_", ch, fields)
    dut.w_drain.value = dut.r_drain.value = 0
    dut.rst.value = 1
    wcmd = StreamSource(dut, "w_cmd", pause_generator(rng, "mixed"))
    wdata = StreamSource(dut, "w_data", pause_generator(rng, "mixed"))
    done = StreamSink(dut, "w_done", pause_generator(rng, "mixed"))
    rcmd = StreamSource(dut, "r_cmd", pause_generator(rng, "mixed"))
    rout = StreamSink(dut, "r_data", pause_generator(rng, "mixed"))
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    rows = []
    for k in range(250):
        length = rng.randint(1, 300)
        rows.append((rng.randrange(SIZE - length), length, rng.randbytes(length)))
    # disjoint rows so a read-back never races a later write of the same bytes
    rows.sort()
    rows = [rw for i, rw in enumerate(rows) if i == 0 or rows[i - 1][0] + rows[i - 1][1] <= rw[0]]
    rng.shuffle(rows)
    for tag, (addr, length, payload) in enumerate(rows):
        wcmd.send([pack(w.cmd_layout, addr=addr, length=length, tag=tag)])
        wdata.send([int.from_bytes(payload[k:k + 16], "little") for k in range(0, length, 16)])
    read = 0
    for _ in range(400_000):
        await RisingEdge(dut.clk)
        # read each row back once its write has completed, while later writes go on
        while read < len(done.items):
            addr, length, _ = rows[read]
            rcmd.send([pack(r.cmd_layout, addr=addr, length=length, tag=read)])
            read += 1
        if len(rout.items) >= sum(-(-l // 16) for _, l, _ in rows):
            break
    beats = [unpack(r.data_layout, x) for x in rout.items]
    got = {}
    for b in beats:
        got.setdefault(b["tag"], bytearray()).extend(b["data"].to_bytes(16, "little"))
        assert not b["error"]
    for tag, (addr, length, payload) in enumerate(rows):
        assert bytes(got[tag][:length]) == payload, f"seed={seed}: row {tag} read back wrong"
    assert [unpack(w.done_layout, x)["tag"] for x in done.items] == list(range(len(rows)))
    check.assert_clean(f"seed={seed}: ")
