"""cocotb tests of ReadPort against cocotbext-axi's AXI RAM (with error injection) and the golden model.

Regions of rows (golden-quantized vectors, plus raw random rows that exercise non-finite scale
fields) sit at unaligned byte offsets in the RAM. READs of 1..3 runs (random slot counts, zero
included, random positions) are issued; every output beat is compared bit for bit with the golden
dequantization of its row, its position, TLAST and error flag; ``done``/``done_error`` must pulse
once per READ in order, ``error_run`` once per failed run, ``blocks_read`` once per input chunk.
Every handshake on every channel is held to the stream rules.

Static-scale formats: the DUT is the port with a ``ScaleCache`` dequantizer copy beside it
(``tests/ddr/test_read_port.py``, ``ReadPortWithCache``), whose ``scale_write`` stream the testbench
loads with a random table at every reset; each region belongs to a random (layer, head, kv), its
rows are ``kvpath.golden.static`` codes of that context (plus raw random bytes), and each run
carries its region's context, so the runs of one READ may have different contexts.

Environment: ``KVPATH_DDR_PARAMS`` (KVPathConfig fields, JSON), ``KVPATH_DDR_SEED``,
``KVPATH_RP_READS`` (READs per random phase), ``KVPATH_RP_BULK_ROWS`` (rows of the throughput run).
"""

from __future__ import annotations

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiReadBus

from kvpath import golden, stimulus
from kvpath.golden import static
from kvpath.config import KVPathConfig
from kvpath.hdl.ddr.read_port import out_layout, run_layout
from kvpath.layout import read_tag, row_bytes
from kvpath.sim.ddr.movers import RAM_BITS
from kvpath.sim.lib.axi_ram import ErrorMap, ErrorRamRead
from kvpath.sim.lib.streams import (HandshakeChecker, StreamSink, StreamSource, pack_fields, pack_lanes,
                                    pause_generator, unpack_fields)

AR_FIELDS = ("id", "addr", "len", "size", "burst", "lock", "cache", "prot", "qos")
MASK32 = (1 << 32) - 1


class Region:
    """``n`` rows at byte ``offset`` of the RAM: their bytes and the golden output elements; ``ctx``
    (layer, head, kv) for a static format."""

    def __init__(self, offset: int, rows: np.ndarray, values: np.ndarray, ctx: dict | None = None):
        self.offset, self.rows, self.values, self.ctx = offset, rows, values, ctx or {}
        self.n, self.row_bytes = rows.shape


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.params = json.loads(os.environ.get("KVPATH_DDR_PARAMS", "{}"))
        self.c = c = KVPathConfig(**self.params)
        self.seed = int(os.environ.get("KVPATH_DDR_SEED", "1"))
        self.rng = random.Random(f"{self.seed}-{cocotb.top._name}-read_port-{c.fmt}")
        self.lanes = c.dequant_lanes
        self.run_layout, self.out_layout, self.tag_layout = run_layout(c), out_layout(c), read_tag(c)
        from kvpath.hdl.static.write_port import ScaleWrite
        self.scale_layout = ScaleWrite
        self.size = 1 << RAM_BITS
        self.base = self.rng.randrange(1 << (c.addr_width - RAM_BITS)) << RAM_BITS
        self.errors = ErrorMap(max(16, c.bus_bytes))
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.ram = ErrorRamRead(AxiReadBus.from_prefix(dut, "axi_"), dut.clk, dut.rst, self.size, self.errors)
        self.ram.write(0, self.rng.randbytes(self.size))
        self.check = HandshakeChecker(dut, dut.rst)
        self.check.add_axi(dut, "axi_", "ar", AR_FIELDS)
        self.check.add_axi(dut, "axi_", "r", ("id", "data", "resp", "last"))
        self.check.add_stream(dut, "run")
        self.check.add_stream(dut, "o")
        self.src = self.out = None
        self.expected: list[tuple[int, int, int, int]] = []   # (data, pos, error, last)
        self.reads = 0
        self.read_errors: list[int] = []   # done_error expected per READ, in order
        self.error_runs = 0
        self.head_dim = 0
        self.regions: list[Region] = []
        self.np_rng = np.random.default_rng(self.rng.randrange(1 << 32))
        self.stats = {"done": 0, "done_error": [], "error_run": 0, "blocks": 0, "out_cycles": []}
        self.cycle = 0
        self.static = c.format.needs_scale_cache
        if self.static:
            self.table = self.random_table()
        cocotb.start_soon(self._monitor())

    def random_table(self) -> np.ndarray:
        """A scale cache table: per entry a random scale (a few zero), as the driver makes entries."""
        c = self.c
        table = static.empty_table(c.fmt, c)
        for k in range(len(table)):
            if self.rng.random() < 0.03:
                continue
            value = self.rng.uniform(1, 2) * 2.0 ** self.rng.randint(-12, 4)
            bits = max(static.round_scale(value, c.elem), static.min_scale(c.elem))
            table[k] = static.make_entry(bits, c.elem)
        return table

    async def load_scales(self):
        src = StreamSource(self.dut, "scale_write", pause_generator(self.rng, "none"))
        src.send([pack_fields(self.scale_layout, index=k, value=int(v)) for k, v in enumerate(self.table)])
        while not src.idle:
            await RisingEdge(self.dut.clk)
        src.stop()

    def ctx(self, what: str) -> str:
        return f"seed={self.seed} params={self.params} head_dim={self.head_dim}: {what}"

    async def _monitor(self):
        dut, st = self.dut, self.stats
        while True:
            await RisingEdge(dut.clk)
            self.cycle += 1
            if dut.rst.value:
                continue
            if dut.done.value:
                st["done"] += 1
                st["done_error"].append(int(dut.done_error.value))
            if dut.error_run.value:
                st["error_run"] += 1
            if dut.blocks_read.value:
                st["blocks"] += 1
            if dut.o__valid.value and dut.o__ready.value:
                st["out_cycles"].append(self.cycle)

    async def reset(self, pauses: str = "mixed", head_dim: int | None = None):
        dut = self.dut
        for s in (self.src, self.out):
            if s is not None:
                s.stop()
        dut.drain.value = 0
        if self.static:
            dut.scale_write__valid.value = 0
        dut.rst.value = 1
        self.src = StreamSource(dut, "run", pause_generator(self.rng, pauses))
        self.out = StreamSink(dut, "o", pause_generator(self.rng, pauses))
        for ch in (self.ram.ar_channel, self.ram.r_channel):
            ch.set_pause_generator(pause_generator(self.rng, pauses))
        self.set_head_dim(head_dim or self.rng.choice(self.head_dims()))
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        if self.static:
            await self.load_scales()
        self.expected.clear()
        self.out.items.clear()
        self.reads = self.error_runs = 0
        self.read_errors.clear()
        self.stats.update(done=0, done_error=[], error_run=0, blocks=0, out_cycles=[])

    def head_dims(self) -> list[int]:
        c = self.c
        return [h for h in (32, 64, 96, 128, 256) if h <= c.max_head_dim and h % c.dequant_lanes == 0]

    def set_head_dim(self, head_dim: int):
        """Static inputs (only changed in reset, when the port is idle); the regions are rebuilt."""
        self.head_dim = head_dim
        self.dut.row_bytes.value = row_bytes(self.c, head_dim)
        self.dut.beats_per_row.value = head_dim // self.lanes
        self.regions.clear()

    def add_region(self, n: int, offset: int | None = None, raw_share: float = 0.15) -> Region:
        """``n`` rows at a random unaligned offset (not overlapping earlier regions of this phase)."""
        c, hd = self.c, self.head_dim
        rb = row_bytes(c, hd)
        if offset is None:
            end = max((r.offset + r.n * r.row_bytes for r in self.regions), default=0)
            offset = end + self.rng.randrange(0, 3000)
        assert offset + n * rb <= self.size, self.ctx("regions do not fit the RAM")
        dtype = np.float16 if c.elem == "fp16" else stimulus.BF16
        ctx = None
        if self.static:
            ctx = dict(layer=self.rng.randrange(c.max_layers), head=self.rng.randrange(c.max_kv_heads),
                       kv=self.rng.randrange(2))
            x = (self.np_rng.standard_normal((n, hd)) * 2.0 ** self.np_rng.integers(-10, 10, (n, 1))).astype(dtype)
            x.reshape(-1)[self.np_rng.integers(0, n * hd, 4)] = np.array([np.inf, -np.inf, np.nan, 0.0]).astype(dtype)
            rows = static.quantize(x, c.fmt, self.table, **ctx, config=c).reshape(n, rb)
        else:
            x = stimulus.mixed(c.fmt, n * hd, self.rng.randrange(1 << 30), c.elem).reshape(n, hd)
            rows = golden.quantize(x, c.fmt).reshape(n, rb)
        raw = self.np_rng.random(n) < raw_share  # raw bytes: non-finite and odd scale fields
        rows[raw] = self.np_rng.integers(0, 256, size=(int(raw.sum()), rb), dtype=np.uint8)
        if self.static:
            values = static.dequantize(rows, c.fmt, self.table, **ctx, dtype=dtype, config=c)
            values = values.view(np.uint16).reshape(n, hd)
        else:
            values = golden.dequantize(rows, c.fmt, dtype).view(np.uint16).reshape(n, hd)
        self.ram.write(offset, rows.tobytes())
        region = Region(offset, rows, values, ctx)
        self.regions.append(region)
        return region

    def submit(self, runs: list[tuple[Region, int, int, int]]):
        """One READ: runs of (region, first slot, slots, pos); the last run ends it."""
        lanes, hd = self.lanes, self.head_dim
        beats, err = [], False
        for k, (region, first, slots, pos) in enumerate(runs):
            assert first + slots <= region.n
            start = region.offset + first * region.row_bytes
            length = slots * region.row_bytes
            self.src.send([pack_fields(self.run_layout, addr=self.base + start, slots=slots, pos=pos,
                                       last=int(k == len(runs) - 1), **region.ctx)])
            if slots:
                failed = self.errors.worst(start, start + length) != 0
                err |= failed
                self.error_runs += failed
            for r in range(slots):
                vals = region.values[first + r]
                for j in range(hd // lanes):
                    beats.append([pack_lanes(vals[j * lanes:(j + 1) * lanes], 16), (pos + r) & MASK32, 0, 0])
        if beats:
            beats[-1][2], beats[-1][3] = int(err), 1
        self.expected.extend(tuple(b) for b in beats)
        self.reads += 1
        self.read_errors.append(int(err and bool(beats)))

    def random_read(self, max_rows: int = 12):
        """1..3 runs over random regions; a fifth of the runs are empty; sometimes an empty READ."""
        if self.rng.random() < 0.08:
            self.submit([(self.regions[0], 0, 0, self.rng.randrange(1 << 32))])
            return
        runs = []
        for _ in range(self.rng.randint(1, 3)):
            region = self.rng.choice(self.regions)
            slots = 0 if self.rng.random() < 0.2 else self.rng.randint(1, min(max_rows, region.n))
            first = self.rng.randrange(region.n - slots + 1)
            pos = self.rng.choice((self.rng.randrange(1 << 32), self.rng.randrange(100_000), MASK32 - 2))
            runs.append((region, first, slots, pos))
        self.submit(runs)

    def output(self):
        got = []
        for x in self.out.items:
            f = unpack_fields(self.out_layout, x)
            tag = unpack_fields(self.tag_layout, f["user"])
            got.append((f["data"], tag["pos"], tag["error"], f["last"]))
        return got

    def compare(self, what: str = "output"):
        got, exp = self.output(), self.expected
        for i, (g, e) in enumerate(zip(got, exp)):
            if g != e:
                raise AssertionError(self.ctx(
                    f"{what}: beat {i} got data=0x{g[0]:x} pos={g[1]} error={g[2]} last={g[3]}, expected "
                    f"data=0x{e[0]:x} pos={e[1]} error={e[2]} last={e[3]}"))
        assert len(got) == len(exp), self.ctx(f"{what}: {len(got)} beats, expected {len(exp)}")

    async def finish(self, limit: int | None = None):
        limit = limit or 100 * len(self.expected) + 20 * self.reads + 5000
        for _ in range(limit):
            if len(self.out.items) >= len(self.expected) and self.stats["done"] >= self.reads \
                    and self.src.idle:
                break
            await RisingEdge(self.dut.clk)
        else:
            raise AssertionError(self.ctx(f"timeout: {len(self.out.items)} of {len(self.expected)} beats, "
                                          f"{self.stats['done']} of {self.reads} READs done"))
        await ClockCycles(self.dut.clk, 20)
        self.compare()
        st = self.stats
        assert st["done"] == self.reads, self.ctx(f"{st['done']} done pulses for {self.reads} READs")
        assert st["done_error"] == self.read_errors, \
            self.ctx(f"done_error per READ {st['done_error']}, expected {self.read_errors}")
        assert st["error_run"] == self.error_runs, self.ctx(f"{st['error_run']} error_run pulses, "
                                                            f"expected {self.error_runs}")
        assert not self.dut.busy.value, self.ctx("busy after every READ is done")
        self.check.assert_clean(self.ctx(""))

    def check_blocks(self):
        """blocks_read pulses x blocks per pulse = every block of every row read."""
        per_pulse = max(1, self.lanes // 32)
        blocks = len(self.expected) * self.lanes // 32
        assert self.stats["blocks"] * per_pulse == blocks, \
            self.ctx(f"{self.stats['blocks']} blocks_read pulses, expected {blocks // per_pulse}")


async def random_phase(tb: TB, pauses: str, n_reads: int, head_dim: int | None = None):
    await tb.reset(pauses, head_dim)
    for _ in range(3):
        tb.add_region(tb.rng.randint(4, 24))
    for _ in range(n_reads):
        tb.random_read()
    await tb.finish()
    tb.check_blocks()
    tb.dut._log.info("%s head_dim=%d: %d READs, %d beats, ok", pauses, tb.head_dim, tb.reads, len(tb.expected))


def n_reads(default: int) -> int:
    return int(os.environ.get("KVPATH_RP_READS", default))


@cocotb.test()
async def directed(dut):
    """Corner READs: empty READ alone and between others, empty runs first/middle/last, one row,
    a position that wraps, back-to-back READs with no pauses."""
    tb = TB(dut)
    await tb.reset("none")
    a, b = tb.add_region(10), tb.add_region(7)
    tb.submit([(a, 0, 1, 5)])
    tb.submit([(a, 0, 0, 0)])
    tb.submit([(a, 2, 3, 100), (b, 0, 0, 103), (b, 1, 2, 103)])
    tb.submit([(a, 0, 0, 7), (b, 0, 7, 7)])
    tb.submit([(b, 6, 1, MASK32), (a, 0, 2, 0)])
    tb.submit([(a, 5, 5, 9), (a, 0, 0, 14)])
    tb.submit([(a, 0, 0, 1), (a, 0, 0, 1), (a, 0, 0, 1)])
    tb.submit([(a, 0, 10, 1000), (b, 0, 7, 1010), (a, 0, 0, 1017)])
    await tb.finish()
    tb.check_blocks()


@cocotb.test()
async def random_reads(dut):
    """Seeded random READs with bubbles and backpressure on every channel, at every head_dim."""
    tb = TB(dut)
    for k, pauses in enumerate(("mixed", "cycle", "random", "none")):
        await random_phase(tb, pauses, n_reads(25), head_dim=tb.head_dims()[k % len(tb.head_dims())])


@cocotb.test()
async def error_responses(dut):
    """Error granules in the regions: a READ touching one carries error on TLAST only, error_run
    pulses once per failed run, done_error with the READ's done; the port keeps serving."""
    tb = TB(dut)
    await tb.reset("mixed")
    regions = [tb.add_region(tb.rng.randint(8, 24)) for _ in range(3)]
    bad, good = regions[0], regions[1]   # granules only in the first region, away from the second
    for _ in range(3):
        tb.errors.add(bad.offset + tb.rng.randrange(tb.errors.unit, bad.n * bad.row_bytes - tb.errors.unit), 1,
                      tb.rng.choice((2, 3)))
    tb.submit([(good, 0, 2, 1), (bad, 0, bad.n, 3)])      # fails in its last run
    tb.submit([(bad, 0, bad.n, 3), (good, 0, 2, 1)])      # fails in its first run
    tb.submit([(good, 0, good.n, 7)])                     # clean
    for _ in range(n_reads(30)):
        tb.random_read()
    await tb.finish()
    flags = [e[2] for e in tb.expected if e[3]]
    assert any(flags) and not all(flags), tb.ctx("error test hit no READ or every READ")
    tb.errors.regions.clear()


@cocotb.test()
async def throughput(dut):
    """One long READ (two runs) with no pauses anywhere: beats per clock from the first output beat
    to the last."""
    tb = TB(dut)
    hd = max(tb.head_dims())
    await tb.reset("none", hd)
    rows = int(os.environ.get("KVPATH_RP_BULK_ROWS", "120"))
    rb = row_bytes(tb.c, hd)
    rows = min(rows, (tb.size - 4096) // rb)
    region = tb.add_region(rows, offset=tb.rng.randrange(1, 4096))
    half = rows // 2
    tb.submit([(region, half, rows - half, 1000), (region, 0, half, 1000 + rows - half)])
    await tb.finish()
    cyc = tb.stats["out_cycles"]
    rate = (len(cyc) - 1) / (cyc[-1] - cyc[0])
    bound = min(1.0, tb.c.bus_bytes * 32 / (tb.c.format.block_bytes * tb.lanes))
    msg = (f"THROUGHPUT fmt={tb.c.fmt} lanes={tb.lanes} head_dim={hd} beats={len(cyc)} "
           f"cycles={cyc[-1] - cyc[0]} beats_per_clock={rate:.4f} bus_bound={bound:.4f}")
    dut._log.info(msg)
    print(msg, flush=True)
    with open(os.environ.get("KVPATH_RP_REPORT", os.devnull), "a") as f:
        f.write(msg + "\n")
    assert rate >= 0.97 * bound, tb.ctx(msg)


@cocotb.test()
async def drain(dut):
    """Drain in the middle of a READ: intake stops, idle rises once the reader is idle and the
    offered beats are taken; the beats that came out are a correct prefix. Then reset and read."""
    tb = TB(dut)
    for round_ in range(3):
        await tb.reset(tb.rng.choice(("mixed", "none")))
        for _ in range(3):
            tb.add_region(tb.rng.randint(8, 24))
        for _ in range(12):
            tb.random_read(24)
        await ClockCycles(dut.clk, tb.rng.randint(0, 400))
        dut.drain.value = 1
        await RisingEdge(dut.clk)
        dut.drain.value = 0
        for _ in range(20000):
            await RisingEdge(dut.clk)
            if dut.idle.value:
                break
        else:
            raise AssertionError(tb.ctx(f"round {round_}: idle never rose"))
        assert not dut.o__valid.value and not dut.run__ready.value, tb.ctx("idle with a beat offered or intake open")
        n = len(tb.out.items)
        await ClockCycles(dut.clk, 50)
        assert len(tb.out.items) == n, tb.ctx(f"round {round_}: beats after idle")
        got = tb.output()
        assert got == tb.expected[:len(got)], tb.ctx(f"round {round_}: output before the drain")
        tb.check.assert_clean(tb.ctx(f"round {round_}: "))
    await random_phase(tb, "mixed", 10)
