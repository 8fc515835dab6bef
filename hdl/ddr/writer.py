"""BurstWriter: writes a byte stream to memory through an AXI4 master (AW, W, B).

Ports
=====
``cmd``   In stream ``{addr, length, tag}``: write ``length`` bytes from byte address ``addr``.
``data``  In stream ``{data}``: ``ceil(length / data_bytes)`` beats per command, in command order;
          byte k of the command is lane ``k % data_bytes`` of beat ``k // data_bytes`` (lane 0 =
          bits 7:0). Lanes past ``length`` in the last beat are ignored.
``done``  Out stream ``{tag, resp, error}``, one per command in command order, once every burst of
          the command has its B response. ``resp`` is the largest BRESP of the command's bursts
          (DECERR > SLVERR > EXOKAY > OKAY), ``error = resp != OKAY``. A failed command is reported,
          never retried; the writer goes on with the next one.
``drain`` In(1), ``idle`` Out(1): soft-reset handshake, see below.
``axi``   AXI4 write-only master: aligned INCR bursts of full-width beats, IDs 0, AWCACHE/AWPROT
          from the parameters. Bursts follow ``kvpath.hdl.ddr.bursts`` (<= max_burst beats, no 4 KiB
          crossing). WSTRB covers exactly the command's bytes: partial first and last beats, never
          a byte outside ``[addr, addr + length)``.

Length 0: no AXI traffic and no data beat; the command still takes its place in the ``done``
order (it completes with OKAY as soon as every earlier command has completed).

Flow and throughput
===================
Commands enter a two-entry skid buffer (so ``cmd.ready`` is a register) and are decoded at its
output (bus beats, lane offset, strobes) into the burst splitter (address side) and a descriptor
queue (data side). The splitter issues AW up to
``max_outstanding`` bursts ahead of their B responses (a zero-length command holds one of these
slots until it completes). The data side realigns input beats to the address with a byte rotation
plus a register holding the previous rotated beat, and loads one W beat per clock whenever the
input has a beat (or the beat needs none: the spill beat of an unaligned command), WREADY is high
and the beat belongs to a burst whose AW is already presented. Commands follow each other on W
without a gap; the only W beats that carry fewer than data_bytes bytes are the partial first and
last beats of unaligned commands. WVALID never rises before the AWVALID of its burst, and never
waits for AWREADY (AXI's deadlock rule).

The only combinational path from an input to an output is ``axi.wready`` -> ``data.ready`` (a
few gates: the data beat goes straight into the W register). ``cmd.ready``, ``axi.bready`` and
all VALIDs come from registers; ``done`` comes out of a 3-entry queue, and BREADY is low only
when the response completes a command and that queue is full.

Drain
=====
``drain`` is latched: from the cycle after it is first high, the writer is draining until
reset (a one-cycle pulse is enough). While draining it
accepts no command and no data beat, issues no new AW, finishes every burst whose AW has been
presented (already presented AWVALIDs stay up until accepted) by sending its remaining W beats
with WSTRB = 0 and the right WLAST (memory untouched), takes every B response, and then raises
``idle`` (a register). The owner then resets the writer (and its data source).

Which commands complete: exactly those whose every W beat was loaded with real data before the
drain was seen; their ``done`` records appear as usual (in order, with their responses), also
during the drain, and they always form a prefix of the accepted commands. The owner must keep
taking ``done`` while draining, or ``idle`` waits (a record is never lost). Every later command,
whether partly written, not started, or still waiting in the command buffer, is dropped without
a ``done`` record: a prefix of its bytes may
have been written (the beats loaded before the drain), nothing else. Zero-length commands
complete if they are inside the prefix and are dropped otherwise. Records still in ``done`` when
``idle`` rises are valid; the reset discards them.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from kvpath.hdl.ddr.bursts import (BurstSplitter, Mover, MoverParams, address_channel, byte_rotate_right,
                                   command_intake, lanes_at_or_below, lanes_below, up_down)
from kvpath.hdl.lib.streams import Queue

__all__ = ["BurstWriter"]


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


class BurstWriter(Mover):
    def __init__(self, **params):
        p = MoverParams(**params)
        self.data_layout = data.StructLayout({"data": unsigned(8 * p.data_bytes)})
        self.done_layout = data.StructLayout({"tag": unsigned(p.tag_bits), "resp": unsigned(2), "error": unsigned(1)})
        super().__init__(p, write=True, members={
            "data": In(stream.Signature(self.data_layout)),
            "done": Out(stream.Signature(self.done_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        lanes, s = p.data_bytes, p.shift
        wbits = (p.window - 1).bit_length()
        axi = self.axi

        draining, cmd_q, cmd, zero, off, last_byte, bus_beats = command_intake(m, self, p)

        desc_layout = data.StructLayout({
            "off": unsigned(s),                  # lane of the first byte
            "end": unsigned(s),                  # lane of the last byte in its bus beat
            "beats": unsigned(len(bus_beats)),   # bus beats
            "spill": unsigned(1),                # one more bus beat than input beats
            "pos": unsigned(max(wbits, 1)),      # first beat's position in its burst window
        })
        desc_in = Signal(desc_layout)
        m.d.comb += [
            desc_in.off.eq(off),
            desc_in.end.eq(last_byte[:s]),
            desc_in.beats.eq(bus_beats),
            # The last input beat holds lanes 0..(length-1)%lanes; shifted by `off` they spill over.
            desc_in.spill.eq((off + (cmd.length - 1)[:s]) >> s),
            desc_in.pos.eq(cmd.addr[s:s + wbits] if wbits else 0),
        ]

        m.submodules.split = split = BurstSplitter(p)
        # Descriptors of commands taken but not yet written: at most one per burst in flight plus
        # the one being split.
        m.submodules.desc = desc = Queue(desc_layout.size, _pow2(p.max_outstanding + 1))
        # Room in the descriptor queue as a register: at least two free entries at the start of
        # the cycle (one push per cycle at most), so the accept decision stays shallow.
        desc_ok = Signal(init=1)
        m.d.sync += desc_ok.eq(desc.level <= desc.depth - 1)
        m.submodules.track = track = Queue(p.tag_bits + 2, _pow2(p.max_outstanding))
        m.submodules.done_q = done_q = Queue(self.done_layout.size, 2)

        take_cmd = Signal()
        m.d.comb += [
            split.cmd.payload.beat.eq(cmd.addr[s:]),
            split.cmd.payload.beats.eq(bus_beats),
            split.cmd.payload.phantom.eq(zero),
            split.cmd.valid.eq(cmd_q.o.valid & ~draining & (zero | desc_ok)),
            take_cmd.eq(split.cmd.valid & split.cmd.ready),
            cmd_q.o.ready.eq(take_cmd),
            desc.i.valid.eq(take_cmd & ~zero),
            desc.i.payload.eq(desc_in),
        ]
        cmd_tag = Signal(p.tag_bits)
        with m.If(take_cmd):
            m.d.sync += cmd_tag.eq(cmd.tag)

        # ---- address side: one tracking entry per burst (and per zero-length command)
        outstanding = Signal(range(p.max_outstanding + 1))
        track_ok = Signal(init=1)            # outstanding < max_outstanding, as a register
        track_in = Signal(data.StructLayout({"tag": unsigned(p.tag_bits), "last": unsigned(1), "phantom": unsigned(1)}))
        m.d.comb += [
            split.allow.eq(track_ok & ~draining),
            split.ready.eq(axi.awready),
            track_in.tag.eq(cmd_tag),
            track_in.last.eq(split.issue_last),
            track_in.phantom.eq(split.issue_phantom),
            track.i.valid.eq(split.issue),
            track.i.payload.eq(track_in),
            *address_channel(axi, "aw", split, p),
        ]

        # ---- data side
        # W credit: bursts whose AW is presented and whose WLAST is not loaded yet.
        credit = Signal(range(p.max_outstanding + 1))
        credit_ok = Signal()                 # credit != 0, as a register
        cur = Signal(desc_layout)            # the command being written
        cur_valid = Signal()
        cur_left = Signal.like(bus_beats)    # bus beats left, including the one being loaded
        cur_first = Signal()
        cur_last = Signal()                  # cur_left == 1
        cur_spill = Signal()                 # cur_last & spill: this beat takes no input beat
        pos = Signal(max(wbits, 1))
        rot_amt = Signal(s)                  # right rotation that puts input lane 0 at lane `off`
        from_hold = Signal(lanes)            # lanes below `off`: the previous input beat's bytes
        end_mask = Signal(lanes)             # lanes up to the last byte
        hold = Signal(8 * lanes)

        w_free = ~axi.wvalid | axi.wready
        need_in = ~cur_spill
        go_real = cur_valid & credit_ok & w_free & ~draining & (~need_in | self.data.valid)
        go_zero = cur_valid & credit_ok & w_free & draining
        go = go_real | go_zero
        wlast = Signal()
        m.d.comb += [
            wlast.eq(cur_last | ((pos == p.window - 1) if wbits else 1)),
            self.data.ready.eq(cur_valid & credit_ok & w_free & ~draining & need_in),
        ]

        rot = Signal(8 * lanes)
        m.d.comb += rot.eq(byte_rotate_right(self.data.payload.data, rot_amt, lanes))
        merged = Cat(*(Mux(from_hold[l], hold[8 * l:8 * l + 8], rot[8 * l:8 * l + 8]) for l in range(lanes)))
        strb = Signal(lanes)
        m.d.comb += strb.eq(Mux(cur_first, ~from_hold, ~0) & Mux(cur_last, end_mask, ~0))

        with m.If(go):
            m.d.sync += [
                axi.wvalid.eq(1),
                axi.wdata.eq(merged),
                axi.wstrb.eq(Mux(draining, 0, strb)),
                axi.wlast.eq(wlast),
                pos.eq(pos + 1),
                cur_left.eq(cur_left - 1),
                cur_last.eq(cur_left == 2),
                cur_spill.eq((cur_left == 2) & cur.spill),
                cur_first.eq(0),
            ]
            with m.If(self.data.ready):
                m.d.sync += hold.eq(rot)
        with m.Elif(axi.wready):
            m.d.sync += axi.wvalid.eq(0)

        # A command is fully written once its last beat is loaded with real data; the response
        # side emits `done` only for those (see Drain in the docstring).
        written = Signal(range(p.max_outstanding + 2))
        written_inc = go_real & cur_last

        load_desc = desc.o.valid & (~cur_valid | (go & cur_last))
        m.d.comb += desc.o.ready.eq(load_desc)
        nxt = data.View(desc_layout, desc.o.payload)
        with m.If(load_desc):
            m.d.sync += [
                cur.eq(nxt),
                cur_valid.eq(1),
                cur_left.eq(nxt.beats),
                cur_first.eq(1),
                cur_last.eq(nxt.beats == 1),
                cur_spill.eq((nxt.beats == 1) & nxt.spill),
                pos.eq(nxt.pos),
                rot_amt.eq(-nxt.off),
                from_hold.eq(lanes_below(nxt.off, lanes)),
                end_mask.eq(lanes_at_or_below(nxt.end, lanes)),
            ]
        with m.Elif(go & cur_last):
            m.d.sync += cur_valid.eq(0)

        credit_inc = split.issue & ~split.issue_phantom
        credit_dec = go & wlast
        credit_next = up_down(m, credit, credit_inc, credit_dec)
        m.d.sync += [credit.eq(credit_next), credit_ok.eq(credit_next != 0)]

        # ---- response side
        head = data.View(track_in.shape(), track.o.payload)
        dropping = Signal()                 # a command was cut by the drain: no more records
        emit = Signal()
        m.d.comb += emit.eq(head.last & Mux(head.phantom, ~dropping, written != 0))
        worst = Signal(2)                   # largest BRESP so far in the current command
        resp = Signal(2)
        m.d.comb += resp.eq(Mux(~head.phantom & (axi.bresp > worst), axi.bresp, worst))
        room = ~emit | done_q.i.ready
        pop = Signal()
        m.d.comb += [
            axi.bready.eq(track.o.valid & ~head.phantom & room),
            pop.eq(track.o.valid & room & (head.phantom | axi.bvalid)),
            track.o.ready.eq(pop),
        ]
        done_in = Signal(self.done_layout)
        m.d.comb += [
            done_in.tag.eq(head.tag),
            done_in.resp.eq(resp),
            done_in.error.eq(resp != 0),
            done_q.i.valid.eq(pop & emit),
            done_q.i.payload.eq(done_in),
            self.done.valid.eq(done_q.o.valid),
            self.done.payload.eq(done_q.o.payload),
            done_q.o.ready.eq(self.done.ready),
        ]
        outstanding_next = up_down(m, outstanding, split.issue, pop)
        m.d.sync += [outstanding.eq(outstanding_next), track_ok.eq(outstanding_next != p.max_outstanding)]
        with m.If(pop):
            m.d.sync += worst.eq(Mux(head.last, 0, resp))
            with m.If(head.last & ~head.phantom & (written == 0)):
                m.d.sync += dropping.eq(1)
        written_dec = pop & head.last & ~head.phantom & (written != 0)
        m.d.sync += written.eq(up_down(m, written, written_inc, written_dec))

        m.d.sync += self.idle.eq(draining & ~split.valid & ~axi.wvalid & (credit == 0) & (outstanding == 0))
        return m
