"""cocotb tests of the integrated KV path (hdl/top/top.py), driven by the Python driver itself.

Register access goes through ``kvpath.driver.regs.Registers`` over ``CocotbTransport`` (the driver's
blocking calls run in ``cocotb.task.bridge`` threads), so the code under test on the control side is the
code that runs on PYNQ. Streams are checked byte for byte against the golden models:
``kvpath.golden`` (block-scaled formats), ``kvpath.golden.static`` (static formats, with scales from
``kvpath.driver.calibrate``) and ``kvpath.golden.ring``.

Environment: ``KVPATH_TOP_CONFIG`` (JSON of the KVPathConfig fields), ``KVPATH_TOP_MAP`` (the
generated kvpath_regs.json), ``KVPATH_SEED`` (every random choice; in every assertion message),
``KVPATH_TOP_PAUSE`` (probability of a bubble / stall per stream and cycle).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import random
import warnings

import cocotb
import numpy as np
from amaranth.hdl import UnusedElaboratable
from cocotb.clock import Clock
from cocotb.task import bridge
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from kvpath import golden
from kvpath.config import BLOCK_ELEMS, ELEM_BITS, KVPathConfig
from kvpath.driver.calibrate import build_table, heavy_tailed_kv
from kvpath.driver.regs import BitstreamMismatch, Registers
from kvpath.golden import static as gs
from kvpath.elements import element
from kvpath.golden.ring import RingModel
from kvpath.hdl.ring.tracker import Op
from kvpath.hdl.static.write_port import ScaleWrite
from kvpath.hdl.top.top import KVPathTop

from kvpath.sim.lib.streams import (CocotbTransport, StreamSink, StreamSource, bernoulli, field_of, pack_fields, pack_lanes,
                             unpack_lanes)

# The testbench builds a KVPathTop for its stream layouts only; the DUT is the generated Verilog.
warnings.filterwarnings("ignore", category=UnusedElaboratable)

COUNTERS = ("elems_quantized", "blocks_written", "blocks_read", "nonfinite_elems", "saturated_elems")


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.config = KVPathConfig(**json.loads(os.environ["KVPATH_TOP_CONFIG"]))
        self.seed = int(os.environ.get("KVPATH_SEED", "1"))
        self.pause = float(os.environ.get("KVPATH_TOP_PAUSE", "0.3"))
        self.rng = random.Random(self.seed)
        self.np_rng = np.random.default_rng(self.seed)
        self.top = KVPathTop(self.config)
        self.static = self.top.cache is not None
        self.dtype = element(self.config.elem).dtype
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        for interface in (self.axil.write_if, self.axil.read_if):
            interface.log.setLevel(logging.WARNING)
        self.regs = Registers(CocotbTransport(self.axil), os.environ["KVPATH_TOP_MAP"])

    def ctx(self, what: str) -> str:
        return f"seed={self.seed} config={self.config}: {what}"

    async def reset(self):
        dut = self.dut
        self.kv_in = StreamSource(dut, "kv_in", bernoulli(self.rng, self.pause))
        self.q_in = StreamSource(dut, "q_in", bernoulli(self.rng, self.pause))
        self.memset = StreamSource(dut, "memset", bernoulli(self.rng, self.pause))
        self.ring_cmd = StreamSource(dut, "ring_cmd", bernoulli(self.rng, self.pause))
        self.q_out = StreamSink(dut, "q_out", bernoulli(self.rng, self.pause))
        self.kv_out = StreamSink(dut, "kv_out", bernoulli(self.rng, self.pause))
        self.ring_wr = StreamSink(dut, "ring_wr", bernoulli(self.rng, self.pause))
        self.ring_rd = StreamSink(dut, "ring_rd", bernoulli(self.rng, self.pause))
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)

    # --- driver calls (blocking Python in a bridge thread)
    async def call(self, fn, *args, **kwargs):
        return await bridge(fn)(*args, **kwargs)

    async def field(self, reg: str, name: str) -> int:
        return await self.call(self.regs.read_field, reg, name)

    async def set_field(self, reg: str, name: str, value: int):
        await self.call(self.regs.write_field, reg, name, value)

    async def counters(self) -> dict[str, int]:
        return {c: await self.call(self.regs.read_counter, c) for c in COUNTERS}

    async def wait_until(self, cond, what: str, limit: int = 50_000):
        for _ in range(limit):
            if cond():
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError(self.ctx(f"timed out after {limit} cycles waiting for {what}"))

    async def check_counters(self, expected: dict[str, int], what: str):
        got = await self.counters()
        assert got == expected, self.ctx(f"{what}: counters {got}, golden {expected}")

    async def check_status(self, reg: str = "STATUS", **expected: int):
        for name, value in expected.items():
            got = await self.field(reg, name)
            assert got == value, self.ctx(f"{reg}.{name} = {got}, expected {value}")

    async def clear_status(self):
        await self.call(self.regs.write, "STATUS", 0xFFFF_FFFF)

    # --- scale cache
    def memset_beat(self, index: int, value: int) -> int:
        return pack_fields(ScaleWrite, index=index, value=value)

    async def scale_write(self, index: int, value: int):
        """One raw SCALE_INDEX / SCALE_DATA pair, bypassing the driver's range check."""
        special = self.regs.map["special"]
        await self.call(self.regs.write, special["scale_index"], index)
        await self.call(self.regs.write, special["scale_data"], value)


def elem_bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.uint16)


# ------------------------------------------------------------------------------ identity

@cocotb.test()
async def bitstream_check(dut):
    """check_bitstream passes for the build's configuration and names every differing field otherwise."""
    tb = TB(dut)
    await tb.reset()
    await tb.call(tb.regs.check_bitstream, tb.config)
    c = tb.config
    wrong = dataclasses.replace(c, quant_lanes=8 if c.quant_lanes != 8 else 16, kv_max_tokens=c.kv_max_tokens * 2)
    try:
        await tb.call(tb.regs.check_bitstream, wrong)
    except BitstreamMismatch as e:
        for name in ("CFG_LANES.quant_lanes", "CFG_KV_MAX_TOKENS.value"):
            assert name in str(e), tb.ctx(f"mismatch message does not name {name}: {e}")
    else:
        raise AssertionError(tb.ctx(f"check_bitstream accepted {wrong}"))
    other_fmt = "q8_0" if tb.static else "int8_ph"
    try:
        await tb.call(tb.regs.check_bitstream, dataclasses.replace(c, fmt=other_fmt))
    except BitstreamMismatch as e:
        assert "CFG_FORMAT.format" in str(e), tb.ctx(str(e))
    else:
        raise AssertionError(tb.ctx(f"check_bitstream accepted format {other_fmt}"))


# ------------------------------------------------------------------------------ static formats

def static_beats(tb: TB, x: np.ndarray, kv: int, lanes: int):
    """Beats of ``x`` (layers, heads, tokens, head_dim): elements (nb, lanes) and context arrays."""
    layers, heads, tokens, head_dim = x.shape
    elems, ctx = [], []
    for layer in range(layers):
        for head in range(heads):
            for t in range(tokens):
                for ch in range(0, head_dim, lanes):
                    elems.append(elem_bits(x[layer, head, t, ch:ch + lanes]))
                    ctx.append((layer, head, kv, ch))
    return np.array(elems, np.uint16), np.array(ctx, np.int64).reshape(-1, 4)


@cocotb.test()
async def static_stream(dut):
    """Calibrate, load half the scales through the registers and half through MEMSET (at the same
    time), quantize K and V with context, dequantize the codes; every byte and counter vs golden."""
    tb = TB(dut)
    await tb.reset()
    c, f = tb.config, tb.config.format
    lanes = c.quant_lanes
    assert c.dequant_lanes == lanes, "the round trip feeds q_out beats back unchanged: equal lanes"

    # Calibrate on the first tokens, stream the rest.
    k, v = heavy_tailed_kv(c.max_layers, c.max_kv_heads, 6, c.max_head_dim, tb.seed)
    k, v = k.astype(tb.dtype), v.astype(tb.dtype)
    table = build_table(k[:, :, :4], v[:, :, :4], c.fmt, c.elem, "percentile", 99.0, config=c)
    writes = table.writes()
    assert [i for i, _ in writes] == list(range(len(writes))), "calibration covers the whole cache"
    half = len(writes) // 2
    tb.memset.send(tb.memset_beat(i, e) for i, e in writes[half:])
    loaded = await tb.call(tb.regs.load_scales, 0, [e for _, e in writes[:half]])
    assert loaded == half
    await tb.wait_until(lambda: tb.memset.idle, "the MEMSET stream")
    entries = table.entries
    await tb.check_status(bad_scale_index=0)

    # Data: the remaining tokens of K (kv=0) and V (kv=1), two non-finite elements, one beat whose
    # context addresses no entry (layer = max_layers where the field can hold it, else a channel
    # that is not a multiple of the lanes).
    k_eval, v_eval = k[:, :, 4:].copy(), v[:, :, 4:].copy()
    k_eval[0, 0, 0, 3] = np.inf
    v_eval[-1, -1, -1, 1] = np.nan
    ek, ck = static_beats(tb, k_eval, 0, lanes)
    ev, cv = static_beats(tb, v_eval, 1, lanes)
    elems, ctxs = np.concatenate([ek, ev]), np.concatenate([ck, cv])
    ctx_layout = tb.top.quant.ctx_layout
    bad = (c.max_layers, 0, 0, 0) if c.max_layers < 1 << ctx_layout["layer"].width else (0, 0, 0, 1)
    elems = np.concatenate([elems, elems[1:2]])
    ctxs = np.concatenate([ctxs, np.array([bad])])
    nb = len(elems)

    def ctx_word(row):
        return pack_fields(ctx_layout, layer=row[0], head=row[1], kv=row[2], channel=row[3])

    in_layout, out_layout = tb.top.quant.in_layout, tb.top.quant.out_layout
    await tb.set_field("CTRL", "enable", 1)
    tb.kv_in.send(pack_fields(in_layout, elems=pack_lanes(e, ELEM_BITS), ctx=ctx_word(x))
                  for e, x in zip(elems, ctxs))
    await tb.wait_until(lambda: len(tb.q_out.beats) == nb, f"{nb} q_out beats")

    codes, qc = gs.quantize_beats(elems, c.fmt, entries, *ctxs.T, elem=c.elem, config=c)
    want = gs.pack_codes(codes, f.name)
    code_bytes = lanes * f.code_bits // 8
    for b, beat in enumerate(tb.q_out.beats):
        got = field_of(out_layout, beat, "codes").to_bytes(code_bytes, "little")
        assert got == want[b].tobytes(), tb.ctx(f"q_out beat {b} (context {ctxs[b]}): {got.hex()}, "
                                                f"golden {want[b].tobytes().hex()}")
        assert field_of(out_layout, beat, "ctx") == ctx_word(ctxs[b]), tb.ctx(f"q_out beat {b} context")

    # Read path: the codes go back in unchanged.
    tb.q_in.send(tb.q_out.beats)
    await tb.wait_until(lambda: len(tb.kv_out.beats) == nb, f"{nb} kv_out beats")
    values, dc = gs.dequantize_beats(codes, c.fmt, entries, *ctxs.T, elem=c.elem, config=c)
    deq_out = tb.top.dequant.out_layout
    for b, beat in enumerate(tb.kv_out.beats):
        got = unpack_lanes(field_of(deq_out, beat, "elems"), ELEM_BITS, lanes)
        assert got == values[b].tolist(), tb.ctx(f"kv_out beat {b} (context {ctxs[b]}): "
                                                 f"{[hex(g) for g in got]}, golden {[hex(g) for g in values[b]]}")

    assert qc["nonfinite_count"] == 2 and qc["context_error_count"] == 1, tb.ctx(f"stimulus {qc}")
    await tb.check_counters({
        "elems_quantized": nb * lanes,
        "blocks_written": nb * lanes // BLOCK_ELEMS,
        "blocks_read": nb * lanes // BLOCK_ELEMS,
        "nonfinite_elems": qc["nonfinite_count"] + dc["nonfinite_count"],
        "saturated_elems": dc["saturated_count"],
    }, "after the round trip")
    await tb.check_status(nonfinite_seen=1, bad_scale_index=1, saturated_seen=int(dc["saturated_count"] > 0))

    # Refused scale writes: out of range through the registers sets the sticky bit; W1C clears it.
    await tb.clear_status()
    await tb.check_status(bad_scale_index=0, nonfinite_seen=0)
    await tb.scale_write(0, int(entries[0]))
    await tb.check_status(bad_scale_index=0)
    await tb.scale_write(len(entries), int(entries[0]))
    await tb.check_status(bad_scale_index=1)
    await tb.set_field("STATUS", "bad_scale_index", 1)
    await tb.check_status(bad_scale_index=0)
    try:
        await tb.call(tb.regs.load_scales, len(entries) - 1, [int(entries[0])] * 2)
    except ValueError:
        pass
    else:
        raise AssertionError(tb.ctx("load_scales accepted a range beyond the cache"))
    # The same refusal from the bulk path.
    tb.memset.send([tb.memset_beat(len(entries) + 5, int(entries[0]))])
    await tb.wait_until(lambda: tb.memset.idle, "the refused MEMSET beat")
    await ClockCycles(dut.clk, 3)
    await tb.check_status(bad_scale_index=1)


# ------------------------------------------------------------------------------ block-scaled formats

def block_samples(tb: TB, blocks: int) -> np.ndarray:
    """Seeded normal and heavy-tailed blocks with an Inf and a NaN."""
    half = blocks // 2 * BLOCK_ELEMS
    x = np.concatenate([tb.np_rng.standard_normal(half),
                        tb.np_rng.standard_t(3, blocks * BLOCK_ELEMS - half) * 30]).astype(tb.dtype)
    x[5], x[40] = np.inf, np.nan
    return x


def crafted_blocks(tb: TB, count: int) -> np.ndarray:
    """Blocks whose read path saturates (scale = largest finite) or sanitizes (scale = Inf): ggml only,
    where the scale fields are FP16 at the front of the block."""
    f = tb.config.format
    if f.family != "ggml":
        return np.zeros((0, f.block_bytes), np.uint8)
    out = tb.np_rng.integers(0, 256, size=(count, f.block_bytes), dtype=np.uint8)
    header = out[:, :f.header_bytes].view(np.uint16)
    header[:] = 0x3C00
    header[0::2, 0] = 0x7BFF
    header[1::2, 0] = 0x7C00
    return out


class BlockPath:
    """Packing of the block-scaled streams: kv_in lanes, one block per q_out beat, q_in beats of
    ``read_lanes // 32`` blocks (at least one)."""

    def __init__(self, tb: TB):
        c = tb.config
        self.tb, self.f = tb, c.format
        self.lanes, self.read_lanes = c.quant_lanes, c.dequant_lanes
        self.per_q_in = max(1, self.read_lanes // BLOCK_ELEMS)

    def kv_beats(self, x) -> list[int]:
        bits = elem_bits(x).reshape(-1, self.lanes)
        return [pack_lanes(row, ELEM_BITS) for row in bits]

    def block_bytes(self, beat: int) -> bytes:
        return beat.to_bytes(self.f.block_bytes, "little")

    def q_in_beats(self, blocks: np.ndarray) -> list[int]:
        assert len(blocks) % self.per_q_in == 0
        rows = blocks.reshape(-1, self.per_q_in * self.f.block_bytes)
        return [int.from_bytes(r.tobytes(), "little") for r in rows]

    def kv_out_elems(self, beats) -> np.ndarray:
        return np.array([unpack_lanes(b, ELEM_BITS, self.read_lanes) for b in beats], np.uint16).reshape(-1)

    async def quantize(self, x, what: str):
        """Stream ``x`` through kv_in; return the golden report after checking q_out byte for byte."""
        tb = self.tb
        start = len(tb.q_out.beats)
        blocks, n_nonfinite = golden.quantize_report(x, self.f.name)
        blocks = blocks.reshape(-1, self.f.block_bytes)
        tb.kv_in.send(self.kv_beats(x))
        await tb.wait_until(lambda: len(tb.q_out.beats) == start + len(blocks), f"{what}: q_out blocks")
        for b, beat in enumerate(tb.q_out.beats[start:]):
            got = self.block_bytes(beat)
            assert got == blocks[b].tobytes(), tb.ctx(f"{what}: block {b}: {got.hex()}, golden {blocks[b].tobytes().hex()}")
        return blocks, n_nonfinite


@cocotb.test()
async def block_stream(dut):
    """Block-scaled build: stream vs golden, CTRL.enable stops intake on both paths, counters and their
    clear, soft reset of a partial block, SCALE_DATA refused (no cache)."""
    tb = TB(dut)
    await tb.reset()
    path = BlockPath(tb)
    lanes = path.lanes

    # Disabled at reset: nothing is accepted.
    x = block_samples(tb, 16)
    tb.q_out.pauses = itertools.repeat(1)  # hold the output so the write path fills up once enabled
    tb.kv_in.send(path.kv_beats(x))
    await ClockCycles(dut.clk, 40)
    assert tb.kv_in.sent == 0, tb.ctx(f"{tb.kv_in.sent} kv_in beats accepted while disabled")
    await tb.set_field("CTRL", "enable", 1)
    await ClockCycles(dut.clk, 60)
    await tb.set_field("CTRL", "enable", 0)
    held_in, held_out = tb.kv_in.sent, len(tb.q_out.beats)
    assert held_in > 0 and held_out == 0, tb.ctx(f"{held_in} accepted, {held_out} emitted with q_out stalled")
    tb.q_out.pauses = bernoulli(tb.rng, tb.pause)
    await ClockCycles(dut.clk, 60)
    # Disabled: no new beat is accepted, but every whole block already inside drains (an AXI-Stream
    # beat once offered stays offered); the partial block waits.
    whole = held_in * lanes // 32
    assert (tb.kv_in.sent, len(tb.q_out.beats)) == (held_in, whole), tb.ctx(
        f"disabled: {tb.kv_in.sent - held_in} beats accepted, {len(tb.q_out.beats)} emitted, "
        f"expected {whole} drained")
    await tb.set_field("CTRL", "enable", 1)
    blocks, n_nonfinite = golden.quantize_report(x, path.f.name)
    blocks = blocks.reshape(-1, path.f.block_bytes)
    await tb.wait_until(lambda: len(tb.q_out.beats) == len(blocks), "all q_out blocks")
    for b, beat in enumerate(tb.q_out.beats):
        got = path.block_bytes(beat)
        assert got == blocks[b].tobytes(), tb.ctx(f"block {b}: {got.hex()}, golden {blocks[b].tobytes().hex()}")

    # Read path, held while disabled too; then the blocks plus crafted ones vs golden.
    read_blocks = np.concatenate([blocks, crafted_blocks(tb, 2 * path.per_q_in)])
    await tb.set_field("CTRL", "enable", 0)
    values, n_sat, n_bad = golden.dequantize_report(read_blocks.reshape(-1), path.f.name, tb.dtype)
    want = elem_bits(values).reshape(-1)
    tb.q_in.send(path.q_in_beats(read_blocks))
    await ClockCycles(dut.clk, 40)
    assert tb.q_in.sent == 0 and not tb.kv_out.beats, tb.ctx("q_in/kv_out moved while disabled")
    await tb.set_field("CTRL", "enable", 1)
    await tb.wait_until(lambda: len(tb.kv_out.beats) * path.read_lanes == len(want), "all kv_out beats")
    got = path.kv_out_elems(tb.kv_out.beats)
    wrong = np.flatnonzero(got != want)
    assert not wrong.size, tb.ctx(f"{wrong.size} elements differ, first at {wrong[0]}: "
                                  f"0x{got[wrong[0]]:04x}, golden 0x{want[wrong[0]]:04x}")

    expected = {
        "elems_quantized": x.size,
        "blocks_written": len(blocks),
        "blocks_read": len(read_blocks),
        "nonfinite_elems": n_nonfinite + n_bad,
        "saturated_elems": n_sat,
    }
    assert n_nonfinite == 2, tb.ctx(f"stimulus has 2 non-finite elements, golden counted {n_nonfinite}")
    await tb.check_counters(expected, "after the round trip")
    await tb.check_status(nonfinite_seen=1, saturated_seen=int(n_sat > 0), bad_scale_index=0)

    # counter_clear: everything reported restarts from zero, then counts only new traffic.
    await tb.set_field("CTRL", "counter_clear", 1)
    await tb.check_counters(dict.fromkeys(expected, 0), "after counter_clear")
    y = block_samples(tb, 4)
    more, n_nf = await path.quantize(y, "after counter_clear")
    await tb.check_counters({**dict.fromkeys(expected, 0), "elems_quantized": y.size, "blocks_written": len(more),
                             "nonfinite_elems": n_nf}, "traffic after counter_clear")

    # soft_reset: a partial block is dropped, counters restart, the registers keep their values.
    if lanes < BLOCK_ELEMS:
        tb.kv_in.send(path.kv_beats(y)[:1])
        await tb.wait_until(lambda: tb.kv_in.idle, "the partial block")
    await tb.set_field("CTRL", "soft_reset", 1)
    await tb.check_counters(dict.fromkeys(expected, 0), "after soft_reset")
    assert await tb.field("CTRL", "enable") == 1, tb.ctx("soft_reset changed CTRL.enable")
    tb.q_out.beats.clear()
    await path.quantize(block_samples(tb, 2), "after soft_reset")

    # No scale cache: every scale write is refused and flagged, from either source.
    await tb.clear_status()
    await tb.scale_write(0, 0x3C00_3C00)
    await tb.check_status(bad_scale_index=1)
    await tb.clear_status()
    await tb.check_status(bad_scale_index=0)
    tb.memset.send([tb.memset_beat(0, 0x3C00_3C00)])
    await tb.wait_until(lambda: tb.memset.idle, "the MEMSET beat")
    await ClockCycles(dut.clk, 3)
    await tb.check_status(bad_scale_index=1)


# ------------------------------------------------------------------------------ ring

@cocotb.test()
async def ring_order(dut):
    """RING_* programmed through the driver; appends, an eviction and a read vs kvpath.golden.ring."""
    tb = TB(dut)
    await tb.reset()
    ring = tb.top.ring
    cap = min(10, tb.config.kv_max_tokens)
    sinks, window = 2, cap - 5

    def cmd(op, pos=0):
        return pack_fields(ring.cmd_layout, op=op.value, pos=pos)

    async def configure(c, s, w):
        for reg, value in (("RING_MAX_TOKENS", c), ("RING_SINKS", s), ("RING_WINDOW", w)):
            await tb.set_field(reg, "value", value)
        tb.ring_cmd.send([cmd(Op.CLEAR)])
        await tb.wait_until(lambda: tb.ring_cmd.idle, "CLEAR")

    await configure(cap, sinks, window)
    await tb.check_status("RING_STATUS", ring_cfg_err=0)
    model = RingModel(cap, sinks, window, max_tokens=tb.config.kv_max_tokens)
    appends = 2 * cap + 3
    tb.ring_cmd.send([cmd(Op.APPEND)] * appends)
    await tb.wait_until(lambda: len(tb.ring_wr.beats) == appends, "append responses")
    for n, beat in enumerate(tb.ring_wr.beats):
        want = model.append()
        got = {k: field_of(ring.append_layout, beat, k) for k in ("ok", "slot", "pos", "evict", "evict_slot", "evict_pos")}
        exp = {"ok": 1, "slot": want.slot, "pos": want.pos, "evict": int(want.evicted is not None),
               "evict_slot": want.evicted.slot if want.evicted else got["evict_slot"],
               "evict_pos": want.evicted.pos if want.evicted else got["evict_pos"]}
        assert got == exp, tb.ctx(f"append {n}: {got}, golden {exp}")
    evict_to = model.appended - 2
    model.evict_upto(evict_to)
    tb.ring_cmd.send([cmd(Op.EVICT_UPTO, evict_to), cmd(Op.READ)])
    order = model.read_order()
    await tb.wait_until(lambda: len(tb.ring_rd.beats) == len(order), "read beats")
    got = [tuple(field_of(ring.read_layout, b, k) for k in ("slot", "pos", "cache_pos", "last")) for b in tb.ring_rd.beats]
    want = [(e.slot, e.pos, e.cache_pos, int(i == len(order) - 1)) for i, e in enumerate(order)]
    assert got == want, tb.ctx(f"read order {got}, golden {want}")

    # A configuration the ring cannot hold: flagged live in STATUS, appends refused.
    await configure(cap, sinks, 0)
    await tb.check_status("RING_STATUS", ring_cfg_err=1)
    tb.ring_cmd.send([cmd(Op.APPEND)])
    await tb.wait_until(lambda: len(tb.ring_wr.beats) == appends + 1, "refused append")
    assert field_of(ring.append_layout, tb.ring_wr.beats[-1], "ok") == 0, tb.ctx("append accepted with W = 0")
    await configure(cap, sinks, window)
    await tb.check_status("RING_STATUS", ring_cfg_err=0)
