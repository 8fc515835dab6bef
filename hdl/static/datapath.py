"""What the static-scale quantizer and dequantizer share: the format check, the streams with the
beat's context beside the data, the scale-cache read port, the counters, the stage enable, and the
decoding of a 16-bit float into the fields their exact products use.

Neither pipeline stalls: every register loads on every clock (no clock enable, so no enable net
fans out to the datapath) and bubbles travel as cleared valid bits. The last stage's register
enters an output queue (``lib.streams.CreditQueue``) in which each beat reserves its place as it is
accepted, so ``i.ready`` is a register (a place is free), no ready path enters the pipeline, and a
beat per clock goes through while ``o.ready`` is high.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from kvpath import scales
from kvpath.config import KVPathConfig, check_elem, get_format
from kvpath.elements import element
from kvpath.hdl.lib.counter import EventCounter
from kvpath.hdl.lib.streams import CreditQueue
from kvpath.hdl.static.cache import cache_row, context_layout, read_signature


def static_format(fmt: str):
    f = get_format(fmt)
    if not f.needs_scale_cache:
        raise ValueError(f"{f.name} is not a static-scale format")
    return f


def decode(m: Module, bits, elem: str, name: str):
    """``(sign, sig, ee)`` of a 16-bit float: value = sig * 2**(ee - bias - frac), ``ee = max(e, 1)``."""
    et = element(elem)
    frac, exp = et.frac_bits, et.exp_bits
    e = bits[frac:frac + exp]
    sig = Signal(frac + 1, name=f"{name}_sig")
    ee = Signal(exp, name=f"{name}_ee")
    m.d.comb += [sig.eq(Cat(bits[:frac], e.any())), ee.eq(Mux(e.any(), e, 1))]
    return bits[15], sig, ee


class StaticDatapath(wiring.Component):
    """Base of ``StaticQuantizer`` and ``StaticDequantizer``: ``i`` carries ``data_in`` and the
    context, ``o`` carries ``data_out`` and the same context; ``counters`` are 32-bit outputs, in
    port order."""

    def __init__(self, fmt: str, lanes: int, elem: str, config: KVPathConfig, *, allowed_lanes,
                 what: str, data_in: dict, data_out: dict, counters: tuple[str, ...], latency: int):
        self.fmt = static_format(fmt)
        if lanes not in allowed_lanes:
            raise ValueError(f"{what} lanes must be one of {allowed_lanes}, got {lanes}")
        self.lanes, self.elem, self.config = lanes, check_elem(elem), config
        self.scope = scales.scope_of(fmt)
        self.ctx_layout = context_layout(config)
        self.in_layout = data.StructLayout({**data_in, "ctx": self.ctx_layout})
        self.out_layout = data.StructLayout({**data_out, "ctx": self.ctx_layout})
        # accepted in cycle t -> o.valid from cycle t + latency with o.ready high: the stages, then the
        # output queue's write and read
        self.latency = latency + 2
        # A beat reserves its place when taken and the credit count sees it freed latency + 1
        # clocks later; at one beat per clock that many are in flight.
        self.out_queue_depth = CreditQueue.depth_for(self.latency + 1)
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "scales": Out(read_signature(fmt, lanes, config)),
            **{name: Out(32) for name in counters},
        })

    def stage_enable(self, m: Module):
        """``(en, accept, out)``: the stage enable (None: every clock), a beat taken this cycle, and
        ``(valid, payload)`` of the last stage's register, which the subclass loads every clock and
        which enters the output queue."""
        m.submodules.out_queue = queue = CreditQueue(self.out_layout, self.out_queue_depth)
        wiring.connect(m, queue.o, wiring.flipped(self.o))
        accept = Signal()
        out_valid, out_payload = Signal(), Signal(self.out_layout)
        m.d.comb += [self.i.ready.eq(queue.room), accept.eq(self.i.valid & queue.room), queue.take.eq(accept),
                     queue.i.valid.eq(out_valid), queue.i.payload.eq(out_payload)]
        return None, accept, (out_valid, out_payload)

    def read_scales(self, m: Module, en, accept):
        """Address the cache with the accepted beat's context and count bad contexts; returns the
        context-valid flag of the beat being accepted."""
        row, ok0 = cache_row(m, self.i.payload.ctx, self.scope, self.lanes, self.config)
        m.d.comb += [self.scales.row.eq(row), self.scales.en.eq(1 if en is None else en)]
        m.submodules.context_errors = ctx_errors = EventCounter(1)
        m.d.comb += [ctx_errors.events.eq(~ok0), ctx_errors.fire.eq(accept),
                     self.context_error_count.eq(ctx_errors.count)]
        return ok0

