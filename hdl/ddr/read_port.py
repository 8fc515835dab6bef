"""ReadPort: one read port of the DDR engine (docs/kvcache.md, sections 3, 5 and 6).

A READ arrives as 1..3 *runs* of consecutive rows; the port reads each run's bytes through a
``BurstReader``, cuts the bus beats into the dequantizer's blocks (``ByteUnpacker``), dequantizes
them and tags every output beat with its row's token position; the READ's last beat carries TLAST
and the READ's error flag.

::

    run ─► intake ─► BurstReader ─► skid ─► ByteUnpacker ─► Dequantizer (output queue) ─► tagger ─► skid ─► o
              │            └ error of each run's last beat ─► err FIFO ─────────────────────┘
              └──── run info (rows, pos, final) ─► info FIFO ──────────────────────────────┘

Every skid buffer's ``i.ready`` is a register, and so is the dequantizer's (its pipeline never
stalls; its output queue takes back-pressure), so no ready path runs from one unit into the next
(issue 12: the chain from the tagger through the dequantizer and unpacker into the reader was
11 LUT levels in KVCacheTop); static formats whose beats of codes are narrower than the bus cut
them out of the bus beat directly, without the skid buffer and the unpacker.

Ports
=====
``run``            In stream ``run_layout(config)``: ``addr`` (byte address of the run's first
                   row), ``slots`` (rows, may be 0), ``pos`` (token position of the first row;
                   +1 per row), ``last`` (this run ends the READ). A READ is one or more runs, the
                   last with ``last``; an empty READ is one run with ``slots = 0, last = 1``.
                   Runs of a READ must follow one another without waiting for the port's output:
                   the final flag of a run is only known when the next run (or the READ's end)
                   has arrived, and that run's beats wait for it.
``row_bytes``      In(16), ``beats_per_row`` In: static configuration (``row_bytes(config,
                   head_dim)`` and ``head_dim / read_lanes``, at least 1), held stable while
                   ``busy``. A run's bytes (``slots * row_bytes``) must fit ``len_bits(config)``:
                   a whole region of ``kv_max_tokens`` rows of ``max_head_dim`` does.
``o``              Out stream ``out_layout(config)``: ``data`` (``read_lanes`` elements, lane 0 in
                   bits 15..0), ``user`` (``read_tag``: ``pos``, ``error``), ``last`` (TLAST).
                   ``error`` = any run of the READ had a non-OKAY R beat; it is set on the TLAST
                   beat only. An empty READ emits no beat. ``o.valid``/``o.payload`` are registers
                   and ``o.ready`` reaches no other port combinationally (a two-entry skid buffer).
``done``           Out(1): one-clock pulse per completed READ (its TLAST beat taken, or an empty
                   READ reached the tagger), in issue order; ``done_error`` with it.
``error_run``      Out(1): one-clock pulse per failed reader run (DDR_ERRORS counts these).
``blocks_read``    Out(1): one pulse per ``blocks_per_pulse`` 32-element blocks into the dequantizer
                   (block formats: per input beat; static formats: per beat of 32 lanes or more,
                   else per 32 / read_lanes beats).
``nonfinite_count``, ``saturated_count``: Out(32), the dequantizer's running counts (wrap).
``busy``           Out(1): a READ is in the port (taken and not yet done).
``drain`` In(1), ``idle`` Out(1): soft reset. ``drain`` (latched) stops run intake, drains the
                   reader (R beats still owed are taken and dropped) and stops forming output
                   beats; beats already formed (at most two, in the skid buffer) are still offered
                   until taken. ``idle`` = the reader is idle and no beat is offered: the owner
                   then resets the port.
``axi``            The BurstReader's AXI4 read master (AR, R), passed through.

Throughput: one output beat per clock while the bus delivers the bytes. The bus is the limit when
a beat's share of bytes exceeds the bus width: q8_0 at 16 lanes needs 17 bytes per output beat
from a 16-byte bus (16/17 = 0.94 beats per clock).

Static formats (int8_ph, int4_ph, int8_pc, int4_pc)
==================================================
The dequantizer is ``StaticDequantizer``; a row is ``head_dim x code_bits / 8`` bytes of codes, cut
into beats of ``read_lanes`` codes. Each run carries the READ's context (``layer``, ``head``,
``kv`` in ``run_layout``); it goes into a context FIFO when the run's reader command is issued and
leaves it when the run's last beat of codes enters the dequantizer, which reads its scales with
that context and channel ``beat-in-row x read_lanes`` through ``scales``, a read port of a
``ScaleCache`` dequantizer copy (``KVCacheTop`` gives each port its own copy). A beat of codes
narrower than the bus (int4 at 16 lanes: 8 bytes) is cut out of the bus beat directly (several per
bus beat; the run's final bus beat holds only the run's remaining beats of codes, the number
recorded with the context); wider or equal ones go through the ByteUnpacker as blocks do.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from kvpath.config import BLOCK_ELEMS, ELEM_BITS, KVPathConfig, load
from kvpath.hdl.lib.streams import Queue, SkidBuffer
from kvpath.hdl.ddr.reader import BurstReader
from kvpath.hdl.ddr.repack import ByteUnpacker, chunk_layout
from kvpath.hdl.static.cache import read_signature
from kvpath.hdl.static.dequant import StaticDequantizer
from kvpath.layout import POS_BITS, bits, read_tag

__all__ = ["ReadPort", "run_layout", "out_layout", "len_bits"]

SLOT_BITS = 32


def run_layout(c: KVPathConfig) -> data.StructLayout:
    fields = {"addr": unsigned(c.addr_width), "slots": unsigned(SLOT_BITS), "pos": unsigned(POS_BITS),
              "last": unsigned(1)}
    if c.format.needs_scale_cache:
        fields.update({"layer": unsigned(bits(c.max_layers)), "head": unsigned(bits(c.max_kv_heads)),
                       "kv": unsigned(1)})
    return data.StructLayout(fields)


def out_layout(c: KVPathConfig) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(unsigned(ELEM_BITS), c.dequant_lanes),
                              "user": read_tag(c), "last": unsigned(1)})


def max_row_bytes(c: KVPathConfig) -> int:
    f = c.format
    if f.needs_scale_cache:
        return c.max_head_dim * f.code_bits // 8
    return c.max_head_dim // BLOCK_ELEMS * f.block_bytes


def len_bits(c: KVPathConfig) -> int:
    """Reader length width: a whole region (kv_max_tokens rows of the widest row) in one run."""
    return min(32, (c.kv_max_tokens * max_row_bytes(c)).bit_length())


def log2(n: int) -> int:
    assert n > 0 and n & (n - 1) == 0, n
    return n.bit_length() - 1


class ReadPort(wiring.Component):
    def __init__(self, config: KVPathConfig):
        self.config = c = config
        family = c.format.family_info
        self.static = c.format.needs_scale_cache
        if self.static:
            self.dequant = StaticDequantizer(c.fmt, c.dequant_lanes, c.elem, c)
            self.blocks_per_pulse = max(1, c.dequant_lanes // BLOCK_ELEMS)
            self.chunk_bytes = c.dequant_lanes * c.format.code_bits // 8
        else:
            self.dequant = load(family.dequantizer)(c.fmt, c.dequant_lanes, c.elem)
            self.blocks_per_pulse = self.dequant.blocks_per_beat
            self.chunk_bytes = c.format.block_bytes * self.blocks_per_pulse
        if c.bus_bytes > self.chunk_bytes and not (self.static and c.bus_bytes % self.chunk_bytes == 0):
            self._MustUse__silence = True
            raise NotImplementedError(f"ReadPort: a {c.bus_bytes}-byte bus wider than the {self.chunk_bytes}-byte "
                                      f"dequantizer input of {c.fmt} at {c.dequant_lanes} lanes needs a narrowing gearbox")
        self.reader = BurstReader(addr_width=c.addr_width, data_bytes=c.bus_bytes, max_burst=c.max_burst,
                                  max_outstanding=c.max_outstanding, len_bits=len_bits(c), tag_bits=1,
                                  cache=c.axi_cache, prot=c.axi_prot)
        self.run_layout = run_layout(c)
        self.out_layout = out_layout(c)
        self.max_beats_per_row = c.max_head_dim // c.dequant_lanes
        extra = {"scales": Out(read_signature(c.fmt, c.dequant_lanes, c))} if self.static else {}
        super().__init__({
            "run": In(stream.Signature(self.run_layout)),
            "row_bytes": In(16),
            "beats_per_row": In(range(self.max_beats_per_row + 1)),
            "o": Out(stream.Signature(self.out_layout)),
            "done": Out(1),
            "done_error": Out(1),
            "error_run": Out(1),
            "blocks_read": Out(1),
            "nonfinite_count": Out(32),
            "saturated_count": Out(32),
            "busy": Out(1),
            "drain": In(1),
            "idle": Out(1),
            "axi": Out(self.reader.axi.signature),
            **extra,
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        m.submodules.reader = reader = self.reader
        split = self.chunk_bytes < c.bus_bytes   # static only: several beats of codes per bus beat
        if not split:
            m.submodules.unpack = unpack = ByteUnpacker(c.bus_bytes, self.chunk_bytes)
        m.submodules.dequant = dq = self.dequant
        connect(m, flipped(self.axi), reader.axi)

        draining = Signal()
        with m.If(self.drain):
            m.d.sync += draining.eq(1)
        m.d.comb += reader.drain.eq(self.drain | draining)

        # ---- intake: one run at a time. The product is registered (a DSP with its output
        # register) so that the reader command sees no multiplier in front of it.
        info_layout = data.StructLayout({
            "last_row": unsigned(SLOT_BITS),    # slots - 1
            "pos": unsigned(POS_BITS),
            "final": unsigned(1),               # the run's last beat is the READ's TLAST
            "marker": unsigned(1),              # an empty READ: no beat, only its done
            "single": unsigned(1),              # slots == 1: the first row is the last
        })
        m.submodules.info = info = Queue(info_layout.size, 16)
        run = Signal(self.run_layout)
        run_v = Signal()
        length = Signal(len_bits(c))
        issued = Signal()       # the reader took the run's command (or it has none)
        handled = Signal()      # the run's info is pushed, held as pending, or dropped
        nz = run.slots != 0
        m.d.comb += self.run.ready.eq(~run_v & ~draining)
        with m.If(self.run.valid & self.run.ready):
            p = self.run.payload
            m.d.sync += [run.eq(p), run_v.eq(1), length.eq(p.slots * self.row_bytes),
                         issued.eq(p.slots == 0), handled.eq(0)]
        with m.Elif(run_v & issued & handled):
            m.d.sync += run_v.eq(0)

        if self.static:
            # Per run with rows, in reader command order: the context, and how many beats of codes
            # the run's final bus beat holds (0: all of them). Pushed as the command is issued.
            ctx_layout = data.StructLayout({
                "layer": run.layer.shape(), "head": run.head.shape(), "kv": unsigned(1),
                "tail": unsigned(max(1, log2(max(1, c.bus_bytes // self.chunk_bytes)))),
            })
            m.submodules.ctxq = ctxq = Queue(ctx_layout.size, 16)
            push_ctx = data.View(ctx_layout, ctxq.i.payload)
            cmd_valid = run_v & ~issued & ctxq.i.ready
            m.d.comb += [
                ctxq.i.valid.eq(run_v & ~issued & reader.cmd.ready),
                push_ctx.layer.eq(run.layer), push_ctx.head.eq(run.head), push_ctx.kv.eq(run.kv),
                push_ctx.tail.eq(length[log2(self.chunk_bytes):] if split else 0),
            ]
        else:
            cmd_valid = run_v & ~issued
        m.d.comb += [
            reader.cmd.valid.eq(cmd_valid),
            reader.cmd.payload.addr.eq(run.addr),
            reader.cmd.payload.length.eq(length),
            reader.cmd.payload.tag.eq(0),
        ]
        with m.If(reader.cmd.valid & reader.cmd.ready):
            m.d.sync += issued.eq(1)

        # A non-final run waits in `pend` until the next run of its READ shows whether any later
        # run has rows: only then is it known whether its last beat is the READ's TLAST.
        pend = Signal(info_layout)
        pend_v = Signal()
        cur_info = Signal(info_layout)
        m.d.comb += [cur_info.last_row.eq(run.slots - 1), cur_info.pos.eq(run.pos), cur_info.final.eq(1),
                     cur_info.marker.eq(~nz), cur_info.single.eq(run.slots == 1)]
        # The push is an expression, not assignments under the Ifs below: those became an always
        # block that Icarus never runs while its inputs keep their time-0 values
        # (tests/top/test_generated_verilog.py). The pending run is final exactly when nothing
        # with rows follows it.
        final_at = info_layout["final"].offset
        pend_raw = pend.as_value()
        pend_out = Cat(pend_raw[:final_at], ~nz, pend_raw[final_at + 1:])
        m.d.comb += [
            info.i.valid.eq(run_v & ~handled & Mux(pend_v, nz | run.last, run.last)),
            info.i.payload.eq(Mux(pend_v, pend_out, cur_info.as_value())),
        ]
        pushed = info.i.valid & info.i.ready
        with m.If(run_v & ~handled):
            with m.If(pend_v):
                with m.If(nz | run.last):
                    with m.If(pushed):
                        m.d.sync += pend_v.eq(0)
                        with m.If(~nz):
                            m.d.sync += handled.eq(1)
                with m.Else():
                    m.d.sync += handled.eq(1)
            with m.Elif(nz & ~run.last):
                m.d.sync += [pend.eq(cur_info), pend.final.eq(0), pend_v.eq(1), handled.eq(1)]
            with m.Elif(run.last):
                with m.If(pushed):
                    m.d.sync += handled.eq(1)
            with m.Else():
                m.d.sync += handled.eq(1)

        # ---- reader -> unpacker (or splitter), tapping each run's error as its last beat passes
        # One entry per run whose last beat has passed and whose info the tagger has not yet
        # consumed: such a run's info is in `info` (at most 17), in `pend` or at the intake, so
        # at most 19 entries; with room for 33 the queue is never full, and the block path does
        # not wait on its ready (which put its pointer compare in front of the reader).
        m.submodules.errs = errs = Queue(1, 32)
        rd = reader.data
        run_end = rd.payload.last
        # `src`: the dequantizer's input chunks, `last` on each run's final one.
        if split:
            src = stream.Signature(chunk_layout(self.chunk_bytes)).create(path=("src",))
            # A bus beat holds n beats of codes; the run's final bus beat only ctx.tail of them
            # (when not 0). The bus beat is taken with its last beat of codes.
            n = c.bus_bytes // self.chunk_bytes
            head_ctx = data.View(ctx_layout, ctxq.o.payload)
            k = Signal(range(n), name="split_index")
            here = Mux(run_end & (head_ctx.tail != 0), head_ctx.tail, n)   # beats of codes in this bus beat
            beat_done = k == here - 1
            ok = ctxq.o.valid & (~run_end | errs.i.ready)
            m.d.comb += [
                src.valid.eq(rd.valid & ok),
                src.payload.data.eq(rd.payload.data.word_select(k, 8 * self.chunk_bytes)),
                src.payload.last.eq(run_end & beat_done),
                rd.ready.eq(src.ready & beat_done & ok),
            ]
            with m.If(src.valid & src.ready):
                m.d.sync += k.eq(Mux(beat_done, 0, k + 1))
        else:
            # The skid buffer ends the ready path from the dequantizer and the tagger at the
            # reader: without it that path ran through the unpacker into the reader's buffer
            # read enables (11 LUT levels in KVCacheTop).
            m.submodules.beat_skid = beat_skid = SkidBuffer(chunk_layout(c.bus_bytes))
            m.d.comb += [
                beat_skid.i.payload.data.eq(rd.payload.data),
                beat_skid.i.payload.last.eq(run_end),
                beat_skid.i.valid.eq(rd.valid),
                rd.ready.eq(beat_skid.i.ready),
            ]
            connect(m, beat_skid.o, unpack.i)
            # The dequantizer's i.ready is a register (its output queue takes back-pressure), so
            # the unpacker feeds it directly.
            src = unpack.o
        m.d.comb += [
            errs.i.valid.eq(rd.valid & rd.ready & run_end),
            errs.i.payload.eq(rd.payload.error),
        ]
        m.d.sync += self.error_run.eq(rd.valid & rd.ready & run_end & rd.payload.error)

        # ---- chunks -> dequantizer: rows are whole blocks (whole beats of codes), so the group
        # `last` only serves to drop the bus padding after each run (and, static, to end the
        # run's context).
        taken = dq.i.valid & dq.i.ready
        if self.static:
            head_ctx = data.View(ctx_layout, ctxq.o.payload)
            in_beat = Signal(range(max(2, self.max_beats_per_row)), name="in_beat")   # beat in the row
            row_end = (in_beat == self.beats_per_row - 1) | src.payload.last
            ctx = dq.i.payload.ctx
            m.d.comb += [
                dq.i.valid.eq(src.valid & ctxq.o.valid),
                src.ready.eq(dq.i.ready & ctxq.o.valid),
                dq.i.payload.codes.eq(src.payload.data),
                ctx.layer.eq(head_ctx.layer), ctx.head.eq(head_ctx.head), ctx.kv.eq(head_ctx.kv),
                ctx.channel.eq(in_beat << log2(c.dequant_lanes)),
                ctxq.o.ready.eq(taken & src.payload.last),
            ]
            with m.If(taken):
                m.d.sync += in_beat.eq(Mux(row_end, 0, in_beat + 1))
            if c.dequant_lanes < BLOCK_ELEMS:
                # One pulse per 32-element block: rows start at block boundaries.
                pulse = taken & in_beat[:log2(BLOCK_ELEMS // c.dequant_lanes)].all()
            else:
                pulse = taken
        else:
            m.d.comb += [
                dq.i.valid.eq(src.valid),
                dq.i.payload.eq(src.payload.data),
                src.ready.eq(dq.i.ready),
            ]
            pulse = taken
        m.d.comb += [
            self.blocks_read.eq(pulse),
            self.nonfinite_count.eq(dq.nonfinite_count),
            self.saturated_count.eq(dq.saturated_count),
        ]
        if self.static:
            connect(m, dq.scales, flipped(self.scales))

        # ---- tagger: position from the row count, TLAST and error from the run info. The
        # dequantizer's output is its queue's registers, and its ready reaches only that queue.
        dq_o = dq.o
        m.submodules.skid = skid = SkidBuffer(self.out_layout)
        head = data.View(info_layout, info.o.payload)
        beat = Signal(range(max(2, self.max_beats_per_row)))
        row = Signal(SLOT_BITS)
        acc_err = Signal()      # errors of the READ's earlier runs
        # The row and beat compares are registered flags, computed when the counters step: as
        # compares on the counters they led the ready path into the dequantizer and the queues
        # (10 LUT levels in KVCacheTop). beats_per_row is static while the port is busy.
        beat_zero = Signal(init=1)   # beat == 0
        beat_last = Signal()         # beat == beats_per_row - 1, while beat != 0
        one_beat = Signal()          # beats_per_row <= 1: every beat ends its row
        row_fresh = Signal(init=1)   # row == 0 of the current run (its info at the queue head)
        row_last = Signal()          # row == head.last_row, while row != 0
        m.d.sync += one_beat.eq(self.beats_per_row <= 1)
        end_row = Mux(beat_zero, one_beat, beat_last)
        end_run = end_row & Mux(row_fresh, head.single, row_last)
        formable = info.o.valid & ~head.marker & dq_o.valid & (~end_run | errs.o.valid) & ~draining
        fire = formable & skid.i.ready
        final = end_run & head.final
        out = skid.i.payload
        m.d.comb += [
            skid.i.valid.eq(formable),
            out.data.eq(dq_o.payload.elems if self.static else dq_o.payload),
            out.user.pos.eq(head.pos + row),
            out.user.error.eq(final & (acc_err | errs.o.payload)),
            out.last.eq(final),
            dq_o.ready.eq(fire),
        ]
        with m.If(fire):
            with m.If(end_row):
                m.d.sync += [beat.eq(0), beat_zero.eq(1), beat_last.eq(0)]
                with m.If(end_run):
                    m.d.sync += [row.eq(0), row_fresh.eq(1), row_last.eq(0),
                                 acc_err.eq(Mux(head.final, 0, acc_err | errs.o.payload))]
                with m.Else():
                    m.d.sync += [row.eq(row + 1), row_fresh.eq(0), row_last.eq(row + 1 == head.last_row)]
            with m.Else():
                m.d.sync += [beat.eq(beat + 1), beat_zero.eq(0),
                             beat_last.eq(beat + 1 == self.beats_per_row - 1)]
        # An empty READ completes when everything before it has left, so dones stay in order
        # and never coincide with a TLAST's.
        out_empty = ~skid.o.valid & skid.i.ready
        marker_done = info.o.valid & head.marker & out_empty & ~draining
        m.d.comb += [
            info.o.ready.eq((fire & end_run) | marker_done),
            errs.o.ready.eq(fire & end_run),
        ]
        connect(m, skid.o, flipped(self.o))

        tlast_taken = self.o.valid & self.o.ready & self.o.payload.last
        m.d.sync += [
            self.done.eq(tlast_taken | marker_done),
            self.done_error.eq(tlast_taken & self.o.payload.user.error),
        ]
        m.d.comb += [
            self.busy.eq(run_v | pend_v | (info.level != 0) | ~out_empty),
            self.idle.eq(reader.idle & ~skid.o.valid),
        ]
        return m
