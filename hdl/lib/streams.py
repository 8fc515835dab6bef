"""Stream building blocks shared by the datapaths: a skid buffer and a memory FIFO, both with
every ready and valid a register or one compare of registers, so they end the combinational
paths of the units they join."""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer", "Queue"]


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
