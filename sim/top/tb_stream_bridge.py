"""cocotb tests of the DMA stream bridge (hdl/top/stream_bridge.py, docs/kv260.md "The stream path").

* ``strip_exact`` / ``insert_exact`` on ``BridgePair`` (both adapters side by side, module
  ``kvpath_bridge_pair``): random tags, vectors and framings, random pauses on both sides of each
  adapter; every beat out compared with the expected beat (data, TUSER, TLAST), in order, and
  nothing more.
* ``dma_bridge_top`` on ``kvpath_axi_top`` built with ``dma_bridge=True``: the KV cache testbench
  (sim/top/tb_kvcache.py, used read-only, as tests/top/test_axi_top.py does) with its K/V beats
  header-framed onto ``s_axis_dma`` (as the driver frames them for the AXI DMA's MM2S) and port 0's
  READ beats taken from ``m_axis_dma`` and unframed; DDR image and READ beats against the golden
  model.

Environment: ``KVPATH_KVC_CONFIG`` (JSON of KVPathConfig), ``KVPATH_SEED``, ``KVPATH_BRIDGE_SEGMENT``
(``HeaderInsert``'s ``max_segment``), ``KVPATH_KVC_PAUSES``.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.hdl import Module
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.types import LogicArray

from kvpath import layout
from kvpath.config import KVPathConfig
from kvpath.hdl.ddr.engine import kv_layout
from kvpath.hdl.ddr.read_port import out_layout
from kvpath.hdl.top.stream_bridge import HeaderInsert, HeaderStrip, dma_layout, frame, pack_header, unpack_header
from kvpath.sim.lib.streams import StreamSink, StreamSource, pause_generator, unpack_fields

SEED = int(os.environ.get("KVPATH_SEED", "1"))


class BridgePair(wiring.Component):
    """Both adapters, unconnected, in one module: ``strip_i`` -> ``strip_o``, ``insert_i`` -> ``insert_o``."""

    def __init__(self, config: KVPathConfig, max_segment: int):
        self.strip = HeaderStrip(kv_layout(config))
        self.insert = HeaderInsert(out_layout(config), max_segment)
        super().__init__({"strip_i": In(stream.Signature(dma_layout(self.strip.width))),
                          "strip_o": Out(stream.Signature(kv_layout(config))),
                          "insert_i": In(stream.Signature(out_layout(config))),
                          "insert_o": Out(stream.Signature(dma_layout(self.insert.width)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.strip, m.submodules.insert = self.strip, self.insert
        wiring.connect(m, wiring.flipped(self.strip_i), self.strip.i)
        wiring.connect(m, self.strip.o, wiring.flipped(self.strip_o))
        wiring.connect(m, wiring.flipped(self.insert_i), self.insert.i)
        wiring.connect(m, self.insert.o, wiring.flipped(self.insert_o))
        return m


def _config() -> KVPathConfig:
    return KVPathConfig(**json.loads(os.environ["KVPATH_KVC_CONFIG"]))


def dma_beat(word: int, last: bool, width: int) -> int:
    """A DMA-side payload (``dma_layout``): TDATA in the low ``width`` bits, TLAST above."""
    return word | int(last) << width


async def _start(dut, name: str):
    rng = random.Random(f"{SEED}-{name}")
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for s in ("strip_i__valid", "insert_i__valid", "strip_o__ready", "insert_o__ready"):
        getattr(dut, s).value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 1)
    return rng


async def _collect(dut, sink: StreamSink, want: int, what: str, ctx: str):
    for _ in range(200 * want + 2000):
        if len(sink.items) >= want:
            break
        await RisingEdge(dut.clk)
    await ClockCycles(dut.clk, 50)   # nothing more may come
    assert len(sink.items) == want, f"{ctx}: {what}: {len(sink.items)} beats out, expected {want}"


@cocotb.test()
async def strip_exact(dut):
    """HeaderStrip: transfers of header-framed vectors (counted form, several per transfer, some
    ending without TLAST, some split by a change of tag; the TLAST form, one vector per transfer;
    empty transfers) -> exactly the beats they stand for."""
    c = _config()
    rng = await _start(dut, "strip")
    kvl, width = kv_layout(c), kv_layout(c)["data"].width
    tag_bits = layout.kv_tag(c).size
    src = StreamSource(dut, "strip_i", pause_generator(rng, "mixed"))
    sink = StreamSink(dut, "strip_o", pause_generator(rng, "mixed"))
    words, want = [], []
    forms = {"counted": 0, "tlast": 0, "empty": 0, "open": 0}
    for _ in range(60):
        form = rng.choice(("counted", "counted", "tlast", "empty", "open"))
        forms[form] += 1
        if form == "empty":
            words.append(dma_beat(pack_header(rng.getrandbits(tag_bits), rng.randrange(3), rng.random() < .5),
                                  True, width))
            continue
        beats = []
        for _ in range(1 if form == "tlast" else rng.randrange(1, 4)):
            tag, n = rng.getrandbits(tag_bits), rng.randrange(1, 7)
            beats += [(rng.getrandbits(width), tag, k == n - 1) for k in range(n)]
        if form == "open":   # a last segment without TLAST (the engine would see a frame error)
            beats[-1] = (beats[-1][0], beats[-1][1], False)
        if form == "tlast":
            tag = beats[0][1]
            seq = [dma_beat(pack_header(tag, 0, False) | rng.getrandbits(width - 64) << 64, False, width)]
            seq += [dma_beat(d, k == len(beats) - 1, width) for k, (d, _, _) in enumerate(beats)]
        else:
            framed = frame(beats)
            seq = [dma_beat(w, k == len(framed) - 1, width) for k, w in enumerate(framed)]
        words += seq
        want += [layout.pack(kvl, data=d, user=u, last=int(bool(l))) for d, u, l in beats]
    src.send(words)
    ctx = f"seed={SEED} config={c}"
    await _collect(dut, sink, len(want), "HeaderStrip", ctx)
    for k, (got, exp) in enumerate(zip(sink.items, want)):
        assert got == exp, f"{ctx}: HeaderStrip beat {k}: {unpack_fields(kvl, got)} != {unpack_fields(kvl, exp)}"
    dut._log.info(f"HeaderStrip: {len(words)} words in, {len(want)} beats out exact; forms {forms}")


@cocotb.test()
async def insert_exact(dut):
    """HeaderInsert: READ-like beat sequences (vectors of one position each, TLAST on the last beat,
    sometimes read_tag.error on it; vectors longer than the segment cap; arbitrary TUSER changes)
    -> exactly ``frame(beats, max_segment)`` with TLAST on each READ's last data beat."""
    c = _config()
    cap = int(os.environ["KVPATH_BRIDGE_SEGMENT"])
    rng = await _start(dut, "insert")
    ol, width = out_layout(c), out_layout(c)["data"].width
    rt = layout.read_tag(c)
    src = StreamSource(dut, "insert_i", pause_generator(rng, "mixed"))
    sink = StreamSink(dut, "insert_o", pause_generator(rng, "mixed"))
    beats, n_err = [], 0
    for _ in range(40):
        per_vector = rng.choice((1, cap - 1 or 1, cap, cap + 1, 2 * cap + 1, rng.randrange(1, 3 * cap + 1)))
        read = []
        pos = rng.getrandbits(32)
        for _ in range(rng.randrange(1, 5)):
            pos = (pos + rng.randrange(1, 4)) % (1 << 32)
            if rng.random() < 0.1:   # a tag change inside a vector (not what the engine does, framed all the same)
                read += [(rng.getrandbits(width), layout.pack(rt, pos=rng.getrandbits(32), error=0), False)]
            read += [(rng.getrandbits(width), layout.pack(rt, pos=pos, error=0), False) for _ in range(per_vector)]
        d, u, _ = read[-1]
        if rng.random() < 0.3:
            u |= layout.pack(rt, error=1)
            n_err += 1
        read[-1] = (d, u, True)
        beats += read
    src.send([layout.pack(ol, data=d, user=u, last=int(l)) for d, u, l in beats])
    words = frame(beats, cap)
    want, k = [], 0
    while k < len(words):   # TLAST on the last beat of every segment whose header says last
        _, n, last = unpack_header(words[k])
        want.append(dma_beat(words[k], False, width))
        want += [dma_beat(w, last and j == n - 1, width) for j, w in enumerate(words[k + 1:k + 1 + n])]
        k += 1 + n
    ctx = f"seed={SEED} config={c} max_segment={cap}"
    await _collect(dut, sink, len(want), "HeaderInsert", ctx)
    for k, (got, exp) in enumerate(zip(sink.items, want)):
        assert got == exp, (f"{ctx}: HeaderInsert word {k}: 0x{got:x} != 0x{exp:x} "
                            f"(header? {unpack_header(exp & ((1 << width) - 1))})")
    dut._log.info(f"HeaderInsert: {len(beats)} beats in ({n_err} READs ending in error), {len(want)} words "
                  f"out exact")


# --- the top with the bridge -----------------------------------------------------------------------

class _Dummy:
    """Stands in for an engine-side stream handle the bridged top no longer has: reads 0, ignores writes."""

    @property
    def value(self):
        return LogicArray("0")

    @value.setter
    def value(self, v) -> None:
        pass


class _DmaPayload:
    """``dma_layout`` over the flat ``<flat>_tdata`` / ``<flat>_tlast`` ports."""

    def __init__(self, top, flat: str, width: int):
        self.tdata, self.tlast, self.width = getattr(top, f"{flat}_tdata"), getattr(top, f"{flat}_tlast"), width

    @property
    def value(self) -> int:
        return int(self.tdata.value) | int(self.tlast.value) << self.width

    @value.setter
    def value(self, v: int) -> None:
        self.tdata.value = int(v) & ((1 << self.width) - 1)
        self.tlast.value = int(v) >> self.width & 1


class _Ends:
    """What StreamSource/StreamSink need: clk, rst and one ``<name>__valid/__ready/__payload``."""

    def __init__(self, top, rst, flat: str, width: int):
        self.clk, self.rst = top.aclk, rst
        setattr(self, f"{flat}__valid", getattr(top, f"{flat}_tvalid"))
        setattr(self, f"{flat}__ready", getattr(top, f"{flat}_tready"))
        setattr(self, f"{flat}__payload", _DmaPayload(top, flat, width))


class FramedSource:
    """The testbench's ``s_axis_kv`` source, through the MM2S framing: each ``send`` is one DMA
    transfer of header-framed vectors (counted form), or, at random, one transfer per vector in the
    TLAST form, as a driver could also do."""

    def __init__(self, top, rst, pauses, config: KVPathConfig, rng: random.Random):
        self.kvl = kv_layout(config)
        self.width = self.kvl["data"].width
        self.rng = rng
        self.src = StreamSource(_Ends(top, rst, "s_axis_dma", self.width), "s_axis_dma", pauses)
        self.transfers = 0

    def send(self, payloads):
        beats = [(u["data"], u["user"], bool(u["last"])) for u in
                 (unpack_fields(self.kvl, p) for p in payloads)]
        if self.rng.random() < 0.5 or not beats or not beats[-1][2]:
            words = frame(beats)
            self.src.send(dma_beat(w, k == len(words) - 1, self.width) for k, w in enumerate(words))
            self.transfers += 1
            return
        vector = []
        for b in beats:
            vector.append(b)
            if b[2]:
                self.src.send([dma_beat(pack_header(vector[0][1], 0, False), False, self.width)] +
                              [dma_beat(d, k == len(vector) - 1, self.width) for k, (d, _, _) in enumerate(vector)])
                self.transfers += 1
                vector = []

    @property
    def idle(self) -> bool:
        return self.src.idle

    def stop(self):
        self.src.stop()


class FramedSink:
    """Port 0's READ beats, taken from ``m_axis_dma`` and unframed: ``items`` are ``out_layout``
    payloads as the testbench's sink would have collected them on ``m_axis_kv0``. Every DMA-side
    TLAST must fall on the last data beat of a segment whose header says ``last`` (so an S2MM
    transfer ends where the READ does), and TKEEP is all ones."""

    def __init__(self, top, rst, pauses, config: KVPathConfig):
        self.ol = out_layout(config)
        self.width = self.ol["data"].width
        self.top = top
        self.sink = StreamSink(_Ends(top, rst, "m_axis_dma", self.width), "m_axis_dma", pauses)

    @property
    def items(self) -> list[int]:
        mask = (1 << self.width) - 1
        words = self.sink.items
        out, k = [], 0
        while k < len(words):
            hdr = words[k]
            assert not hdr >> self.width, f"m_axis_dma word {k}: a header beat with TLAST"
            tag, n, last = unpack_header(hdr & mask)
            assert n > 0, f"m_axis_dma word {k}: header 0x{hdr & mask:x} with no beats"
            if k + 1 + n > len(words):
                break   # a segment still arriving
            for j in range(n):
                w = words[k + 1 + j]
                tlast = bool(w >> self.width)
                assert tlast == (last and j == n - 1), f"m_axis_dma word {k + 1 + j}: TLAST {tlast} misplaced"
                out.append(layout.pack(self.ol, data=w & mask, user=tag, last=int(tlast)))
            k += 1 + n
        assert int(self.top.m_axis_dma_tkeep.value) == (1 << self.width // 8) - 1, "m_axis_dma_tkeep not all ones"
        return out

    @property
    def segments(self) -> int:
        return sum(1 for _ in self._headers())

    def _headers(self):
        words, k, mask = self.sink.items, 0, (1 << self.width) - 1
        while k < len(words):
            yield words[k]
            k += 1 + unpack_header(words[k] & mask)[1]

    def stop(self):
        self.sink.stop()


@cocotb.test()
async def dma_bridge_top(dut):
    """kvpath_axi_top with dma_bridge=True: K/V in through the MM2S framing, READs on port 0 out
    through the S2MM framing (port 1 stays a plain stream), the DDR image and every READ beat
    against the golden model; the engine's counters agree."""
    from kvpath.sim.top.tb_kvcache import TB, default_cache
    from tests.top.test_axi_top import RESET_STAGES, FlatDut, _AresetnAsRst

    def bridged_dut(top, config):
        """FlatDut over the top, with stand-ins for the flat s_axis_kv / m_axis_kv0 it no longer has."""
        stand_in = {f"{name}_{sig}": _Dummy() for name in ("s_axis_kv", "m_axis_kv0")
                    for sig in ("tvalid", "tready", "tdata", "tuser", "tlast")}
        return FlatDut(_WithStandIns(top, stand_in), config)

    class BridgedTB(TB):
        def __init__(self, top):
            self.top = top
            super().__init__(bridged_dut(top, _config()))

        async def reset(self):
            top, c = self.top, self.config
            inputs = ["s_axis_dma_tvalid", "s_axis_cmd_tvalid", "s_axis_memset_tvalid", "m_axis_dma_tready"] + \
                     [f"m_axis_kv{p}_tready" for p in range(1, c.read_ports)]
            for name in inputs:
                getattr(top, name).value = 0
            top.aresetn.value = 0
            await ClockCycles(top.aclk, 5)
            held = {n: str(getattr(top, n).value) for n in
                    ("s_axis_dma_tready", "m_axis_dma_tvalid", "s_axis_cmd_tready", "s_axil_arready")}
            assert set(held.values()) == {"0"}, self.ctx(f"handshakes under aresetn: {held}")
            top.aresetn.value = 1
            for _ in range(RESET_STAGES + 20):
                await RisingEdge(top.aclk)
                if top.s_axil_arready.value:
                    break
            self.dut.rst = _AresetnAsRst(top.aresetn)
            try:
                await TB.reset(self)
            finally:
                self.dut.rst = top.rst
            # The engine-side K/V source and port-0 sink TB.reset made drive stand-ins: replace them.
            self.kv.stop()
            self.outs[0].stop()
            self.kv = FramedSource(top, top.rst, self.pause(), c, self.rng)
            self.outs[0] = FramedSink(top, top.rst, self.pause(), c)

    async def read_and_check(cache, layer, head, kv, what, via_register=False, port=0):
        """Cache.read_and_check, waiting after the READ completes (COMMANDS_DONE counts it once its
        last beat has entered the bridge) until the beats have come out of the framing."""
        start = len(tb.outs[port].items)
        n = await cache.issue_read(layer, head, kv, what, via_register=via_register, port=port)
        want = tb.expected[port][len(tb.expected[port]) - n:]
        await cache.settle(f"{what}: READ layer {layer} head {head} kv {kv}")
        await tb.until(lambda: len(tb.outs[port].items) >= start + n, f"{what}: READ beats out of the bridge", 2000)
        got = tb.decode_out(port, start)
        assert len(got) == len(want), tb.ctx(f"{what}: READ gave {len(got)} beats, expected {len(want)}")
        for k, (g, w) in enumerate(zip(got, want)):
            assert g == w, tb.ctx(f"{what}: READ layer {layer} head {head} kv {kv} beat {k}: {g} != {w}")
        cache.beats_checked += len(got)

    tb = BridgedTB(dut)
    await tb.reset()
    c = tb.config
    cache = default_cache(tb, c.max_head_dim)
    await cache.program()
    await tb.write("CTRL", 1)
    for _ in range(3):
        cache.send_token()
    await cache.settle("three tokens through the MM2S framing")
    cache.check_image("three tokens")
    await read_and_check(cache, 0, 0, 0, "READ on port 0 (S2MM framing) via s_axis_cmd")
    await read_and_check(cache, 1, 1, 1, "READ on port 0 (S2MM framing) via the CMD register", via_register=True)
    await read_and_check(cache, 0, 1, 1, "READ on port 1 (plain stream)", port=c.read_ports - 1)
    for _ in range(5):   # the window of layer 0 wraps; sinks + window in one READ
        cache.send_token()
    await cache.settle("eight tokens")
    cache.check_image("eight tokens")
    for layer, head, kv in ((0, 0, 1), (0, 1, 0), (1, 0, 0)):
        await read_and_check(cache, layer, head, kv, f"READ layer {layer} head {head} kv {kv} on port 0")
    assert await tb.read("FRAME_ERRORS") == 0 and await tb.read("DDR_ERRORS") == 0, tb.ctx("frame / DDR errors")
    sink = tb.outs[0]
    per_vector = c.max_head_dim // c.dequant_lanes
    n0 = len(sink.items)
    assert sink.segments * per_vector == n0, tb.ctx(f"{sink.segments} headers for {n0} beats on m_axis_dma: "
                                                    f"expected one per {per_vector}-beat vector")
    tb.check.assert_clean(tb.ctx(""))
    dut._log.info(f"dma_bridge_top: {cache.written} rows written through {tb.kv.transfers} MM2S transfers, "
                  f"{cache.beats_checked} READ beats checked ({n0} through S2MM framing, {sink.segments} headers)")


class _WithStandIns:
    """The top's handles, plus stand-ins for the flat stream ports the bridged top does not have."""

    def __init__(self, top, stand_in: dict):
        self._top, self._stand_in = top, stand_in

    def __getattr__(self, name):
        if name in self._stand_in:
            return self._stand_in[name]
        return getattr(self._top, name)

    def __dir__(self):
        return sorted(set(dir(self._top)))
