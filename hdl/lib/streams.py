"""Stream building blocks shared by the datapaths: a skid buffer, a memory FIFO, the credit-counted
output queue of a pipeline that never stalls, and a beat splitter. Every valid here is a register;
every ready is a register or a compare of registers, except the splitter's (see there), so they end
the combinational paths of the units they join."""

from amaranth.hdl import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from kvpath.hdl.lib.bits import lookup

__all__ = ["SkidBuffer", "Queue", "CreditQueue", "BeatSplitter"]


class SkidBuffer(wiring.Component):
    """A two-entry stream register whose ``i.ready`` is a register: it cuts every combinational
    path between its two sides and still passes one beat per clock."""

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        skid = Signal.like(self.i.payload)
        skid_valid = Signal()
        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(~self.o.valid | self.o.ready):
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & ~skid_valid):
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m


class Queue(wiring.Component):
    """A FIFO of ``depth`` (a power of two) memory entries plus an output register, so it holds
    up to ``depth + 1`` items; ``o.payload`` is the memory's read register.

    Built from a write and a read pointer: every READY/VALID strobe only enables a pointer or the
    output register, and full, empty and ``level`` come from registers, so no strobe feeds an
    adder (SyncFIFOBuffered's level counter put ``o.ready`` in front of a carry chain).
    """

    def __init__(self, width: int, depth: int):
        if depth < 1 or depth & (depth - 1):
            raise ValueError(f"Queue depth must be a power of two, got {depth}")
        self.width, self.depth = width, depth
        super().__init__({
            "i": In(stream.Signature(unsigned(width))),
            "o": Out(stream.Signature(unsigned(width))),
            "level": Out(range(depth + 2)),
        })

    def elaborate(self, platform):
        m = Module()
        abits = (self.depth - 1).bit_length()
        m.submodules.mem = mem = Memory(shape=unsigned(self.width), depth=self.depth, init=[])
        wr = mem.write_port()
        rd = mem.read_port(domain="sync")
        wp = Signal(abits + 1)
        rp = Signal(abits + 1)
        empty = wp == rp
        full = (wp[abits] != rp[abits]) & (wp[:abits] == rp[:abits]) if abits else wp != rp
        push = self.i.valid & ~full
        pop = (~self.o.valid | self.o.ready) & ~empty
        stored = Signal(abits + 1)
        m.d.comb += [
            self.i.ready.eq(~full),
            wr.addr.eq(wp[:abits]),
            wr.data.eq(self.i.payload),
            wr.en.eq(push),
            rd.addr.eq(rp[:abits]),
            rd.en.eq(pop),
            self.o.payload.eq(rd.data),
            stored.eq(wp - rp),
            self.level.eq(stored + self.o.valid),
        ]
        with m.If(push):
            m.d.sync += wp.eq(wp + 1)
        with m.If(pop):
            m.d.sync += rp.eq(rp + 1)
        with m.If(~self.o.valid | self.o.ready):
            m.d.sync += self.o.valid.eq(~empty)
        return m


class CreditQueue(wiring.Component):
    """The output of a pipeline that never stalls: a ``Queue`` and a count of its places that no
    accepted input has reserved yet (credits).

    The pipeline takes an input only while ``room`` says ``per_take`` places are unreserved, and
    reserves them with ``take`` in the cycle it takes it; an item leaving the queue frees its
    place. So every item the pipeline pushes finds a place (``i.ready`` can be ignored), and the
    pipeline's input ready needs no path from ``o.ready``: ``room`` is a register. The queue holds
    ``depth + 1`` items (its memory and its output register); at one take per clock it does not
    throttle the input while ``depth + 1`` covers every item between ``take`` and leaving.
    """

    @staticmethod
    def depth_for(in_flight: int) -> int:
        """The smallest power of two above ``in_flight``, the most items (places) a unit can have
        reserved and not yet seen freed: the queue then holds ``depth + 1`` places. Each unit
        derives its own ``in_flight`` from its latency and how many places a take reserves."""
        return 1 << in_flight.bit_length()

    def __init__(self, shape, depth: int, per_take: int = 1):
        if not 1 <= per_take <= depth + 1:
            raise ValueError(f"CreditQueue: per_take {per_take} does not fit depth {depth} + 1")
        self.depth, self.per_take = depth, per_take
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "take": In(1),
            "room": Out(1, init=1),
            "empty": Out(1, init=1),  # nothing reserved: no item in the pipeline or the queue
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.queue = queue = Queue(Shape.cast(self.i.payload.shape()).width, self.depth)
        m.d.comb += [
            queue.i.valid.eq(self.i.valid), queue.i.payload.eq(self.i.payload), self.i.ready.eq(queue.i.ready),
            self.o.valid.eq(queue.o.valid), self.o.payload.eq(queue.o.payload), queue.o.ready.eq(self.o.ready),
        ]
        places = self.depth + 1
        credits = Signal(range(places + 1), init=places)
        freed = queue.o.valid & queue.o.ready
        credits_next = credits - Mux(self.take, self.per_take, 0) + freed
        m.d.sync += [credits.eq(credits_next), self.room.eq(credits_next >= self.per_take),
                     self.empty.eq(credits_next == places)]
        return m


class BeatSplitter(wiring.Component):
    """Beats of ``lanes_in`` elements in, each as ``lanes_in // lanes_out`` beats of ``lanes_out``
    out, lowest elements first: a wide stream into a narrower datapath.

    One register holds the beat and a count picks its part, so a new beat loads on the clock its
    last part leaves and a sink ready on every clock takes a part per clock. ``i.ready`` is
    ``~full | (o.ready & last part)``: it follows ``o.ready`` within the clock, so give it a sink
    whose ready is a register (the quantizer's is) to keep the path one gate long.
    """

    def __init__(self, shape, lanes_in: int, lanes_out: int):
        if lanes_out < 1 or lanes_in % lanes_out:
            raise ValueError(f"BeatSplitter: {lanes_in} lanes do not split into beats of {lanes_out}")
        self.shape, self.lanes_in, self.lanes_out = shape, lanes_in, lanes_out
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(shape, lanes_in))),
            "o": Out(stream.Signature(data.ArrayLayout(shape, lanes_out))),
        })

    def elaborate(self, platform):
        m = Module()
        parts = self.lanes_in // self.lanes_out
        width = Shape.cast(self.shape).width * self.lanes_out
        held = Signal.like(self.i.payload)
        part = Signal(range(parts))
        last = part == parts - 1
        m.d.comb += [
            self.i.ready.eq(~self.o.valid | (self.o.ready & last)),
            self.o.payload.eq(lookup(part, [held.as_value()[k * width:(k + 1) * width] for k in range(parts)],
                                     width)),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [held.eq(self.i.payload), part.eq(0), self.o.valid.eq(1)]
        with m.Elif(self.o.valid & self.o.ready):
            m.d.sync += part.eq(part + 1)
            with m.If(last):
                m.d.sync += self.o.valid.eq(0)
        return m
