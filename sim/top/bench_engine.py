"""Throughput of the KV cache engine (``KVCacheTop``; cocotb module run by ``kvpath bench engine``; not
a test): the write path on master 0 and the read path on the read masters, cocotbext-axi's RAM on
every bus. Each phase's figures go to ``$KVPATH_BENCH_OUT`` as one JSON line.

Environment: ``KVPATH_BENCH_CONFIG`` (JSON of the KVPathConfig fields), ``KVPATH_BENCH_OUT``,
``KVPATH_BENCH_PAUSES`` (``none``: every channel always ready; ``random``: random pauses on every
stream and AXI channel, ``random_pauses`` of ``sim/lib/streams.py`` at ``KVPATH_BENCH_PAUSE_RATE``,
default 0.1: a pause of 1, 1, 2 or 5 cycles starts with that probability, so a channel is paused
about 20 % of its cycles; each channel its own generator), ``KVPATH_SEED``, ``KVPATH_BENCH_TOKENS`` (tokens
written: every layer, head and K/V of each, so ``tokens x regions`` rows), ``KVPATH_BENCH_READS``
(READs per read port).

Setup: HEAD_DIM = max_head_dim; every layer in a class (even layers class 0, odd class 1), both
rings ``C = W = tokens, S = 0``, so after the write phase every ring is exactly full and a READ is
one run of ``tokens`` consecutive rows. Region bases are 16-byte aligned and back to back.

Write phase (measured): ``tokens`` tokens queued at once on ``s_axis_kv`` (K then V of every head of
every layer; ``append`` on each class's first vector). Window: first AW to last B handshake on
master 0; W beats and WSTRB bytes counted on the bus; K/V input beats over their own window (first
to last handshake). Also the histogram of the gaps (idle cycles) between consecutive W handshakes
and between consecutive K/V handshakes, which names where the bus idles.

Read phase (measured): ``reads`` READs per port, issued on ``s_axis_cmd`` interleaved over the ports
(port 0, 1, .., 0, 1, ..) so that every port works at once; each READs a different region (cycling).
Per port: R beats over the window first AR to last R on that master, and output beats. Total: all R
beats over first AR (any master) to last R (any master).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiReadBus
from cocotbext.axi.axi_ram import AxiRamRead, AxiRamWrite

from kvpath import layout
from kvpath.config import ELEM_BITS, KVPathConfig
from kvpath.elements import element
from kvpath.layout import Op
from kvpath.regmap import build_map
from kvpath.sim.lib.streams import StreamSink, StreamSource, pack_lanes, pause_generator, random_pauses
from kvpath.hdl.ddr.engine import kv_layout

BASE = 0x1000


def emit(record: dict):
    with open(os.environ["KVPATH_BENCH_OUT"], "a") as fh:
        fh.write(json.dumps(record) + "\n")


class Channel:
    """Handshakes of one channel from the rising edges: count, first and last cycle, gaps between
    consecutive handshakes (idle cycles, as a histogram), and optionally bytes (popcount of a strobe)."""

    def __init__(self, valid, ready, strb=None):
        self.valid, self.ready, self.strb = valid, ready, strb
        self.beats = self.bytes = 0
        self.first = self.last = None
        self.gaps = collections.Counter()

    def step(self, cycle: int):
        if self.valid.value and self.ready.value:
            if self.first is None:
                self.first = cycle
            else:
                gap = cycle - self.last - 1
                if gap:
                    self.gaps[gap] += 1
            self.last = cycle
            self.beats += 1
            if self.strb is not None:
                self.bytes += int(self.strb.value).bit_count()

    @property
    def cycles(self) -> int:
        return 0 if self.first is None else self.last - self.first + 1

    def idle(self) -> int:
        return sum(g * n for g, n in self.gaps.items())


class Meter:
    def __init__(self, clk, channels: dict[str, Channel]):
        self.clk, self.ch = clk, channels
        self.cycle = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        chans = list(self.ch.values())
        while True:
            await RisingEdge(self.clk)
            self.cycle += 1
            for ch in chans:
                ch.step(self.cycle)

    def stop(self):
        self._task.cancel()


def top_gaps(gaps: collections.Counter, n: int = 6) -> dict:
    """The most frequent gap lengths (idle cycles: occurrences), for the record."""
    return {str(g): k for g, k in gaps.most_common(n)}


class Bench:
    def __init__(self, dut):
        self.dut = dut
        self.c = c = KVPathConfig(**json.loads(os.environ["KVPATH_BENCH_CONFIG"]))
        self.seed = int(os.environ.get("KVPATH_SEED", "1"))
        self.pauses = os.environ.get("KVPATH_BENCH_PAUSES", "none")
        self.pause_rate = float(os.environ.get("KVPATH_BENCH_PAUSE_RATE", "0.1"))
        self.tokens = int(os.environ.get("KVPATH_BENCH_TOKENS", "64"))
        self.reads = int(os.environ.get("KVPATH_BENCH_READS", "24"))
        self.rng = random.Random(f"{self.seed}-bench-engine")
        self.regmap = build_map(c)
        self.head_dim = c.max_head_dim
        self.row_bytes = layout.row_bytes(c, self.head_dim)
        self.regions = [(layer, head, kv) for layer in range(c.max_layers) for head in range(c.max_kv_heads)
                        for kv in range(2)]
        self.bases = {r: BASE + k * self.tokens * self.row_bytes for k, r in enumerate(self.regions)}
        size = 1 << (BASE + len(self.regions) * self.tokens * self.row_bytes).bit_length()
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        for interface in (self.axil.write_if, self.axil.read_if):
            interface.log.setLevel(logging.WARNING)
        bus = AxiBus.from_prefix(dut, "m_axi0_")
        self.ram = AxiRamWrite(bus.write, dut.clk, dut.rst, size=size)
        self.rams = [AxiRamRead(bus.read, dut.clk, dut.rst, size=size, mem=self.ram.mem)]
        for n in range(1, c.read_ports):
            self.rams.append(AxiRamRead(AxiReadBus.from_prefix(dut, f"m_axi{n}_"), dut.clk, dut.rst, size=size,
                                        mem=self.ram.mem))
        for r in (self.ram, *self.rams):
            r.log.setLevel(logging.WARNING)
        dut.rst.value = 1
        dut.memset__valid.value = 0
        self.kv = StreamSource(dut, "s_axis_kv", self.pause())
        self.cmd = StreamSource(dut, "s_axis_cmd", self.pause())
        self.outs = [StreamSink(dut, f"m_axis_kv{p}", self.pause()) for p in range(c.read_ports)]
        chans = [self.ram.aw_channel, self.ram.w_channel, self.ram.b_channel]
        for r in self.rams:
            chans += [r.ar_channel, r.r_channel]
        for ch in chans:
            ch.set_pause_generator(self.pause())

    def pause(self):
        if self.pauses == "random":
            return random_pauses(self.rng, self.pause_rate)
        return pause_generator(self.rng, self.pauses)

    def reg(self, name: str):
        return self.regmap.register(name)

    async def write(self, name: str, value: int):
        await self.axil.write_dword(self.reg(name).offset, value)

    async def read(self, name: str) -> int:
        return await self.axil.read_dword(self.reg(name).offset)

    async def until(self, cond, what: str, limit: int = 2_000_000):
        for _ in range(limit // 64):
            if await cond():
                return
            await ClockCycles(self.dut.clk, 64)
        raise AssertionError(f"seed={self.seed} pauses={self.pauses}: timeout waiting for {what}")

    async def setup(self):
        dut, c = self.dut, self.c
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)
        await self.write("HEAD_DIM", self.head_dim)
        for (layer, head, kv), base in self.bases.items():
            await self.write("REGION_INDEX", layout.region_index(c, 0, layer, head, kv))
            await self.write("REGION_BASE_HI", base >> 32)
            await self.write("REGION_BASE_LO", base & 0xFFFFFFFF)
        await self.write("LAYER_INDEX", 0)
        for layer in range(c.max_layers):
            await self.write("LAYER_CLASS", self.cls(layer))
        for cls in range(min(2, c.n_classes)):
            await self.write("RING_MAX_TOKENS", self.tokens)
            await self.write("RING_SINKS", 0)
            await self.write("RING_WINDOW", self.tokens)
            await self.write("CMD_ARG", 0)
            await self.write("CMD", layout.command_value(c, Op.CLEAR, cls=cls) & 0xFFFFFFFF)
        await self.write("CTRL", 1)
        self.commands = min(2, c.n_classes)
        await self.until(self.commands_done, "the CLEARs")

    def cls(self, layer: int) -> int:
        return layer % min(2, self.c.n_classes)

    async def commands_done(self) -> bool:
        return await self.read("COMMANDS_DONE") == self.commands

    def token_beats(self, data: list[list[int]]) -> list[int]:
        """One token: K and V of every head of every layer, ``append`` on each class's first vector;
        vector data drawn from ``data`` (pre-packed beats, reused: throughput does not depend on it)."""
        c, kvl, tag = self.c, kv_layout(self.c), layout.kv_tag(self.c)
        beats, appended = [], set()
        for layer, head, kv in self.regions:
            cls = self.cls(layer)
            append = cls not in appended
            appended.add(cls)
            user = layout.pack(tag, append=int(append), kv=kv, head=head, layer=layer, seq=0)
            words = data[self.rng.randrange(len(data))]
            n = len(words)
            beats += [layout.pack(kvl, data=w, user=user, last=int(k == n - 1)) for k, w in enumerate(words)]
        return beats

    async def write_phase(self) -> dict:
        dut, c = self.dut, self.c
        np_rng = np.random.default_rng(self.seed)
        dtype = element(c.elem).dtype
        data = []
        for _ in range(16):
            vec = (np_rng.standard_normal(self.head_dim) * 2).astype(dtype).view(np.uint16)
            data.append([pack_lanes(row, ELEM_BITS) for row in vec.reshape(-1, c.quant_lanes)])
        p = "m_axi0__"
        ch = {"aw": Channel(getattr(dut, p + "awvalid"), getattr(dut, p + "awready")),
              "w": Channel(getattr(dut, p + "wvalid"), getattr(dut, p + "wready"), getattr(dut, p + "wstrb")),
              "b": Channel(getattr(dut, p + "bvalid"), getattr(dut, p + "bready")),
              "kv": Channel(dut.s_axis_kv__valid, dut.s_axis_kv__ready)}
        beats = []
        for _ in range(self.tokens):
            beats += self.token_beats(data)
        meter = Meter(dut.clk, ch)
        self.kv.send(beats)
        rows = self.tokens * len(self.regions)

        async def written():
            return self.kv.idle and await self.read("VECTORS_WRITTEN") == rows
        await self.until(written, "the rows written")
        await ClockCycles(dut.clk, 20)
        meter.stop()
        cycles = ch["b"].last - ch["aw"].first + 1
        w_idle_window = cycles - ch["w"].beats
        assert await self.read("VECTORS_DROPPED") == 0
        assert ch["aw"].beats == ch["b"].beats
        return {"phase": "write", "rows": rows, "row_bytes": self.row_bytes, "bytes": rows * self.row_bytes,
                "cycles": cycles, "w_beats": ch["w"].beats, "w_bytes": ch["w"].bytes, "aw": ch["aw"].beats,
                "kv_beats": ch["kv"].beats, "kv_cycles": ch["kv"].cycles, "w_idle": w_idle_window,
                "w_gaps": top_gaps(ch["w"].gaps), "kv_gaps": top_gaps(ch["kv"].gaps),
                "kv_idle": ch["kv"].idle()}

    async def read_phase(self) -> dict:
        dut, c = self.dut, self.c
        n_ports = c.read_ports
        ar, r = [], []
        for n in range(n_ports):
            p = f"m_axi{n}__"
            ar.append(Channel(getattr(dut, p + "arvalid"), getattr(dut, p + "arready")))
            r.append(Channel(getattr(dut, p + "rvalid"), getattr(dut, p + "rready")))
        outs = [Channel(getattr(dut, f"m_axis_kv{n}__valid"), getattr(dut, f"m_axis_kv{n}__ready"))
                for n in range(n_ports)]
        chans = {f"ar{n}": x for n, x in enumerate(ar)} | {f"r{n}": x for n, x in enumerate(r)} \
            | {f"o{n}": x for n, x in enumerate(outs)}
        cmds, k = [], 0
        for _ in range(self.reads):
            for port in range(n_ports):
                layer, head, kv = self.regions[k % len(self.regions)]
                k += 1
                cmds.append(layout.command_value(c, Op.READ, layer=layer, head=head, kv=kv, port=port))
        start = [len(o.items) for o in self.outs]
        beats_per_row = self.head_dim // c.dequant_lanes
        want = self.reads * self.tokens * beats_per_row
        meter = Meter(dut.clk, chans)
        self.cmd.send(cmds)
        self.commands += len(cmds)

        async def done():
            return all(len(o.items) - s >= want for o, s in zip(self.outs, start)) and await self.commands_done()
        await self.until(done, "the READ beats")
        await ClockCycles(dut.clk, 20)
        meter.stop()
        for o, s in zip(self.outs, start):
            assert len(o.items) - s == want, (len(o.items) - s, want)
        per_row = self.row_bytes // c.bus_bytes if self.row_bytes % c.bus_bytes == 0 else None
        ports = []
        for n in range(n_ports):
            ports.append({"port": n, "ar": ar[n].beats, "r_beats": r[n].beats, "r_cycles": r[n].last - ar[n].first + 1,
                          "r_gaps": top_gaps(r[n].gaps), "out_beats": outs[n].beats, "out_cycles": outs[n].cycles})
            if per_row:
                assert r[n].beats == self.reads * self.tokens * per_row, (n, r[n].beats)
        total_cycles = max(x.last for x in r) - min(x.first for x in ar) + 1
        return {"phase": "read", "read_ports": n_ports, "reads_per_port": self.reads, "rows_per_read": self.tokens,
                "row_bytes": self.row_bytes, "bytes_per_port": self.reads * self.tokens * self.row_bytes,
                "total_cycles": total_cycles, "total_r_beats": sum(x.beats for x in r), "ports": ports}


@cocotb.test()
async def bench_engine(dut):
    b = Bench(dut)
    await b.setup()
    common = {"seed": b.seed, "pauses": b.pauses, "pause_rate": b.pause_rate if b.pauses == "random" else 0,
              "fmt": b.c.fmt, "head_dim": b.head_dim, "read_ports": b.c.read_ports, "bus_bytes": b.c.bus_bytes}
    emit(common | await b.write_phase())
    await ClockCycles(dut.clk, 50)
    emit(common | await b.read_phase())
