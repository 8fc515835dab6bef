"""cocotb tests of the KV cache top (hdl/top/kvcache.py, docs/kvcache.md) against the golden models.

Registers through cocotbext-axi's AxiLiteMaster at the register map's addresses, DDR in cocotbext-axi
RAMs with error injection (``sim/lib/axi_ram.py``), streams through ``sim/lib/streams.py``. The
expected DDR image is built from ``kvpath.golden`` (the quantized bytes of each row) and
``kvpath.golden.ring`` (the slot each token goes to); READs are checked against the golden
dequantization of the expected rows in ``RingModel.read_order``.

Environment: ``KVPATH_KVC_CONFIG`` (JSON of the KVPathConfig fields), ``KVPATH_SEED`` (every random
choice; in every assertion message), ``KVPATH_KVC_PAUSES`` (``none`` or ``mixed``: stream and AXI
channel pauses), ``KVPATH_KVC_TOKENS`` (tokens appended in ``write_and_read``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import warnings

import cocotb
import numpy as np
from amaranth.hdl import UnusedElaboratable
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiReadBus

from kvpath import golden, layout
from kvpath.config import ELEM_BITS, KVPathConfig
from kvpath.elements import element
from kvpath.golden.ring import RingModel
from kvpath.layout import Op
from kvpath.regmap import build_map
from kvpath.regmap.map import STICKY
from kvpath.sim.lib.axi_ram import ErrorMap, ErrorRamRead, ErrorRamWrite
from kvpath.sim.lib.streams import (HandshakeChecker, StreamSink, StreamSource, pack_lanes, pause_generator,
                                    unpack_fields, unpack_lanes)
from kvpath.hdl.ddr.engine import kv_layout
from kvpath.hdl.ddr.read_port import out_layout

warnings.filterwarnings("ignore", category=UnusedElaboratable)

RAM_SIZE = 1 << 16
STICKY_BIT = {name: k for k, (name, _) in enumerate(STICKY)}


def elem_bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.uint16)


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.config = c = KVPathConfig(**json.loads(os.environ["KVPATH_KVC_CONFIG"]))
        self.seed = int(os.environ.get("KVPATH_SEED", "1"))
        self.pauses = os.environ.get("KVPATH_KVC_PAUSES", "mixed")
        self.rng = random.Random(f"{self.seed}-{cocotb.top._name}")
        self.np_rng = np.random.default_rng(self.seed)
        self.regmap = build_map(c)
        self.f = c.format
        self.dtype = element(c.elem).dtype
        self.kv_layout = kv_layout(c)
        self.out_layout = out_layout(c)
        self.tag = layout.kv_tag(c)
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        for interface in (self.axil.write_if, self.axil.read_if):
            interface.log.setLevel(logging.WARNING)
        self.errors = ErrorMap(16)
        bus = AxiBus.from_prefix(dut, "m_axi0_")
        self.ram = ErrorRamWrite(bus.write, dut.clk, dut.rst, RAM_SIZE, self.errors)
        self.rams = [ErrorRamRead(bus.read, dut.clk, dut.rst, RAM_SIZE, self.errors, mem=self.ram.mem)]
        for n in range(1, c.read_ports):
            self.rams.append(ErrorRamRead(AxiReadBus.from_prefix(dut, f"m_axi{n}_"), dut.clk, dut.rst, RAM_SIZE,
                                          self.errors, mem=self.ram.mem))
        self.check = HandshakeChecker(dut, dut.rst)
        for ch, fields in (("aw", ("addr", "len")), ("w", ("data", "strb", "last")), ("ar", ("addr", "len")),
                           ("r", ("data", "last"))):
            self.check.add_axi(dut, "m_axi0_", ch, fields)
        self.kv = self.cmd = None
        self.outs: list[StreamSink] = []

    def ctx(self, what: str) -> str:
        return f"seed={self.seed} pauses={self.pauses} config={self.config}: {what}"

    def pause(self):
        return pause_generator(self.rng, self.pauses)

    async def reset(self):
        dut = self.dut
        dut.rst.value = 1
        dut.memset__valid.value = 0
        self.kv = StreamSource(dut, "s_axis_kv", self.pause())
        self.cmd = StreamSource(dut, "s_axis_cmd", self.pause())
        self.outs = [StreamSink(dut, f"m_axis_kv{p}", self.pause()) for p in range(self.config.read_ports)]
        chans = [self.ram.aw_channel, self.ram.w_channel, self.ram.b_channel]
        for r in self.rams:
            chans += [r.ar_channel, r.r_channel]
        for ch in chans:
            ch.set_pause_generator(self.pause())
        self.ram.write(0, bytes(RAM_SIZE))
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)

    # --- registers
    def reg(self, name: str):
        return self.regmap.register(name)

    async def write(self, name: str, value: int):
        await self.axil.write_dword(self.reg(name).offset, value)

    async def read(self, name: str) -> int:
        return await self.axil.read_dword(self.reg(name).offset)

    async def read_field(self, reg: str, field: str) -> int:
        f = next(f for f in self.reg(reg).fields if f.name == field)
        return (await self.read(reg) >> f.lsb) & ((1 << f.width) - 1)

    async def counter(self, name: str) -> int:
        try:
            return await self.read(name)
        except KeyError:
            lo = await self.read(f"{name}_LO")
            return lo | await self.read(f"{name}_HI") << 32

    async def wait_for(self, cond, what: str, cycles: int = 40_000):
        for _ in range(cycles // 16):
            if await cond():
                return
            await ClockCycles(self.dut.clk, 16)
        raise AssertionError(self.ctx(f"timeout waiting for {what}"))

    async def command(self, op: Op, via_register: bool = False, arg: int = 0, **fields):
        value = layout.command_value(self.config, op, arg=arg, **fields)
        if via_register:
            await self.write("CMD_ARG", arg)
            await self.write("CMD", value & 0xFFFFFFFF)
        else:
            self.cmd.send([value])


class Cache:
    """The test's model of the KV cache: region bases, ring models per class, the DDR image."""

    def __init__(self, tb: TB, head_dim: int, classes: dict[int, int], rings: dict[int, tuple[int, int, int]]):
        c = tb.config
        self.tb, self.c, self.head_dim = tb, c, head_dim
        self.row_bytes = layout.row_bytes(c, head_dim)
        self.classes = classes   # layer -> class (class >= n_classes: dropped)
        self.ring_cfg = rings    # class -> (C, S, W)
        self.rings = {k: RingModel(*cfg, max_tokens=c.kv_max_tokens) for k, cfg in rings.items()}
        self.cur: dict[int, int | None] = {k: None for k in rings}   # class -> current slot
        self.image = bytearray(RAM_SIZE)
        self.bases = {}
        self.written = self.dropped = self.commands = 0
        self.beats_checked = 0
        addr = 0x100 + tb.rng.randrange(64)
        for layer in range(c.max_layers):
            for head in range(c.max_kv_heads):
                for kv in range(2):
                    cap = rings.get(classes.get(layer, 0), (1,))[0]
                    self.bases[(layer, head, kv)] = addr
                    addr += cap * self.row_bytes + tb.rng.randrange(40)
        assert addr < RAM_SIZE

    async def program(self):
        tb, c = self.tb, self.c
        await tb.write("HEAD_DIM", self.head_dim)
        for (layer, head, kv), base in self.bases.items():
            await tb.write("REGION_INDEX", layout.region_index(c, 0, layer, head, kv))
            await tb.write("REGION_BASE_HI", 0)
            await tb.write("REGION_BASE_LO", base)
        await tb.write("LAYER_INDEX", 0)
        for layer in range(c.max_layers):
            await tb.write("LAYER_CLASS", self.classes[layer])
        for cls, (cap, sinks, window) in self.ring_cfg.items():
            await tb.write("RING_MAX_TOKENS", cap)
            await tb.write("RING_SINKS", sinks)
            await tb.write("RING_WINDOW", window)
            await tb.command(Op.CLEAR, via_register=True, cls=cls)
            self.commands += 1

    def vectors(self, n: int) -> np.ndarray:
        return (self.tb.np_rng.standard_normal((n, self.head_dim)) * 2).astype(self.tb.dtype)

    def send_token(self, layers=None):
        """One token: every head's K and V of each layer, ``append`` on each class's first vector."""
        tb, c = self.tb, self.c
        beats, appended = [], set()
        layers = range(c.max_layers) if layers is None else layers
        for layer in layers:
            cls = self.classes[layer]
            x = self.vectors(2 * c.max_kv_heads)
            for head in range(c.max_kv_heads):
                for kv in range(2):
                    append = cls in self.rings and cls not in appended
                    if append:
                        appended.add(cls)
                        self.cur[cls] = self.rings[cls].append().slot
                    vec = x[2 * head + kv]
                    if cls in self.rings and self.cur[cls] is not None:
                        row = golden.quantize(vec[None, :], self.c.fmt).reshape(-1).tobytes()
                        addr = self.bases[(layer, head, kv)] + self.cur[cls] * self.row_bytes
                        self.image[addr:addr + self.row_bytes] = row
                        self.written += 1
                    else:
                        self.dropped += 1
                    beats += self.kv_beats(vec, append, kv, head, layer)
        tb.kv.send(beats)

    def kv_beats(self, vec, append, kv, head, layer, seq=0, tlast_at=None):
        lanes = self.c.quant_lanes
        bits = elem_bits(vec).reshape(-1, lanes)
        user = layout.pack(self.tb.tag, append=append, kv=kv, head=head, layer=layer, seq=seq)
        n = len(bits)
        last_at = n - 1 if tlast_at is None else tlast_at
        return [layout.pack(self.tb.kv_layout, data=pack_lanes(row, ELEM_BITS), user=user, last=int(k == last_at))
                for k, row in enumerate(bits)]

    async def settle(self, what: str):
        """Wait until every sent vector is written or dropped and every command completed."""
        tb = self.tb

        async def done():
            if not tb.kv.idle or not tb.cmd.idle:
                return False
            return (await tb.read("VECTORS_WRITTEN") == self.written and
                    await tb.read("VECTORS_DROPPED") == self.dropped and
                    await tb.read("COMMANDS_DONE") == self.commands)
        try:
            await tb.wait_for(done, what)
        except AssertionError:
            got = [await tb.read(n) for n in ("VECTORS_WRITTEN", "VECTORS_DROPPED", "COMMANDS_DONE")]
            raise AssertionError(tb.ctx(f"{what}: written/dropped/done {got}, expected "
                                        f"{[self.written, self.dropped, self.commands]}"))

    def check_image(self, what: str):
        got = self.tb.ram.read(0, RAM_SIZE)
        for (layer, head, kv), base in self.bases.items():
            cap = self.ring_cfg.get(self.classes[layer], (1,))[0]
            for slot in range(cap):
                a = base + slot * self.row_bytes
                want, have = bytes(self.image[a:a + self.row_bytes]), got[a:a + self.row_bytes]
                assert have == want, self.tb.ctx(
                    f"{what}: layer {layer} head {head} kv {kv} slot {slot} at 0x{a:x}: "
                    f"{have.hex()} != golden {want.hex()}")

    def expected_read(self, layer: int, head: int, kv: int) -> list[dict]:
        """The beats of a READ: the ring's read order, each row dequantized, TLAST on the last."""
        c = self.c
        cls = self.classes[layer]
        beats = []
        per_row = self.head_dim // c.dequant_lanes
        for entry in self.rings[cls].read_order():
            a = self.bases[(layer, head, kv)] + entry.slot * self.row_bytes
            row = np.frombuffer(bytes(self.image[a:a + self.row_bytes]), np.uint8)
            vals = elem_bits(golden.dequantize(row, c.fmt, self.tb.dtype)).reshape(per_row, c.dequant_lanes)
            for r in vals:
                beats.append({"data": pack_lanes(r, ELEM_BITS), "pos": entry.pos, "error": 0, "last": 0})
        if beats:
            beats[-1]["last"] = 1
        return beats

    async def read_and_check(self, layer: int, head: int, kv: int, what: str, via_register=False, port=0):
        tb = self.tb
        sink = tb.outs[port]
        start = len(sink.items)
        want = self.expected_read(layer, head, kv)
        await tb.command(Op.READ, via_register=via_register, layer=layer, head=head, kv=kv, port=port)
        self.commands += 1
        await self.settle(f"{what}: READ layer {layer} head {head} kv {kv}")
        got = []
        for b in sink.items[start:]:
            u = unpack_fields(tb.out_layout, b)
            user = unpack_fields(layout.read_tag(self.c), u["user"])
            got.append({"data": u["data"], "pos": user["pos"], "error": user["error"], "last": u["last"]})
        assert len(got) == len(want), tb.ctx(f"{what}: READ gave {len(got)} beats, expected {len(want)}")
        for k, (g, w) in enumerate(zip(got, want)):
            assert g == w, tb.ctx(f"{what}: READ layer {layer} head {head} kv {kv} beat {k}: {g} != {w}")
        self.beats_checked += len(got)


def default_cache(tb: TB, head_dim: int) -> Cache:
    """Layer 0: class 0, sinks + a window that wraps; layer 1: class 1, a small window only; a third
    layer (when the build has one) in no class: its vectors drop."""
    c = tb.config
    classes = {0: 0, 1: 1}
    for layer in range(2, c.max_layers):
        classes[layer] = c.n_classes  # beyond the build's classes
    rings = {0: (7, 2, 4), 1: (5, 0, 3)}
    return Cache(tb, head_dim, classes, rings)


@cocotb.test()
async def write_and_read(dut):
    """Tokens appended through sink + window eviction and the ring's wrap: the DDR image vs golden
    bytes, READs in attention order (stream and register commands), EVICT_UPTO, drops, counters."""
    tb = TB(dut)
    await tb.reset()
    c = tb.config
    head_dim = c.max_head_dim
    cache = default_cache(tb, head_dim)
    await cache.program()
    await tb.write("CTRL", 1)
    # A vector before any append since CLEAR: dropped.
    tb.kv.send(cache.kv_beats(cache.vectors(1)[0], 0, 0, 0, 0))
    cache.dropped += 1
    n_tokens = int(os.environ.get("KVPATH_KVC_TOKENS", "9"))
    for t in range(n_tokens):
        cache.send_token()
        if t in (2, n_tokens // 2):
            await cache.settle(f"token {t}")
            await cache.read_and_check(0, 1, 1, f"token {t}", via_register=t == 2)
    await cache.settle("all tokens")
    cache.check_image("all tokens")
    for layer in range(2):
        for head in range(c.max_kv_heads):
            for kv in range(2):
                await cache.read_and_check(layer, head, kv, "all tokens", via_register=(head + kv) % 2 == 1)
    # EVICT_UPTO on class 0, then READ sees only sinks + the kept window.
    upto = cache.rings[0].appended - 2
    cache.rings[0].evict_upto(upto)
    await tb.command(Op.EVICT_UPTO, arg=upto, cls=0)
    cache.commands += 1
    await cache.read_and_check(0, 0, 0, "after EVICT_UPTO")
    # Ring status registers of class 0.
    await tb.write("RING_SEL", 0)
    assert await tb.read_field("RING_STATUS", "ring_n_valid") == cache.rings[0].n_valid, tb.ctx("RING_STATUS")
    assert await tb.read("RING_APPENDED") == cache.rings[0].appended, tb.ctx("RING_APPENDED")
    # A READ of a layer with no class and a command beyond the build: cmd_error, no beats.
    errors = 0
    if c.max_layers > 2:
        start = len(tb.outs[0].items)
        await tb.command(Op.READ, layer=2)
        cache.commands += 1
        errors += 1
        await cache.settle("READ of a classless layer")
        assert len(tb.outs[0].items) == start, tb.ctx("READ of a classless layer gave beats")
    if c.max_seqs < 1 << layout.bits(c.max_seqs):
        await tb.command(Op.EVICT_UPTO, seq=c.max_seqs, via_register=True)
        cache.commands += 1
        errors += 1
    await cache.settle("bad commands")
    assert await tb.read("CMD_ERRORS") == errors, tb.ctx("CMD_ERRORS")
    assert cache.beats_checked >= 8 * n_tokens, tb.ctx(f"only {cache.beats_checked} READ beats checked")
    assert sum(1 for b in cache.image if b) > cache.written * cache.row_bytes // 2, tb.ctx("empty image")
    dut._log.info(f"write_and_read: {cache.written} rows written, {cache.dropped} dropped, "
                  f"{cache.beats_checked} READ beats checked, {cache.commands} commands")
    # Counters.
    hd_blocks = head_dim // 32
    assert await tb.counter("BLOCKS_WRITTEN") == cache.written * hd_blocks, tb.ctx("BLOCKS_WRITTEN")
    assert await tb.counter("DDR_BYTES_WRITTEN") == cache.written * cache.row_bytes, tb.ctx("DDR_BYTES_WRITTEN")
    assert await tb.read("DDR_ERRORS") == 0 and await tb.read("FRAME_ERRORS") == 0, tb.ctx("error counters")
    status = await tb.read("STATUS")
    assert status >> STICKY_BIT["vector_dropped"] & 1, tb.ctx("STATUS.vector_dropped")
    assert not status >> STICKY_BIT["ddr_error"] & 1, tb.ctx("STATUS.ddr_error")
    assert bool(status >> STICKY_BIT["cmd_error"] & 1) == bool(errors), tb.ctx("STATUS.cmd_error")
    tb.check.assert_clean(tb.ctx(""))


@cocotb.test()
async def errors_and_reset(dut):
    """A write into an error range: DDR_ERRORS, STATUS.ddr_error, irq; the READ of it flags its last
    beat; a frame error; CTRL.enable gating; counter_clear; soft reset empties the rings."""
    tb = TB(dut)
    await tb.reset()
    c = tb.config
    cache = default_cache(tb, c.max_head_dim)
    await cache.program()
    # Disabled: nothing is taken.
    cache.send_token(layers=[0])
    await ClockCycles(dut.clk, 100)
    assert await tb.read("VECTORS_WRITTEN") == 0 and not tb.kv.idle, tb.ctx("CTRL.enable = 0 took vectors")
    await tb.write("CTRL", 1)
    await cache.settle("after enable")
    # Slot 1 of (layer 0, head 0, K) answers SLVERR: the next token's row write fails.
    base = cache.bases[(0, 0, 0)]
    bad = base + cache.rings[0].slot_of(cache.rings[0].appended) * cache.row_bytes
    tb.errors.add(bad, cache.row_bytes, 2)
    await tb.write("IRQ_ENABLE", 1 << STICKY_BIT["ddr_error"])
    assert not dut.irq.value, tb.ctx("irq before any error")
    cache.send_token(layers=[0])
    cache.written -= 1   # the failed row is not counted; its bytes are not in the model either
    cache.image[bad:bad + cache.row_bytes] = tb.ram.read(bad, cache.row_bytes)
    await cache.settle("write error")
    assert await tb.read("DDR_ERRORS") == 1, tb.ctx("DDR_ERRORS after a failed row write")
    assert await tb.read_field("STATUS", "ddr_error") == 1, tb.ctx("STATUS.ddr_error")
    assert dut.irq.value == 1, tb.ctx("irq")
    await tb.write("STATUS", 1 << STICKY_BIT["ddr_error"])
    assert dut.irq.value == 0, tb.ctx("irq after W1C")
    # READ of that region: the error flag on its last beat.
    start = len(tb.outs[0].items)
    await tb.command(Op.READ, layer=0, head=0, kv=0)
    cache.commands += 1
    await cache.settle("READ with error")
    beats = [unpack_fields(tb.out_layout, b) for b in tb.outs[0].items[start:]]
    assert beats and beats[-1]["last"], tb.ctx("READ with error: no TLAST")
    assert unpack_fields(layout.read_tag(c), beats[-1]["user"])["error"] == 1, tb.ctx("read_tag.error")
    assert await tb.read("DDR_ERRORS") >= 2, tb.ctx("DDR_ERRORS after a failed READ run")
    tb.errors.regions.clear()
    # A vector with TLAST one beat early: counted as a frame error, still written as counted.
    vec = cache.vectors(1)[0]
    cache.cur[0] = cache.rings[0].append().slot
    row = golden.quantize(vec[None, :], c.fmt).reshape(-1).tobytes()
    addr = cache.bases[(0, 0, 0)] + cache.cur[0] * cache.row_bytes
    cache.image[addr:addr + cache.row_bytes] = row
    cache.written += 1
    tb.kv.send(cache.kv_beats(vec, 1, 0, 0, 0, tlast_at=0))
    await cache.settle("frame error")
    assert await tb.read("FRAME_ERRORS") == 1, tb.ctx("FRAME_ERRORS")
    assert await tb.read_field("STATUS", "frame_error") == 1, tb.ctx("STATUS.frame_error")
    cache.check_image("after errors")
    # counter_clear, then soft reset: rings unconfigured, vectors drop until CLEARed again.
    await tb.write("CTRL", 1 | 4)
    assert await tb.read("VECTORS_WRITTEN") == 0, tb.ctx("counter_clear")
    await tb.write("CTRL", 1 | 2)
    await tb.wait_for(lambda: _not_resetting(tb), "soft reset")
    await tb.write("RING_SEL", 0)
    assert await tb.read_field("RING_STATUS", "ring_configured") == 0, tb.ctx("ring configured after soft reset")
    assert await tb.read("COMMANDS_DONE") == 0, tb.ctx("counters after soft reset")
    cache.written = cache.dropped = cache.commands = 0
    tb.kv.send(cache.kv_beats(cache.vectors(1)[0], 1, 0, 0, 0))
    cache.dropped += 1
    await cache.settle("append after soft reset")
    tb.check.assert_clean(tb.ctx(""))


async def _not_resetting(tb: TB) -> bool:
    return not await tb.read_field("STATUS", "resetting")
