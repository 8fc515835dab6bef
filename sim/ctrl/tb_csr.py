"""cocotb tests of the AXI4-Lite register block (hdl/ctrl/csr.py) with cocotbext-axi's AxiLiteMaster.

Every register, field, access type and reset value comes from the generated JSON map
(``KVPATH_CSR_MAP``); ``kvpath.regmap.model.CSRModel`` built from the same JSON is the oracle.
``KVPATH_SEED`` seeds every random choice (it is in every assertion message).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
from collections import Counter

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from types import SimpleNamespace

from kvpath.hdl.ctrl.csr import stream_layout
from kvpath.regmap.json_map import load
from kvpath.regmap.model import OKAY, SLVERR, CSRModel
from kvpath.sim.lib.streams import StreamSink, bernoulli, field_of

MASK32 = 0xFFFF_FFFF


def _field_mask(f) -> int:
    return ((1 << f["width"]) - 1) << f["lsb"]


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.map = load(os.environ["KVPATH_CSR_MAP"])
        self.seed = int(os.environ.get("KVPATH_SEED", "1"))
        self.rng = random.Random(self.seed)
        self.model = CSRModel(self.map)
        self.regs = self.map["registers"]
        self.special = self.map["special"]
        self.w1p_ports = [f["port"] for r in self.regs for f in r["fields"] if f["access"] == "w1p"]
        self.w1c_ports = [f["port"] for r in self.regs for f in r["fields"] if f["access"] == "w1c"]
        self.input_ports = sorted({f["port"] for r in self.regs for f in r["fields"]
                                   if f["access"] == "ro" and f["value_from"] is None})
        self.input_widths = {f["port"]: 64 if r["wide"] else f["width"] for r in self.regs
                             for f in r["fields"] if f["port"] in self.input_ports}
        self.pulses = Counter()
        # Every write stream of the map gets a sink (an undrained stream stalls the bus), checked
        # against the stream rule on every edge.
        streams = [r["stream"] for r in self.regs if r["stream"]]
        self.sinks = {s["port"]: StreamSink(dut, s["port"]) for s in streams}
        self.stream_layouts = {s["port"]: stream_layout(SimpleNamespace(**s)) for s in streams}
        self._scale_ready_p = 1.0
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        # cocotbext-axi logs every transfer at INFO: thousands of lines that hide the failures.
        for interface in (self.axil.write_if, self.axil.read_if):
            interface.log.setLevel(logging.WARNING)

    def reg(self, name: str) -> dict:
        return next(r for r in self.regs if r["name"] == name)

    def pair(self, r: dict, part: str) -> dict:
        """The ``part`` ("lo"/"hi") word of the 64-bit counter ``r`` belongs to."""
        return next(x for x in self.regs if x["wide"] == r["wide"] and x["part"] == part)

    def ctx(self, what: str) -> str:
        return f"seed={self.seed}: {what}"

    async def reset(self):
        dut = self.dut
        for port in self.input_ports + self.w1c_ports:
            getattr(dut, port).value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        cocotb.start_soon(self._count_pulses())

    async def _count_pulses(self):
        while True:
            await RisingEdge(self.dut.clk)
            for port in self.w1p_ports:
                self.pulses[port] += int(getattr(self.dut, port).value)

    @property
    def scale_ready_p(self) -> float:
        return self._scale_ready_p

    @scale_ready_p.setter
    def scale_ready_p(self, p: float) -> None:
        self._scale_ready_p = p
        for sink in self.sinks.values():
            sink.pauses = bernoulli(self.rng, 1.0 - p)

    def stream_beats(self, port: str) -> list[dict]:
        """The beats taken so far on write stream ``port``, decoded as the model records them."""
        layout = self.stream_layouts[port]
        return [{name: field_of(layout, b, name) for name, _ in layout} for b in self.sinks[port].beats]

    @property
    def scale_writes(self) -> list[tuple[int, int]]:
        """The scale_write beats taken so far, as (index, value)."""
        return [(b["index"], b["value"]) for b in self.stream_beats("scale_write")]

    # --- bus access, checked against the model on every call
    async def write(self, addr: int, data: int, strb: int = 0xF) -> int:
        """Write the contiguous byte lanes of ``strb`` (what AxiLiteMaster can express)."""
        lanes = [k for k in range(4) if strb >> k & 1]
        assert lanes == list(range(lanes[0], lanes[-1] + 1)), "contiguous WSTRB only"
        payload = data.to_bytes(4, "little")[lanes[0]:lanes[-1] + 1]
        resp = int((await self.axil.write(addr + lanes[0], payload)).resp)
        expected = self.model.write(addr, data, strb)
        assert resp == expected, self.ctx(f"write 0x{addr:x}=0x{data:08x} strb={strb:04b}: resp {resp}, "
                                          f"model {expected}")
        return resp

    async def read(self, addr: int) -> int:
        r = await self.axil.read(addr, 4)
        data, resp = int.from_bytes(r.data, "little"), int(r.resp)
        expected = self.model.read(addr)
        assert (data, resp) == expected, self.ctx(
            f"read 0x{addr:x}: got 0x{data:08x} resp {resp}, model 0x{expected[0]:08x} resp {expected[1]}")
        return data

    async def set_input(self, port: str, value: int):
        getattr(self.dut, port).value = value
        self.model.inputs[port] = value
        await RisingEdge(self.dut.clk)

    async def pulse_sticky(self, port: str):
        getattr(self.dut, port).value = 1
        await RisingEdge(self.dut.clk)
        getattr(self.dut, port).value = 0
        self.model.set_sticky(port)
        await RisingEdge(self.dut.clk)

    async def clear_status(self):
        for r in self.regs:
            if any(f["access"] == "w1c" for f in r["fields"]):
                await self.write(r["offset"], MASK32)

    async def check_all_registers(self):
        for r in self.regs:
            await self.read(r["offset"])

    def check_ports(self):
        for r in self.regs:
            for f in r["fields"]:
                if f["access"] == "rw":
                    got = int(getattr(self.dut, f["port"]).value)
                    assert got == self.model.values[f["port"]], self.ctx(f"port {f['port']}={got}, "
                                                                         f"model {self.model.values[f['port']]}")


@cocotb.test()
async def reset_values(dut):
    """Every register reads its JSON reset value; every RW port starts at its field's reset."""
    tb = TB(dut)
    await tb.reset()
    for r in tb.regs:
        got = await tb.read(r["offset"])
        assert got == r["reset"], tb.ctx(f"{r['name']} reset 0x{got:08x}, map 0x{r['reset']:08x}")
        for f in r["fields"]:
            if f["access"] == "rw":
                assert int(getattr(dut, f["port"]).value) == f["reset"], tb.ctx(f"{r['name']}.{f['name']}")


@cocotb.test()
async def access_types(dut):
    """Each field behaves as its access type in the JSON says."""
    tb = TB(dut)
    await tb.reset()
    for r in tb.regs:
        name, offset = r["name"], r["offset"]
        if not r["writable"]:
            before = await tb.read(offset)
            assert await tb.write(offset, ~before & MASK32) == SLVERR, tb.ctx(f"{name} is read-only")
            assert await tb.read(offset) == before, tb.ctx(f"{name} changed by a refused write")
            await tb.clear_status()
        for f in r["fields"]:
            port, mask, access = f["port"], _field_mask(f), f["access"]
            what = f"{name}.{f['name']} ({access})"
            if access == "ro" and f["value_from"] is None:
                value = tb.rng.getrandbits(tb.input_widths[port])
                await tb.set_input(port, value)
                if r["part"] == "hi":
                    await tb.read(tb.pair(r, "lo")["offset"])  # the LO read snapshots HI
                got = await tb.read(offset)
                expected = ((value >> (32 if r["part"] == "hi" else 0)) << f["lsb"]) & mask
                assert got & mask == expected, tb.ctx(f"{what}: 0x{got:08x}, input 0x{value:x}")
                await tb.set_input(port, 0)
            elif access == "ro":
                assert (await tb.read(offset)) & mask == f["reset"] << f["lsb"], tb.ctx(what)
            elif access == "rw":
                for value in (mask, tb.rng.getrandbits(32) & mask, f["reset"] << f["lsb"]):
                    await tb.write(offset, value | (await tb.read(offset)) & ~mask & MASK32)
                    assert (await tb.read(offset)) & mask == value, tb.ctx(what)
                    tb.check_ports()
            elif access == "w1c":
                await tb.pulse_sticky(port)
                assert (await tb.read(offset)) & mask == mask, tb.ctx(f"{what} not set by its input")
                await tb.write(offset, ~mask & MASK32)
                assert (await tb.read(offset)) & mask == mask, tb.ctx(f"{what} cleared by writing 0")
                await tb.write(offset, mask)
                assert (await tb.read(offset)) & mask == 0, tb.ctx(f"{what} not cleared by writing 1")
            elif access == "w1p":
                before = tb.pulses[port]
                await tb.write(offset, mask)
                await ClockCycles(dut.clk, 3)
                assert tb.pulses[port] == before + 1, tb.ctx(f"{what}: {tb.pulses[port] - before} pulses")
                await tb.write(offset, 0)
                await ClockCycles(dut.clk, 3)
                assert tb.pulses[port] == before + 1, tb.ctx(f"{what} pulsed on a 0 write")
                assert (await tb.read(offset)) & mask == 0, tb.ctx(what)
            elif access == "wo":
                n = len(tb.scale_writes)
                await tb.write(offset, 0x3C00_5A5A)
                assert tb.scale_writes[n:] == tb.model.scale_writes[-1:], tb.ctx(what)
                assert (await tb.read(offset)) & mask == 0, tb.ctx(f"{what} reads back")
    await tb.check_all_registers()
    assert +tb.pulses == Counter(p for p, _ in tb.model.pulses), tb.ctx(f"pulses {tb.pulses}")


@cocotb.test()
async def bad_accesses(dut):
    """Unmapped reads and writes, writes to read-only registers: SLVERR, axi_error, no side effect."""
    tb = TB(dut)
    await tb.reset()
    mapped = {r["offset"] for r in tb.regs}
    axi_error = tb.special["axi_error"]
    status = next(r for r in tb.regs if any(f["port"] == axi_error for f in r["fields"]))
    bit = next(_field_mask(f) for f in status["fields"] if f["port"] == axi_error)
    for offset in range(0, 1 << tb.map["addr_width"], 4):
        if offset in mapped:
            continue
        assert await tb.write(offset, tb.rng.getrandbits(32)) == SLVERR, tb.ctx(f"write 0x{offset:x}")
        assert (await tb.read(status["offset"])) & bit, tb.ctx(f"axi_error after write 0x{offset:x}")
        await tb.clear_status()
        await tb.read(offset)  # the model expects RDATA 0, SLVERR
        assert (await tb.read(status["offset"])) & bit, tb.ctx(f"axi_error after read 0x{offset:x}")
        await tb.clear_status()
    for r in tb.regs:
        if not r["writable"]:
            assert await tb.write(r["offset"], MASK32) == SLVERR, tb.ctx(r["name"])
    await tb.check_all_registers()  # everything still at its reset value (the model's state)
    tb.check_ports()
    assert not tb.scale_writes and not +tb.pulses, tb.ctx(f"a refused write had an effect: {tb.pulses}")


@cocotb.test()
async def write_strobes(dut):
    """Byte lanes on RW and W1C registers; SCALE_DATA refuses partial writes."""
    tb = TB(dut)
    await tb.reset()
    for r in tb.regs:
        if r["access"] != "rw":
            continue
        for lanes in ((0,), (1,), (2,), (3,), (0, 1), (1, 2), (2, 3), (1, 2, 3)):
            strb = sum(1 << k for k in lanes)
            await tb.write(r["offset"], tb.rng.getrandbits(32), strb)
            await tb.read(r["offset"])
            tb.check_ports()
    for port in tb.w1c_ports:
        await tb.pulse_sticky(port)
    status = next(r for r in tb.regs if any(f["access"] == "w1c" for f in r["fields"]))
    for k in range(4):
        await tb.write(status["offset"], MASK32, 1 << k)
        await tb.read(status["offset"])
    data = tb.reg(tb.special["scale_data"])
    index = tb.reg(tb.special["scale_index"])
    start = await tb.read(index["offset"])
    for strb in (0x1, 0x3, 0x7, 0xE, 0x6):
        assert await tb.write(data["offset"], tb.rng.getrandbits(32), strb) == SLVERR, tb.ctx(f"strb {strb:04b}")
    await ClockCycles(dut.clk, 3)
    assert not tb.scale_writes, tb.ctx("a partial SCALE_DATA write reached the cache")
    assert await tb.read(index["offset"]) == start, tb.ctx("SCALE_INDEX moved on a refused write")


@cocotb.test()
async def counters(dut):
    """Counter registers follow their inputs; LO then HI is one consistent 64-bit value."""
    tb = TB(dut)
    await tb.reset()
    for _ in range(20):
        for r in tb.regs:
            f = r["fields"][0]
            if f["access"] != "ro" or f["value_from"] is not None or r["part"] == "hi":
                continue
            value = tb.rng.getrandbits(tb.input_widths[f["port"]])
            await tb.set_input(f["port"], value)
            lo = await tb.read(r["offset"])
            if r["part"] == "lo":
                # The counter moves on between the two reads; HI must still match the LO snapshot.
                await tb.set_input(f["port"], tb.rng.getrandbits(64))
                hi = await tb.read(tb.pair(r, "hi")["offset"])
                assert (hi << 32) | lo == value, tb.ctx(f"{r['name']}: 0x{hi:08x}{lo:08x} != 0x{value:016x}")
            else:
                width_mask = (1 << f["width"]) - 1
                assert (lo >> f["lsb"]) & width_mask == value & width_mask, tb.ctx(r["name"])


@cocotb.test()
async def scale_stream(dut):
    """SCALE_INDEX then consecutive SCALE_DATA writes stream a table; backpressure holds the response."""
    tb = TB(dut)
    await tb.reset()
    data = tb.reg(tb.special["scale_data"])["offset"]
    index = tb.reg(tb.special["scale_index"])["offset"]
    # Backpressure: with ready low, the write response must not come back.
    tb.scale_ready_p = 0.0
    await tb.write(index, 100)
    pending = cocotb.start_soon(tb.axil.write(data, (0xBEEF).to_bytes(4, "little")))
    await ClockCycles(dut.clk, 30)
    assert not pending.done(), tb.ctx("SCALE_DATA answered before the cache took the entry")
    assert int(dut.scale_write__valid.value) == 1, tb.ctx("no ScaleWrite offered")
    tb.scale_ready_p = 1.0
    resp = await pending
    tb.model.write(data, 0xBEEF)
    assert int(resp.resp) == OKAY and tb.scale_writes == [(100, 0xBEEF)], tb.ctx(f"{tb.scale_writes}")
    # A table: random backpressure, consecutive writes, the index increments by itself.
    tb.scale_ready_p = 0.4
    start = tb.rng.getrandbits(32)
    await tb.write(index, start)
    table = [tb.rng.getrandbits(32) for _ in range(64)]
    for value in table:
        await tb.write(data, value)
    await ClockCycles(dut.clk, 2)
    expected = [((start + k) & MASK32, v) for k, v in enumerate(table)]
    assert tb.scale_writes[1:] == expected, tb.ctx("streamed table differs")
    assert await tb.read(index) == (start + len(table)) & MASK32, tb.ctx("SCALE_INDEX after the table")


@cocotb.test()
async def random_against_model(dut):
    """Seeded random reads and writes (mapped and unmapped, any contiguous WSTRB), input changes,
    sticky pulses, with random pauses on every AXI channel so AW and W arrive in any order."""
    tb = TB(dut)
    await tb.reset()
    rng = tb.rng

    def pauses(p):
        return (rng.random() < p for _ in itertools.count())

    for channel in (tb.axil.write_if.aw_channel, tb.axil.write_if.w_channel, tb.axil.write_if.b_channel,
                    tb.axil.read_if.ar_channel, tb.axil.read_if.r_channel):
        channel.set_pause_generator(pauses(0.3))
    tb.scale_ready_p = 0.6
    offsets = [r["offset"] for r in tb.regs]
    space = 1 << tb.map["addr_width"]
    for _ in range(int(os.environ.get("KVPATH_CSR_OPS", "400"))):
        op = rng.random()
        addr = rng.choice(offsets) if rng.random() < 0.85 else rng.randrange(0, space, 4)
        if op < 0.4:
            first = rng.randrange(4)
            last = rng.randrange(first, 4)
            strb = sum(1 << k for k in range(first, last + 1)) if rng.random() < 0.4 else 0xF
            await tb.write(addr, rng.getrandbits(32), strb)
        elif op < 0.8:
            await tb.read(addr)
        elif op < 0.9:
            port = rng.choice(tb.input_ports)
            await tb.set_input(port, rng.getrandbits(tb.input_widths[port]))
        else:
            await tb.pulse_sticky(rng.choice(tb.w1c_ports))
    await ClockCycles(dut.clk, 5)
    await tb.check_all_registers()
    tb.check_ports()
    for port in tb.sinks:
        assert tb.stream_beats(port) == tb.model.streams[port], tb.ctx(f"{port} beats differ from the model")
    assert +tb.pulses == Counter(p for p, _ in tb.model.pulses), tb.ctx(f"pulses {tb.pulses}")
