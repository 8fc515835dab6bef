"""Simulation tops for the static-scale datapaths: one command stream in, one result per command out.

The bulk harness drives a single input stream, so the table has to travel on it: each input beat is a
*command*, either a data beat (elements or codes plus context) or a MEMSET (``ScaleWrite`` record in
the low 64 body bits), told apart by the ``memset`` bit. Both go through the real write path
(``ScaleCache.write``), never through memory initialisation. A MEMSET is applied in the cycle it is
accepted, so every data beat sees exactly the writes that precede it in the command stream (the
cache's "writes from earlier cycles" rule), which is the order the golden model replays.

Every command yields one output beat, so any prefix of the stream has as many outputs as inputs (the
harness replays prefixes under throttling): a MEMSET enters the datapath as an all-zero beat and its
output comes out as zeros with the ``memset`` bit set; a 1-bit FIFO carries each command's kind to
the output. ``write_error_count`` counts the cache's refusals.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out, connect

from kvpath.config import DEFAULT, ELEM_BITS, KVPathConfig
from kvpath.hdl.static.cache import ScaleCache, context_layout
from kvpath.hdl.static.dequant import StaticDequantizer
from kvpath.hdl.static.quant import StaticQuantizer

MEMSET_BITS = 64  # index (32) then value (32)


def _padded(fields: dict) -> data.StructLayout:
    pad = -data.StructLayout(fields).size % 8
    return data.StructLayout({**fields, **({"pad": unsigned(pad)} if pad else {})})


def beat_bits(target: str, fmt_code_bits: int, lanes: int) -> tuple[int, int]:
    """(input data bits, output data bits) of one beat."""
    elems, codes = lanes * ELEM_BITS, lanes * fmt_code_bits
    return (elems, codes) if target == "quantizer" else (codes, elems)


def command_layout(target: str, code_bits: int, lanes: int, config: KVPathConfig = DEFAULT):
    data_in, _ = beat_bits(target, code_bits, lanes)
    return _padded({"body": unsigned(max(data_in, MEMSET_BITS)), "ctx": context_layout(config),
                    "memset": unsigned(1)})


def result_layout(target: str, code_bits: int, lanes: int, config: KVPathConfig = DEFAULT):
    _, data_out = beat_bits(target, code_bits, lanes)
    return _padded({"body": unsigned(data_out), "ctx": context_layout(config), "memset": unsigned(1)})


class StaticTop(wiring.Component):
    """ScaleCache + StaticQuantizer (``target="quantizer"``) or StaticDequantizer, on one command stream."""

    def __init__(self, target: str, fmt: str, lanes: int, elem: str = "fp16", config: KVPathConfig = DEFAULT):
        if target == "quantizer":
            self.core = StaticQuantizer(fmt, lanes, elem, config)
            self.cache = ScaleCache(fmt, elem, config, quant_lanes=lanes)
            counters = ("nonfinite_count", "saturated_count", "context_error_count")
        elif target == "dequantizer":
            self.core = StaticDequantizer(fmt, lanes, elem, config)
            self.cache = ScaleCache(fmt, elem, config, dequant_lanes=lanes)
            counters = ("saturated_count", "nonfinite_count", "context_error_count")
        else:
            raise ValueError(f"unknown target {target!r}")
        self.target = target
        self.counter_names = (*counters, "write_error_count")
        code_bits = self.core.fmt.code_bits
        self.cmd_layout = command_layout(target, code_bits, lanes, config)
        self.res_layout = result_layout(target, code_bits, lanes, config)
        super().__init__({
            "i": In(stream.Signature(unsigned(self.cmd_layout.size))),
            "o": Out(stream.Signature(unsigned(self.res_layout.size))),
            **{name: Out(32) for name in self.counter_names},
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.cache = cache = self.cache
        connect(m, core.scales, cache.quant if self.target == "quantizer" else cache.dequant)
        m.submodules.kinds = kinds = SyncFIFOBuffered(width=1, depth=core.out_queue_depth + 1)  # one per beat the core may hold

        cmd = Signal(self.cmd_layout)
        m.d.comb += cmd.eq(self.i.payload)
        data_field = "elems" if self.target == "quantizer" else "codes"
        width = core.in_layout["ctx"].offset  # the data field comes first
        accept = Signal()
        m.d.comb += [
            core.i.valid.eq(self.i.valid & kinds.w_rdy),
            self.i.ready.eq(core.i.ready & kinds.w_rdy),
            accept.eq(self.i.valid & self.i.ready),
            getattr(core.i.payload, data_field).eq(Mux(cmd.memset, 0, cmd.body[:width])),
            core.i.payload.ctx.eq(Mux(cmd.memset, 0, cmd.ctx)),
            cache.write.valid.eq(accept & cmd.memset),
            cache.write.payload.index.eq(cmd.body[:32]),
            cache.write.payload.value.eq(cmd.body[32:64]),
            kinds.w_en.eq(accept),
            kinds.w_data.eq(cmd.memset),
        ]

        res = Signal(self.res_layout)
        out_field = "codes" if self.target == "quantizer" else "elems"
        memset = kinds.r_data[0]
        m.d.comb += [
            self.o.valid.eq(core.o.valid & kinds.r_rdy),
            core.o.ready.eq(self.o.ready & kinds.r_rdy),
            kinds.r_en.eq(self.o.valid & self.o.ready),
            res.body.eq(Mux(memset, 0, getattr(core.o.payload, out_field))),
            res.ctx.eq(Mux(memset, 0, core.o.payload.ctx)),
            res.memset.eq(memset),
            self.o.payload.eq(res),
        ]

        for name in self.counter_names[:-1]:
            m.d.comb += getattr(self, name).eq(getattr(core, name))
        m.d.sync += self.write_error_count.eq(self.write_error_count + cache.error)
        return m
