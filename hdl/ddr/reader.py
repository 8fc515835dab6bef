"""BurstReader: reads byte ranges from memory through an AXI4 master (AR, R) into a beat stream.

Ports
=====
``cmd``   In stream ``{addr, length, tag}``: read ``length`` bytes from byte address ``addr``.
``data``  Out stream ``{data, last, error, tag}``: per command ``ceil(length / data_bytes)`` beats
          in command order, realigned so byte k of the command is lane ``k % data_bytes`` of beat
          ``k // data_bytes``; ``last`` on the command's final beat, whose lanes past ``length`` are
          zero; ``tag`` on every beat. ``error`` is set on the last beat of a command if any R beat
          of it had RRESP != OKAY. It is sticky and may rise earlier: from the beat that is
          formed when the first failing R beat arrives (the beat holding its first bytes, or the
          one before). It is never set on any beat of a command whose R beats were all OKAY.
``drain`` In(1), ``idle`` Out(1): soft-reset handshake, see below.
``axi``   AXI4 read-only master: aligned INCR bursts of full-width beats, IDs 0, ARCACHE/ARPROT
          from the parameters, bursts as in ``kvpath.hdl.ddr.bursts``.

Length 0: no AXI traffic and no output beat (nothing marks the command; the owner keeps count).

Credit and buffering
====================
R beats go into a buffer (a ``Memory`` of ``buffer_beats`` rounded up to a power of two, plus
its output register; ``buffer_beats`` defaults to ``max_outstanding * burst window``, which is
``max_outstanding * max_burst`` whenever a burst of max_burst beats fits in 4 KiB) before the
realigner. Every AR reserves its beats in the buffer; a reservation ends when its beat leaves
the buffer. An AR is issued only while at least a whole burst window of the ``buffer_beats`` is
unreserved (a registered test, slightly conservative) and fewer than ``max_outstanding`` bursts
are in flight. So every R beat the bus can send has a place: RREADY is constant 1, downstream
backpressure never reaches the HP port (which stays free for the writer) and cannot deadlock it.

Realigner: stage 1 rotates each buffered R beat by its command's lane offset; stage 2 keeps the
previous rotated beat and forms output beat j from its lanes and the next R beat's. The first R
beat of an unaligned command only fills the holding register; when a command ends without a
spilled R beat, its final output beat comes from the holding register alone in the same cycle
as the next command's first R beat fills it. So one R beat is consumed per clock in steady state,
at every alignment: output runs at one beat per clock except where the command has one more R
beat than output beats (the bus moved more bytes than the command asked for).

No combinational path from an input to an output: ``cmd.ready`` (a two-entry skid buffer),
``data`` and the AXI VALIDs come from registers, and ``axi.rready`` is constant 1.

Drain
=====
``drain`` is latched until reset (from the cycle after it is first high; a one-cycle pulse is
enough). While draining the reader accepts no command, issues no new AR
(an AR already presented stays up until accepted), accepts and discards every R beat still owed,
produces no new output beat (a beat already offered stays offered until taken: VALID is never
withdrawn), and raises ``idle`` (a register) once no R beat is owed and no AR is waiting. Commands
whose last beat was offered before the drain are complete; every other command, including those
still in the command buffer, is dropped, possibly after some of its beats; no marker is output
for them. The owner then resets the reader.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import Out

from kvpath.hdl.ddr.bursts import (BurstSplitter, Mover, MoverParams, address_channel, byte_rotate_right,
                                   command_intake, lanes_at_or_below, lanes_below, up_down)
from kvpath.hdl.lib.streams import Queue

__all__ = ["BurstReader"]


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


class BurstReader(Mover):
    def __init__(self, buffer_beats: int | None = None, **params):
        p = MoverParams(**params)
        self.buffer_beats = buffer_beats or p.max_outstanding * p.window
        if self.buffer_beats < p.window:
            raise ValueError(f"buffer_beats must hold at least one burst ({p.window} beats)")
        self.data_layout = data.StructLayout({
            "data": unsigned(8 * p.data_bytes), "last": unsigned(1), "error": unsigned(1),
            "tag": unsigned(p.tag_bits)})
        super().__init__(p, write=False, members={"data": Out(stream.Signature(self.data_layout))})

    def elaborate(self, platform):
        m = Module()
        p = self.p
        lanes, s = p.data_bytes, p.shift
        axi = self.axi

        draining, cmd_q, cmd, zero, off, last_byte, bus_beats = command_intake(m, self, p)

        desc_layout = data.StructLayout({
            "off": unsigned(s),
            "end": unsigned(s),                 # lane of the command's last byte in its output beat
            "beats": p.count_shape,             # R beats
            "spill": unsigned(1),               # one more R beat than output beats
            "tag": unsigned(p.tag_bits),
        })
        desc_in = Signal(desc_layout)
        m.d.comb += [
            desc_in.off.eq(off),
            desc_in.end.eq((cmd.length - 1)[:s]),
            desc_in.beats.eq(bus_beats),
            desc_in.spill.eq((off + (cmd.length - 1)[:s]) >> s),
            desc_in.tag.eq(cmd.tag),
        ]

        m.submodules.split = split = BurstSplitter(p)
        m.submodules.desc = desc = Queue(desc_layout.size, _pow2(p.max_outstanding + 1))
        # Room in the descriptor queue as a register: at least two free entries at the start of
        # the cycle (one push per cycle at most), so the accept decision stays shallow.
        desc_ok = Signal(init=1)
        m.d.sync += desc_ok.eq(desc.level <= desc.depth - 1)
        m.submodules.buf = buf = Queue(8 * lanes + 1, _pow2(self.buffer_beats))

        take_cmd = cmd_q.o.valid & ~draining & (zero | (split.cmd.ready & desc_ok))
        m.d.comb += [
            split.cmd.payload.beat.eq(cmd.addr[s:]),
            split.cmd.payload.beats.eq(bus_beats),
            split.cmd.valid.eq(cmd_q.o.valid & ~draining & ~zero & desc_ok),
            cmd_q.o.ready.eq(take_cmd),
            desc.i.valid.eq(take_cmd & ~zero),
            desc.i.payload.eq(desc_in),
        ]

        # ---- address side and credit
        free = Signal(range(self.buffer_beats + 1), init=self.buffer_beats)  # buffer entries not reserved
        bursts = Signal(range(p.max_outstanding + 1))                        # ARs presented, RLAST not seen
        owed = Signal(range(self.buffer_beats + 1))                          # R beats still to come
        r_beat = axi.rvalid & axi.rready
        r_last = r_beat & axi.rlast
        issue = split.issue
        # Registered credit flags keep the AR decision shallow. The buffer test asks for room for a
        # whole window rather than for the next burst's exact length: it only differs when the
        # buffer is nearly full, where it costs nothing measurable.
        free_ok = Signal(init=1)
        bursts_ok = Signal(init=1)
        m.d.comb += [
            split.allow.eq(~draining & free_ok & bursts_ok),
            split.ready.eq(axi.arready),
            *address_channel(axi, "ar", split, p),
            axi.rready.eq(1),
        ]
        buf_pop = Signal()
        free_next = up_down(m, free, buf_pop, issue, down_by=split.issue_len)
        bursts_next = up_down(m, bursts, issue, r_last)
        m.d.sync += [
            free.eq(free_next),
            free_ok.eq(free_next >= p.window),
            bursts.eq(bursts_next),
            bursts_ok.eq(bursts_next != p.max_outstanding),
            owed.eq(up_down(m, owed, issue, r_beat, up_by=split.issue_len)),
        ]
        m.d.comb += [
            buf.i.valid.eq(r_beat & ~draining),
            buf.i.payload.eq(Cat(axi.rdata, axi.rresp != 0)),
        ]

        # ---- stage 1: tag each R beat with its command, rotate it by the command's offset
        cur = Signal(desc_layout)
        cur_valid = Signal()
        cur_left = Signal(p.count_shape)
        cur_first = Signal()
        cur_last = Signal()
        s1 = Signal(data.StructLayout({
            "data": unsigned(8 * lanes), "err": unsigned(1), "first": unsigned(1), "last": unsigned(1),
            "spill": unsigned(1), "from_next": unsigned(lanes), "end_mask": unsigned(lanes),
            "tag": unsigned(p.tag_bits)}))
        s1_valid = Signal()
        s1_take = Signal()  # stage 2 consumes s1 this cycle
        s1_free = ~s1_valid | s1_take
        load = cur_valid & buf.o.valid & s1_free & ~draining
        m.d.comb += [buf.o.ready.eq(load), buf_pop.eq(load)]
        with m.If(load):
            m.d.sync += [
                s1.data.eq(byte_rotate_right(buf.o.payload[:8 * lanes], cur.off, lanes)),
                s1.err.eq(buf.o.payload[-1]),
                s1.first.eq(cur_first),
                s1.last.eq(cur_last),
                s1.spill.eq(cur.spill),
                # After rotation, lanes >= lanes - off of an R beat finish the previous output beat.
                s1.from_next.eq(~lanes_below(lanes - cur.off, lanes)),
                s1.end_mask.eq(lanes_at_or_below(cur.end, lanes)),
                s1.tag.eq(cur.tag),
                cur_left.eq(cur_left - 1),
                cur_first.eq(0),
                cur_last.eq(cur_left == 2),
            ]
        with m.If(load):
            m.d.sync += s1_valid.eq(1)
        with m.Elif(s1_take):
            m.d.sync += s1_valid.eq(0)

        load_desc = desc.o.valid & (~cur_valid | (load & cur_last))
        m.d.comb += desc.o.ready.eq(load_desc)
        nxt = data.View(desc_layout, desc.o.payload)
        with m.If(load_desc):
            m.d.sync += [cur.eq(nxt), cur_valid.eq(1), cur_left.eq(nxt.beats), cur_first.eq(1),
                         cur_last.eq(nxt.beats == 1)]
        with m.Elif(load & cur_last):
            m.d.sync += cur_valid.eq(0)

        # ---- stage 2: combine consecutive rotated beats into output beats
        out = self.data
        hold = Signal(8 * lanes)
        hold_err = Signal()           # some R beat of the held command failed
        hold_tag = Signal(p.tag_bits)
        hold_end = Signal(lanes)
        pending = Signal()            # hold is the final output beat of its command
        o_free = ~out.valid | out.ready
        prime = s1_valid & s1.first   # first R beat of a command: fills hold
        mid = s1_valid & ~s1.first    # completes the output beat in hold
        flush = pending & o_free
        emit_mid = ~pending & mid & o_free
        m.d.comb += s1_take.eq(~draining & (
            Mux(pending, flush & prime, prime | emit_mid)))
        joined = Cat(*(Mux(s1.from_next[l], s1.data[8 * l:8 * l + 8], hold[8 * l:8 * l + 8]) for l in range(lanes)))
        final_mid = s1.last & s1.spill
        with m.If(~draining & flush):
            m.d.sync += [
                out.valid.eq(1),
                out.payload.data.eq(hold & _expand(hold_end)),
                out.payload.last.eq(1),
                out.payload.error.eq(hold_err),
                out.payload.tag.eq(hold_tag),
                pending.eq(0),
            ]
        with m.Elif(~draining & emit_mid):
            m.d.sync += [
                out.valid.eq(1),
                out.payload.data.eq(joined & Mux(final_mid, _expand(s1.end_mask), ~0)),
                out.payload.last.eq(final_mid),
                out.payload.error.eq(hold_err | s1.err),
                out.payload.tag.eq(s1.tag),
            ]
        with m.Elif(out.ready):
            m.d.sync += out.valid.eq(0)
        with m.If(s1_take):
            m.d.sync += [hold.eq(s1.data), hold_tag.eq(s1.tag), hold_end.eq(s1.end_mask)]
            m.d.sync += hold_err.eq(Mux(s1.first, 0, hold_err) | s1.err)
            with m.If(s1.last & ~s1.spill):
                m.d.sync += pending.eq(1)

        m.d.sync += self.idle.eq(draining & ~split.valid & (owed == 0))
        return m


def _expand(mask):
    """Byte-lane mask to bit mask."""
    return Cat(*(bit.replicate(8) for bit in mask))
