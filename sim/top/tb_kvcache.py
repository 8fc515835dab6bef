"""cocotb tests of the KV cache top (hdl/top/kvcache.py, docs/kvcache.md) against the golden models.

Registers through cocotbext-axi's AxiLiteMaster at the register map's addresses, DDR in cocotbext-axi
RAMs with error injection (``sim/lib/axi_ram.py``), streams through ``sim/lib/streams.py``. The
expected DDR image is built from ``kvpath.golden`` (the quantized bytes of each row) and
``kvpath.golden.ring`` (the slot each token goes to); READs are checked against the golden
dequantization of the expected rows in ``RingModel.read_order``.

Environment: ``KVPATH_KVC_CONFIG`` (JSON of the KVPathConfig fields), ``KVPATH_SEED`` (every random
choice; in every assertion message), ``KVPATH_KVC_PAUSES`` (``none`` or ``mixed``: stream and AXI
channel pauses), ``KVPATH_KVC_TOKENS`` (tokens appended in ``write_and_read``), ``KVPATH_KVC_SOAK_BEATS``
(beats the ``soak`` test moves at least: K/V in + READ out + AXI W + AXI R, counted on the buses).

Static-scale formats: the testbench makes a random scale table at start-up and loads it when it
first programs the tables after a reset: half through ``memset`` and, at the same time, half through
SCALE_INDEX / SCALE_DATA (all through the registers when the engine model runs beside, which sees
only those); rows are ``kvpath.golden.static`` codes of the vector's (layer, head, kv) and READs are
dequantized with the READ's. ``errors_and_reset`` also has refused scale writes (an index beyond the
cache, by register and by ``memset``: STATUS.bad_scale_index).

``soak``, ``overflow`` and ``reset_mid_stream`` also run the engine model (``kvpath.golden.kvcache``,
``KVCacheModel``) beside the RTL: every register write, K/V beat and command goes to both, and the
counters, STATUS and DDR image are compared with it.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import time
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
from kvpath.golden import static
from kvpath.golden.hadamard import ref_hadamard
from kvpath.golden.kvcache import POS_LIMIT, KVCacheModel
from kvpath.golden.ring import RingConfigError, RingFullError, RingModel
from kvpath.layout import Op
from kvpath.regmap import build_map
from kvpath.regmap.map import STICKY
from kvpath.sim.lib.axi_ram import ErrorMap, ErrorRamRead, ErrorRamWrite
from kvpath.sim.lib.streams import (HandshakeChecker, StreamSink, StreamSource, pack_fields, pack_lanes,
                                    pause_generator, unpack_fields, unpack_lanes)
from kvpath.hdl.ddr.engine import kv_layout
from kvpath.hdl.ddr.read_port import out_layout
from kvpath.hdl.static.write_port import ScaleWrite

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
        self.model: KVCacheModel | None = None   # the engine model, fed everything the RTL gets
        self.expected: list[list[dict]] = [[] for _ in range(c.read_ports)]   # READ beats owed, per port
        self.static = self.f.needs_scale_cache
        self.table = self.random_table() if self.static else None
        self.scales_loaded = False   # the cache (outside every reset) holds self.table

    def random_table(self) -> np.ndarray:
        """A scale cache table as a driver makes it: per entry a scale for the vectors' range (a few
        entries left zero: their rows quantize to 0)."""
        c = self.config
        table = static.empty_table(c.fmt, c)
        for k in range(len(table)):
            if self.rng.random() < 0.03:
                continue
            # About the vectors' range (|x| < ~6) over qmax: few zero codes, some saturated.
            value = 6.0 / static.QMAX[self.f.code_bits] * 2.0 ** self.rng.uniform(-1.5, 1)
            table[k] = static.make_entry(static.round_scale(value, c.elem), c.elem)
        return table

    async def load_scales(self):
        """The table into the cache: half by ``memset`` while the other half goes through the
        registers (both into the one write port); all by registers when the engine model runs."""
        table, dut = self.table, self.dut
        half = len(table) // 2 if self.model is None else 0
        memset = StreamSource(dut, "memset", self.pause())
        memset.send([pack_fields(ScaleWrite, index=k, value=int(table[k])) for k in range(half)])
        await self.write("SCALE_INDEX", half)
        for k in range(half, len(table)):
            await self.write("SCALE_DATA", int(table[k]))
        await self.until(lambda: memset.idle, "memset writes taken")
        memset.stop()
        dut.memset__valid.value = 0
        assert not await self.read_field("STATUS", "bad_scale_index"), self.ctx("a scale write was refused")
        self.scales_loaded = True

    def quantize_row(self, vec: np.ndarray, layer: int, head: int, kv: int) -> bytes:
        c = self.config
        if self.static:
            return static.quantize(vec[None, :], c.fmt, self.table, layer, head, kv, config=c).reshape(-1).tobytes()
        if c.rotation:  # the engine rotates before it quantizes
            bits = ref_hadamard(vec.view(np.uint16), c.rotation)[0].astype(np.uint16)
            vec = bits.view(vec.dtype)
        return golden.quantize(vec[None, :], c.fmt).reshape(-1).tobytes()

    def dequantize_row(self, row: np.ndarray, layer: int, head: int, kv: int) -> np.ndarray:
        c = self.config
        if self.static:
            return static.dequantize(row, c.fmt, self.table, layer, head, kv, dtype=self.dtype, config=c)
        return golden.dequantize(row, c.fmt, self.dtype)

    def watch(self):
        """Also count (and hold to the stream rules) B, the K/V and command inputs and the read outputs."""
        dut = self.dut
        self.check.add_axi(dut, "m_axi0_", "b", ("resp",))
        for name in ["s_axis_kv", "s_axis_cmd"] + [f"m_axis_kv{p}" for p in range(self.config.read_ports)]:
            self.check.add_stream(dut, name)
        for ch in ("aw", "ar"):   # burst lengths, to know how many W / R beats each started burst owes
            self.check.kept[ch] = []

    def owed(self, ch: str) -> int:
        """Beats the started bursts of ``ch`` ("aw" or "ar") carry in all: sum of (len + 1)."""
        return sum(b["len"] + 1 for b in self.check.kept[ch])

    def beats(self) -> dict[str, int]:
        n = self.check.count
        return {"in": n["s_axis_kv"], "out": sum(n[f"m_axis_kv{p}"] for p in range(self.config.read_ports)),
                "axi_w": n["w"], "axi_r": n["r"], "aw": n["aw"], "ar": n["ar"], "b": n["b"],
                "cmd": n["s_axis_cmd"]}

    def attach_model(self):
        """A fresh engine model whose DDR starts as the RAM's current contents."""
        self.model = KVCacheModel(self.config, mem_bytes=RAM_SIZE, mem_base=0)
        self.model.mem[:] = self.ram.read(0, RAM_SIZE)
        if self.static and self.scales_loaded:   # the scale cache keeps its contents
            self.model.scale_table[:] = self.table

    def send_kv(self, beats):
        self.kv.send(beats)
        if self.model is not None:
            tuples = []
            for b in beats:
                u = unpack_fields(self.kv_layout, b)
                tuples.append((u["data"], u["user"], u["last"]))
            self.model.send_kv(tuples)

    async def until(self, cond, what: str, cycles: int = 200_000):
        """Wait, one clock at a time, for a condition on the testbench's own state (no bus traffic)."""
        for _ in range(cycles):
            if cond():
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError(self.ctx(f"timeout ({cycles} cycles) waiting for {what}"))

    async def compare_model(self, what: str, status_mask: int = ~0):
        """Every counter but CYCLES, and STATUS (busy masked), RTL vs the engine model."""
        m = self.model
        for r in self.regmap.registers:
            if r.group != "counters" or r.name.startswith("CYCLES"):
                continue
            hw, want = await self.read(r.name), m.read32(r.offset)
            assert hw == want, self.ctx(f"{what}: {r.name} = {hw}, engine model {want}")
        f = next(f for f in self.reg("STATUS").fields if f.name == "busy")
        mask = status_mask & ~(1 << f.lsb)
        hw, want = await self.read("STATUS"), m.read32(self.reg("STATUS").offset)
        assert hw & mask == want & mask, self.ctx(f"{what}: STATUS 0x{hw:x}, engine model 0x{want:x}")
        got = self.ram.read(0, RAM_SIZE)
        if got != bytes(m.mem):
            a = next(k for k in range(RAM_SIZE) if got[k] != m.mem[k])
            raise AssertionError(self.ctx(f"{what}: DDR differs from the engine model's from 0x{a:x}: "
                                          f"{got[a:a + 16].hex()} != {bytes(m.mem[a:a + 16]).hex()}"))

    def decode_out(self, port: int, start: int = 0) -> list[dict]:
        got = []
        for b in self.outs[port].items[start:]:
            u = unpack_fields(self.out_layout, b)
            user = unpack_fields(layout.read_tag(self.config), u["user"])
            got.append({"data": u["data"], "pos": user["pos"], "error": user["error"], "last": u["last"]})
        return got

    def check_outputs(self, what: str, start: int = 0):
        """Every port's output beats from ``start`` are exactly the expected ones, in order."""
        for p in range(self.config.read_ports):
            got, want = self.decode_out(p, start), self.expected[p]
            for k, (g, w) in enumerate(zip(got, want)):
                assert g == w, self.ctx(f"{what}: port {p} output beat {k}: {g} != expected {w}")
            assert len(got) == len(want), self.ctx(f"{what}: port {p} gave {len(got)} beats, expected {len(want)}")

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
        if self.model is not None:
            self.model.write32(self.reg(name).offset, value)

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
            if self.model is not None:
                self.model.send_cmd([value])


class Cache:
    """The test's model of the KV cache: region bases, ring models per class, the DDR image."""

    def __init__(self, tb: TB, head_dim: int, classes: dict[int, int], rings: dict[int, tuple[int, int, int]]):
        c = tb.config
        self.tb, self.c, self.head_dim = tb, c, head_dim
        self.row_bytes = layout.row_bytes(c, head_dim)
        self.classes = classes   # layer -> class (class >= n_classes: dropped)
        self.ring_cfg = rings    # class -> (C, S, W)
        self.rings = {}           # class -> RingModel, for the good configurations (others: cfg_err)
        for k, cfg in rings.items():
            try:
                self.rings[k] = RingModel(*cfg, max_tokens=c.kv_max_tokens, pos_limit=POS_LIMIT)
            except RingConfigError:
                pass
        self.cur: dict[int, int | None] = {k: None for k in rings}   # class -> current slot
        self.image = bytearray(tb.ram.read(0, RAM_SIZE))
        self.bases = {}
        self.written = self.dropped = self.commands = 0
        self.rows_at: set[int] = set()   # addresses of the rows written (slots are reused)
        self.beats_checked = 0
        self.w_beats = self.r_beats = 0   # AXI W / R beats the rows written and the READs need
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
        if tb.static and not tb.scales_loaded:
            await tb.load_scales()
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
                    append = cls in self.ring_cfg and cls not in appended
                    if append:
                        appended.add(cls)
                        try:
                            self.cur[cls] = self.rings[cls].append().slot
                        except (KeyError, RingFullError):   # unconfigured or position counter full
                            self.cur[cls] = None
                    vec = x[2 * head + kv]
                    if cls in self.rings and self.cur[cls] is not None:
                        row = tb.quantize_row(vec, layer, head, kv)
                        addr = self.bases[(layer, head, kv)] + self.cur[cls] * self.row_bytes
                        self.image[addr:addr + self.row_bytes] = row
                        self.written += 1
                        self.rows_at.add(addr)
                        self.w_beats += granules(addr, self.row_bytes, self.c.bus_bytes)
                    else:
                        self.dropped += 1
                    beats += self.kv_beats(vec, append, kv, head, layer)
        tb.send_kv(beats)

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
            vals = elem_bits(self.tb.dequantize_row(row, layer, head, kv)).reshape(per_row, c.dequant_lanes)
            for r in vals:
                beats.append({"data": pack_lanes(r, ELEM_BITS), "pos": entry.pos, "error": 0, "last": 0})
        if beats:
            beats[-1]["last"] = 1
        return beats

    async def issue_read(self, layer: int, head: int, kv: int, what: str, via_register=False, port=0) -> int:
        """Issue a READ without waiting; its expected beats join ``tb.expected[port]`` (cross-checked
        against the engine model's). Returns the number of beats expected."""
        tb = self.tb
        cls = self.classes[layer]
        ring = self.rings.get(cls)
        want = self.expected_read(layer, head, kv) if ring is not None else []
        if ring is not None:
            base = self.bases[(layer, head, kv)]
            for run in KVCacheModel._plan(ring):
                self.r_beats += granules(base + run[0].slot * self.row_bytes, len(run) * self.row_bytes,
                                         self.c.bus_bytes)
        await tb.command(Op.READ, via_register=via_register, layer=layer, head=head, kv=kv, port=port)
        self.commands += 1
        if tb.model is not None:
            model_beats = []
            for tdata, tuser, tlast in (tb.model.receive_kv(port, len(want)) if want else []):
                user = unpack_fields(layout.read_tag(self.c), tuser)
                model_beats.append({"data": tdata, "pos": user["pos"], "error": user["error"], "last": int(tlast)})
            assert model_beats == want, tb.ctx(f"{what}: the engine model's READ differs from the ring model's")
            assert not tb.model.busy, tb.ctx(f"{what}: the engine model owes more READ beats")
        tb.expected[port] += want
        return len(want)

    async def read_and_check(self, layer: int, head: int, kv: int, what: str, via_register=False, port=0):
        tb = self.tb
        start = len(tb.outs[port].items)
        n = await self.issue_read(layer, head, kv, what, via_register=via_register, port=port)
        want = tb.expected[port][len(tb.expected[port]) - n:]
        await self.settle(f"{what}: READ layer {layer} head {head} kv {kv}")
        got = tb.decode_out(port, start)
        assert len(got) == len(want), tb.ctx(f"{what}: READ gave {len(got)} beats, expected {len(want)}")
        for k, (g, w) in enumerate(zip(got, want)):
            assert g == w, tb.ctx(f"{what}: READ layer {layer} head {head} kv {kv} beat {k}: {g} != {w}")
        self.beats_checked += len(got)

def granules(addr: int, n: int, unit: int) -> int:
    """Bus beats a transfer of ``n`` bytes at ``addr`` needs."""
    return (addr + n - 1) // unit - addr // unit + 1 if n else 0


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
                # Every read port (with several: each has its own scale cache copy in static builds).
                await cache.read_and_check(layer, head, kv, "all tokens", via_register=(head + kv) % 2 == 1,
                                           port=(2 * head + kv + layer) % c.read_ports)
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
    # (Rings hold at most 7 tokens: more tokens do not make more beats to read.)
    assert cache.beats_checked >= 8 * min(n_tokens, 9), tb.ctx(f"only {cache.beats_checked} READ beats checked")
    assert sum(1 for b in cache.image if b) > len(cache.rows_at) * cache.row_bytes // 2, tb.ctx("empty image")
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
    row = tb.quantize_row(vec, 0, 0, 0)
    addr = cache.bases[(0, 0, 0)] + cache.cur[0] * cache.row_bytes
    cache.image[addr:addr + cache.row_bytes] = row
    cache.written += 1
    tb.kv.send(cache.kv_beats(vec, 1, 0, 0, 0, tlast_at=0))
    await cache.settle("frame error")
    assert await tb.read("FRAME_ERRORS") == 1, tb.ctx("FRAME_ERRORS")
    assert await tb.read_field("STATUS", "frame_error") == 1, tb.ctx("STATUS.frame_error")
    cache.check_image("after errors")
    if tb.static:
        # Refused scale writes: an index beyond the cache, by register and by memset; the cache
        # keeps its contents (the READ below still matches the table).
        entries = len(tb.table)
        await tb.write("SCALE_INDEX", entries)
        await tb.write("SCALE_DATA", 0x3C00_3C00)
        assert await tb.read_field("STATUS", "bad_scale_index") == 1, tb.ctx("bad_scale_index (register)")
        await tb.write("STATUS", 1 << STICKY_BIT["bad_scale_index"])
        assert await tb.read_field("STATUS", "bad_scale_index") == 0, tb.ctx("bad_scale_index W1C")
        memset = StreamSource(dut, "memset")
        memset.send([pack_fields(ScaleWrite, index=entries + 5, value=0)])
        await tb.until(lambda: memset.idle, "memset write taken")
        memset.stop()
        dut.memset__valid.value = 0
        assert await tb.read_field("STATUS", "bad_scale_index") == 1, tb.ctx("bad_scale_index (memset)")
        await tb.write("STATUS", 1 << STICKY_BIT["bad_scale_index"])
        await cache.read_and_check(0, 0, 0, "after refused scale writes")
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


# --- reliability: soak, overflow, soft reset mid-stream -------------------------------------------

def _ring_status(tb: TB):
    async def get(cls: int) -> dict:
        await tb.write("RING_SEL", cls << 16)
        st = await tb.read("RING_STATUS")
        fields = {f.name: (st >> f.lsb) & ((1 << f.width) - 1) for f in tb.reg("RING_STATUS").fields}
        fields["appended"] = await tb.read("RING_APPENDED")
        return fields
    return get


async def check_rings(tb: TB, cache: Cache, what: str):
    """RING_STATUS / RING_APPENDED of every class against the ring model; and that the registers tell
    a driver exactly when the next append would evict (what an overflow=error policy refuses on)."""
    get = _ring_status(tb)
    for cls, cfg in cache.ring_cfg.items():
        st = await get(cls)
        ring = cache.rings.get(cls)
        if ring is None:
            assert (st["ring_configured"], st["ring_cfg_err"], st["ring_n_valid"]) == (0, 1, 0), tb.ctx(
                f"{what}: class {cls} with bad configuration {cfg}: RING_STATUS {st}")
            continue
        want = {"ring_configured": 1, "ring_cfg_err": 0, "ring_n_valid": ring.n_valid, "appended": ring.appended}
        assert st == want, tb.ctx(f"{what}: class {cls} {cfg}: RING_STATUS/APPENDED {st} != ring model {want}")
        _, s, w = cfg
        window = st["ring_n_valid"] - min(st["appended"], s)
        would_evict = st["appended"] >= s and window == w
        assert would_evict == ring.would_evict(), tb.ctx(
            f"{what}: class {cls} {cfg}: registers say would_evict={would_evict}, ring model {ring.would_evict()}")


async def _wait_kv_taken(tb: TB, what: str):
    await tb.until(lambda: tb.kv.idle, f"{what}: s_axis_kv beats taken")


async def _wait_cmd_taken(tb: TB, what: str):
    await tb.until(lambda: tb.cmd.idle, f"{what}: s_axis_cmd commands taken")


async def _drain_outputs(tb: TB, what: str):
    for p in range(tb.config.read_ports):
        await tb.until(lambda p=p: len(tb.outs[p].items) >= len(tb.expected[p]), f"{what}: READ beats on port {p}")
    await ClockCycles(tb.dut.clk, 50)   # nothing more may come


@cocotb.test()
async def soak(dut):
    """Random pauses on every channel; tokens through many ring wraps with evictions; READs (stream and
    register) and EVICT_UPTO interleaved. Counted on the buses: every K/V beat in, every READ beat out
    (exactly the expected ones in order), AXI W/R beats as the rows and runs need, every burst
    answered; counters, STATUS and the DDR image equal the engine model's."""
    tb = TB(dut)
    tb.watch()
    await tb.reset()
    c = tb.config
    target = int(os.environ.get("KVPATH_KVC_SOAK_BEATS", "3000"))
    rng = tb.rng
    classes = {0: 0, 1: 1}
    for layer in range(2, c.max_layers):
        classes[layer] = c.n_classes   # beyond the build's classes: dropped
    rings = {0: rng.choice([(7, 2, 4), (7, 2, 5), (8, 1, 7), (6, 3, 2)]),
             1: rng.choice([(5, 0, 3), (5, 0, 5), (4, 0, 4), (3, 0, 1)])}
    cache = Cache(tb, c.max_head_dim, classes, rings)
    tb.attach_model()
    await cache.program()
    await tb.write("CTRL", 1)
    beats_per_vec = cache.head_dim // c.quant_lanes
    tokens = reads = evicts = reg_cmds = 0
    t0 = time.perf_counter()
    while sum(tb.beats()[k] for k in ("in", "out", "axi_w", "axi_r")) < target:
        for _ in range(rng.randint(1, 4)):
            cache.send_token()
            tokens += 1
        # Keep about a token queued; no busy loop.
        await tb.until(lambda: len(tb.kv.queue) <= 2 * 4 * c.max_kv_heads * beats_per_vec, "s_axis_kv to drain")
        if rng.random() < 0.4:
            continue
        # Commands see exactly the tokens before them: every beat taken first, and the next token is
        # queued only after the commands were taken (a READ then holds the write path).
        await _wait_kv_taken(tb, "soak")
        for _ in range(rng.randint(1, 4)):
            via_register = rng.random() < 0.3
            if via_register:
                await _wait_cmd_taken(tb, "soak")   # keep the commands in order
                reg_cmds += 1
            if rng.random() < 0.2:
                cls = rng.choice(list(cache.rings))
                ring = cache.rings[cls]
                upto = max(0, ring.appended - rng.randint(0, ring.n_window + 1))
                ring.evict_upto(upto)
                await tb.command(Op.EVICT_UPTO, via_register=via_register, arg=upto, cls=cls)
                cache.commands += 1
                evicts += 1
            else:
                layer, head, kv = rng.randrange(2), rng.randrange(c.max_kv_heads), rng.randrange(2)
                await cache.issue_read(layer, head, kv, f"soak READ {reads}", via_register=via_register)
                reads += 1
        await _wait_cmd_taken(tb, "soak")
    await _wait_kv_taken(tb, "soak end")
    await _drain_outputs(tb, "soak end")
    await cache.settle("soak end")
    n = tb.beats()
    wall = time.perf_counter() - t0
    total = n["in"] + n["out"] + n["axi_w"] + n["axi_r"]
    dut._log.info(f"soak totals: {total} beats (K/V in {n['in']}, READ out {n['out']}, AXI W {n['axi_w']}, "
                  f"AXI R {n['axi_r']}); AW {n['aw']}, B {n['b']}, AR {n['ar']} bursts; {n['cmd']} stream commands, "
                  f"{reg_cmds} register commands; {tokens} tokens, {cache.written} rows written, {cache.dropped} "
                  f"dropped, {reads} READs, {evicts} EVICT_UPTO; rings {rings} appended "
                  f"{ {k: r.appended for k, r in cache.rings.items()} }; {wall:.1f} s wall")
    # Nothing lost, nothing duplicated.
    assert total >= target, tb.ctx(f"soak moved {total} beats, fewer than KVPATH_KVC_SOAK_BEATS={target}")
    assert n["in"] == tb.kv.sent == (cache.written + cache.dropped) * beats_per_vec, tb.ctx(
        f"K/V beats: {n['in']} on the bus, {tb.kv.sent} sent, {cache.written}+{cache.dropped} vectors")
    tb.check_outputs("soak")
    assert await tb.read("VECTORS_WRITTEN") == cache.written, tb.ctx("VECTORS_WRITTEN")
    assert await tb.read("VECTORS_DROPPED") == cache.dropped, tb.ctx("VECTORS_DROPPED")
    assert n["axi_w"] == cache.w_beats == tb.owed("aw"), tb.ctx(
        f"AXI W beats {n['axi_w']}, rows need {cache.w_beats}, AW bursts carry {tb.owed('aw')}")
    assert n["axi_r"] == cache.r_beats == tb.owed("ar"), tb.ctx(
        f"AXI R beats {n['axi_r']}, READ runs need {cache.r_beats}, AR bursts carry {tb.owed('ar')}")
    assert n["aw"] == n["b"], tb.ctx(f"{n['aw']} write bursts, {n['b']} responses")
    for cls, ring in cache.rings.items():
        assert ring.appended >= 3 * ring.capacity or total < 20_000, tb.ctx(
            f"class {cls}: only {ring.appended} appends for {ring.capacity} slots")
    # Counters, STATUS, DDR against the engine model; DDR against the golden rows.
    await tb.compare_model("soak end")
    cache.check_image("soak end")
    hd_blocks = cache.head_dim // 32
    assert await tb.counter("BLOCKS_WRITTEN") == cache.written * hd_blocks, tb.ctx("BLOCKS_WRITTEN")
    assert await tb.counter("BLOCKS_READ") == n["out"] * c.dequant_lanes // 32, tb.ctx("BLOCKS_READ")
    assert await tb.counter("DDR_BYTES_WRITTEN") == cache.written * cache.row_bytes, tb.ctx("DDR_BYTES_WRITTEN")
    assert await tb.counter("DDR_BYTES_READ") == n["out"] // (cache.head_dim // c.dequant_lanes) * cache.row_bytes, \
        tb.ctx("DDR_BYTES_READ")
    assert await tb.read("COMMANDS_DONE") == cache.commands, tb.ctx("COMMANDS_DONE")
    for name in ("DDR_ERRORS", "FRAME_ERRORS", "CMD_ERRORS"):
        assert await tb.read(name) == 0, tb.ctx(name)
    await check_rings(tb, cache, "soak end")
    tb.check.assert_clean(tb.ctx(""))


@cocotb.test()
async def overflow(dut):
    """Appending past capacity with every ring configuration the registers allow: full attention at
    KV_MAX_TOKENS (0 sinks, window = cap), sink + window (W = C - S), sliding window, spare slots
    (W < C - S), EVICT_UPTO after the wrap; refused configurations (C > KV_MAX_TOKENS, W = 0,
    S + W > C: every append refused, READ a command error); the position counter's limit (state
    injected, simulators with internal access). Responses, RING_STATUS, STATUS, counters and read
    order against the ring and engine models."""
    tb = TB(dut)
    tb.watch()
    await tb.reset()
    c = tb.config
    cap = c.kv_max_tokens
    classes = {0: 0, 1: 1}
    for layer in range(2, c.max_layers):
        classes[layer] = c.n_classes
    tb.attach_model()
    await tb.write("CTRL", 1)
    variants = [
        ("full attention at KV_MAX_TOKENS / sliding window", {0: (cap, 0, cap), 1: (4, 0, 4)}),
        ("sink + window / spare slots", {0: (6, 2, 4), 1: (7, 2, 3)}),
        ("refused: C > KV_MAX_TOKENS / W = 0", {0: (cap + 1, 0, cap), 1: (4, 0, 0)}),
        ("refused: S + W > C / sinks only past the window", {0: (5, 3, 3), 1: (3, 2, 1)}),
    ]
    for name, rings in variants:
        cache = Cache(tb, c.max_head_dim, classes, rings)
        await tb.write("CTRL", 1 | 4)     # counter_clear: each variant counts from zero
        await cache.program()
        await tb.write("STATUS", 0xFF)   # W1C the sticky bits
        good = {k: r for k, r in cache.rings.items()}
        n_tokens = max([r.capacity + 2 * (r.capacity - r.n_sink) + 1 for r in good.values()] + [3])
        checkpoints = {n_tokens}
        for r in good.values():
            checkpoints |= {r.n_sink + r.n_window, r.n_sink + r.n_window + 1}   # full; first overflow
        dropped_before = cache.dropped
        for t in range(1, n_tokens + 1):
            layers = [0, 1] if t % 4 else None   # every fourth token also sends the classless layer
            cache.send_token(layers=layers)
            if t in checkpoints:
                await cache.settle(f"{name}: token {t}")
                await check_rings(tb, cache, f"{name}: token {t}")
                for layer in (0, 1):
                    await cache.read_and_check(layer, t % c.max_kv_heads, t % 2, f"{name}: token {t}",
                                               via_register=layer == 1)
        if name.startswith("sink + window"):
            # EVICT_UPTO after the wrap, then more appends: the window refills from the new floor.
            ring = cache.rings[0]
            upto = ring.appended - 1
            ring.evict_upto(upto)
            await tb.command(Op.EVICT_UPTO, arg=upto, cls=0)
            cache.commands += 1
            await cache.read_and_check(0, 0, 1, f"{name}: after EVICT_UPTO")
            for t in range(ring.n_window + 2):
                cache.send_token(layers=[0, 1])
            await cache.settle(f"{name}: after EVICT_UPTO and refill")
            await check_rings(tb, cache, f"{name}: after refill")
            await cache.read_and_check(0, 1, 0, f"{name}: after refill")
        bad = [k for k in rings if k not in good]
        for k in bad:   # READ of a refused ring: a command error, no beat
            n = await cache.issue_read(k, 0, 0, f"{name}: READ of refused class {k}")
            assert n == 0
        await cache.settle(f"{name}: end")
        cache.check_image(f"{name}: end")
        status = await tb.read("STATUS")
        assert bool(status >> STICKY_BIT["vector_dropped"] & 1) == (cache.dropped > dropped_before), tb.ctx(
            f"{name}: STATUS.vector_dropped")
        assert bool(status >> STICKY_BIT["cmd_error"] & 1) == bool(bad), tb.ctx(f"{name}: STATUS.cmd_error")
        await tb.compare_model(f"{name}: end")
        tb.check_outputs(f"{name}: end")
        dut._log.info(f"overflow {name}: {n_tokens} tokens, appended "
                      f"{ {k: r.appended for k, r in good.items()} }, {cache.written} rows written, "
                      f"{cache.dropped} dropped")
    await _position_limit(tb, classes)
    tb.check_outputs("overflow end")
    tb.check.assert_clean(tb.ctx(""))


async def _position_limit(tb: TB, classes: dict[int, int]):
    """A ring three appends short of the 32-bit position limit (state written into the tracker, which
    needs access to internal signals: Icarus; a Verilator build with only the ports public skips it):
    two appends succeed, the third and later are refused (vector_dropped), the READ shows the two
    positions next to the limit, RING_APPENDED holds 2**32 - 1."""
    dut, c = tb.dut, tb.config
    try:
        trk = dut.engine.ring0
        sigs = {n: getattr(trk, n) for n in ("count", "win_lo_q", "wr_slot", "lo_slot_q", "slot_minus_count_q")}
    except AttributeError:
        dut._log.info("overflow: position limit skipped (no access to the tracker's internal signals)")
        return
    cache = Cache(tb, c.max_head_dim, classes, {0: (3, 0, 3), 1: (4, 0, 4)})
    await tb.write("CTRL", 1 | 4)
    await cache.program()
    await tb.write("STATUS", 0xFF)
    await cache.settle("position limit: CLEAR")
    start_pos = POS_LIMIT - 2   # two appends left: positions 2**32 - 3 and 2**32 - 2
    ring = cache.rings[0]
    slot = ring.slot_of(start_pos)
    slot_bits = (c.kv_max_tokens - 1).bit_length()
    await RisingEdge(dut.clk)
    for name, value in (("count", start_pos), ("win_lo_q", start_pos), ("wr_slot", slot), ("lo_slot_q", slot),
                        ("slot_minus_count_q", (slot - start_pos) % (1 << (slot_bits + 1)))):
        sigs[name].value = value
    await ClockCycles(dut.clk, 2)
    ring.appended = start_pos
    tb.model._rings[(0, 0)].model.appended = start_pos
    await check_rings(tb, cache, "position limit: injected")
    written, dropped = cache.written, cache.dropped
    for t in range(4):
        cache.send_token(layers=[0])
    assert cache.written - written == 2 * 2 * c.max_kv_heads and cache.dropped - dropped == 2 * 2 * c.max_kv_heads
    await cache.settle("position limit: appends")
    assert ring.appended == POS_LIMIT
    await check_rings(tb, cache, "position limit: full")
    assert await tb.read_field("STATUS", "vector_dropped") == 1, tb.ctx("position limit: STATUS.vector_dropped")
    for head in range(c.max_kv_heads):
        await cache.read_and_check(0, head, 1, "position limit")
    got = {b["pos"] for b in tb.decode_out(0, len(tb.outs[0].items) - 2 * cache.head_dim // c.dequant_lanes)}
    assert got == {POS_LIMIT - 2, POS_LIMIT - 1}, tb.ctx(f"position limit: READ positions {got}")
    await tb.compare_model("position limit")
    cache.check_image("position limit")
    dut._log.info("overflow position limit: 2 appends up to 2**32 - 1, then refused")


@cocotb.test()
async def reset_mid_stream(dut):
    """CTRL.soft_reset (1) while write bursts are on the bus (AW taken, B owed) and a READ has been
    taken and waits for them, (2) while a READ's bursts are on the bus (R beats owed), with pauses on
    every channel: no VALID withdrawn, every started burst completes (all W beats, all R beats, every B),
    STATUS.resetting returns to 0, the rings are unconfigured and the counters zero; after a new CLEAR
    tokens write and read back bit-exact (ring and engine models)."""
    tb = TB(dut)
    tb.watch()
    await tb.reset()
    c = tb.config
    beats_per_vec = c.max_head_dim // c.quant_lanes
    slow = {"b": tb.ram.b_channel, "r": tb.rams[0].r_channel}

    async def soft_reset(what: str, in_flight):
        """Stop new K/V beats (one already offered stays offered), reset, check what was in flight when
        the reset took effect (the CTRL write has returned), wait for the end of the reset."""
        tb.kv.enabled = False
        await tb.write("CTRL", 2)   # soft_reset; enable 0 so that nothing is taken after it
        problems = in_flight()
        assert not problems, tb.ctx(f"{what}: at the soft reset: {problems}")
        for ch in slow.values():
            ch.set_pause_generator(tb.pause())
        tb.outs[0].pauses = tb.pause()
        await tb.wait_for(lambda: _not_resetting(tb), f"{what}: STATUS.resetting back to 0")
        await ClockCycles(dut.clk, 20)
        n = tb.beats()
        assert n["aw"] == n["b"], tb.ctx(f"{what}: {n['aw']} write bursts started, {n['b']} answered")
        assert n["axi_w"] == tb.owed("aw"), tb.ctx(f"{what}: {n['axi_w']} W beats, started bursts carry {tb.owed('aw')}")
        assert n["axi_r"] == tb.owed("ar"), tb.ctx(f"{what}: {n['axi_r']} R beats, started bursts carry {tb.owed('ar')}")
        assert await tb.read("STATUS") >> STICKY_BIT["ddr_error"] & 1 == 0, tb.ctx(f"{what}: ddr_error")
        get = _ring_status(tb)
        for cls in range(c.n_classes):
            st = await get(cls)
            assert st["ring_configured"] == 0 and st["ring_n_valid"] == 0 and st["appended"] == 0, tb.ctx(
                f"{what}: class {cls} after soft reset: {st}")
        for name in ("VECTORS_WRITTEN", "VECTORS_DROPPED", "COMMANDS_DONE", "DDR_BYTES_WRITTEN_LO",
                     "DDR_BYTES_READ_LO"):
            assert await tb.read(name) == 0, tb.ctx(f"{what}: {name} after soft reset")
        # The K/V beat that was offered (if any) starts a vector after the reset: complete it (it
        # drops, no ring is configured) and forget the rest of the queue.
        offered = bool(dut.s_axis_kv__valid.value)
        rest = list(tb.kv.queue)
        tb.kv.queue.clear()
        if offered:
            first = rest[0]
            user = unpack_fields(tb.kv_layout, first)["user"]
            filler = [layout.pack(tb.kv_layout, data=0, user=user, last=int(k == beats_per_vec - 1))
                      for k in range(1, beats_per_vec)]
            tb.kv.queue.extend([first] + filler)
        tb.kv.enabled = True
        await tb.write("CTRL", 1)
        if offered:
            await tb.wait_for(lambda: _counter_is(tb, "VECTORS_DROPPED", 1), f"{what}: the offered vector")
        # Forget the outputs of the interrupted READ (whatever left before and the beat that stayed).
        await tb.until(lambda: not dut.m_axis_kv0__valid.value, f"{what}: the offered READ beat taken")
        await ClockCycles(dut.clk, 20)
        return offered

    async def recover(what: str, n_tokens: int):
        """New tables and CLEARs; tokens written and read back bit-exact; counters vs the engine model."""
        await tb.write("CTRL", 4 | 1)   # counter_clear (the completing vector above counted a drop)
        cache = Cache(tb, c.max_head_dim, {0: 0, 1: 1, **{k: c.n_classes for k in range(2, c.max_layers)}},
                      {0: (5, 1, 3), 1: (3, 0, 3)})
        await tb.write("STATUS", 0xFF)   # W1C: the completing vector may have counted a frame error
        tb.attach_model()
        tb.model.write32(tb.reg("CTRL").offset, 1)
        await cache.program()
        for _ in range(n_tokens):
            cache.send_token()
        await cache.settle(f"{what}: tokens after the reset")
        cache.check_image(f"{what}: after the reset")
        for layer in range(2):
            for head in range(c.max_kv_heads):
                await cache.read_and_check(layer, head, head % 2, f"{what}: after the reset",
                                           via_register=layer == 1)
        await tb.compare_model(f"{what}: after the reset")
        return cache

    # (1) Write bursts in flight (B held back), a READ taken behind them.
    cache = Cache(tb, c.max_head_dim, {0: 0, 1: 1, **{k: c.n_classes for k in range(2, c.max_layers)}},
                  {0: (5, 1, 3), 1: (3, 0, 3)})
    await cache.program()
    await tb.write("CTRL", 1)
    slow["b"].set_pause_generator(itertools.cycle([1] * 40 + [0]))
    for _ in range(4):
        cache.send_token()
    await tb.until(lambda: tb.check.count["aw"] - tb.check.count["b"] >= 2, "write bursts in flight")
    await tb.command(Op.READ, layer=0, head=0, kv=0)
    await tb.until(lambda: tb.cmd.idle, "the READ taken")

    def writes_and_read():
        n, problems = tb.beats(), []
        if n["aw"] <= n["b"]:
            problems.append(f"no write burst in flight (AW {n['aw']}, B {n['b']})")
        if n["cmd"] != 1 or len(tb.outs[0].items) != 0:
            problems.append(f"the READ is not pending (commands taken {n['cmd']}, beats out {len(tb.outs[0].items)})")
        return problems
    n0, queued = tb.beats(), tb.kv.sent + len(tb.kv.queue)
    await soft_reset("reset with writes in flight", writes_and_read)
    dut._log.info(f"reset 1: just before the reset {n0['aw'] - n0['b']} write bursts owed a response, "
                  f"{n0['in']} of {queued} K/V beats taken; bus after: {tb.beats()}")
    tb.expected[0] = tb.decode_out(0)   # the interrupted READ's beats, if any, are not checked
    cache = await recover("reset 1", 3)

    # (2) A READ's bursts in flight (R beats and outputs held back).
    cache.send_token()
    cache.send_token()
    await cache.settle("before reset 2")
    slow["r"].set_pause_generator(itertools.cycle([1] * 12 + [0]))
    tb.outs[0].pauses = itertools.cycle([1] * 30 + [0])
    out_start = len(tb.outs[0].items)
    ar_start, r_start = tb.check.count["ar"], tb.check.count["r"]
    tb.model = None   # the interrupted READ is not modelled; a fresh model follows the reset
    await tb.command(Op.READ, layer=0, head=1, kv=1)
    await tb.until(lambda: tb.check.count["ar"] > ar_start and tb.check.count["r"] > r_start,
                   "READ bursts on the bus")

    def read_in_flight():
        n = tb.beats()
        problems = []
        if n["axi_r"] >= tb.owed("ar"):
            problems.append(f"no R beat owed (R {n['axi_r']}, started bursts carry {tb.owed('ar')})")
        if len(tb.outs[0].items) - out_start >= len(cache.expected_read(0, 1, 1)):
            problems.append("the READ already finished")
        return problems
    await soft_reset("reset with a READ in flight", read_in_flight)
    n = tb.beats()
    dut._log.info(f"reset 2: {len(tb.outs[0].items) - out_start} of {len(cache.expected_read(0, 1, 1))} READ "
                  f"beats left before the reset ended; bus after: {n}")
    out_start = len(tb.outs[0].items)
    tb.expected[0] = tb.decode_out(0)   # what came out so far is not checked further
    await recover("reset 2", 3)
    tb.check_outputs("after reset 2")
    tb.check.assert_clean(tb.ctx(""))


async def _counter_is(tb: TB, name: str, value: int) -> bool:
    return await tb.read(name) == value
