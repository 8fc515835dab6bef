"""The KV cache engine core (docs/kvcache.md): write path, ring trackers and command unit.

``KVEngine(config)`` holds everything that a soft reset clears; the tables (``hdl/ddr/tables.py``),
the read ports and the register block live beside it in ``KVCacheTop``.

Write path, in three decoupled parts so that one vector's lookup overlaps the previous vector's data:

* Intake: every beat of ``s_axis_kv`` goes into the beat queue (``BEAT_QUEUE_DEPTH``) with an
  end-of-vector bit; beats are framed by count (``max(1, ceil(HEAD_DIM / lanes))`` per vector),
  TLAST is only checked (FRAME_ERRORS). Each vector's first-beat TUSER goes into the tag queue.
* Lookup, one vector at a time in stream order: ``IDLE`` (a tag is waiting and no READ holds the
  write path: the tag is latched, the layer and region tables are addressed) -> ``LOOKUP`` ->
  ``CLASS`` (class and base known: range checks, then drop, append or use the (seq, class)'s
  current slot) -> ``APPEND`` / ``APPEND_WAIT`` (the tracker's answer) -> ``ADDR`` (base + slot x
  row_bytes) -> ``ISSUE`` (the row's writer command and a "write" decision) or ``DROP`` (a "drop"
  decision). Decisions queue up (``DECISION_QUEUE_DEPTH``) in stream order.
* Data: the beats at the head of the beat queue belong to the decision at the head of the decision
  queue; they go to the quantizer (write) or are discarded (drop), and the decision leaves with the
  vector's last beat. Quantized blocks leave the quantizer's output queue for a BytePacker (the
  group ends at the vector's last block), then a skid buffer and the BurstWriter; its ``done``
  records decide VECTORS_WRITTEN or DDR_ERRORS.

With the queues the write path is bus-bound for 8-bit codes at 16 lanes (16 input beats make a row
of 17 bus beats); see docs/benchmarks.md.

Static-scale formats (int8_ph, int4_ph, int8_pc, int4_pc): the quantizer is ``StaticQuantizer``;
each beat's context is the vector's tag (layer, head, kv) and channel ``beat x quant_lanes``, and its
reciprocals come from the scale cache through the ``scales`` read port (the cache itself lives in
``KVCacheTop``, outside the soft reset). A row is the vector's codes (``head_dim x code_bits / 8``
bytes, the quantizer's beats in order, no header: ``kvpath.layout.row_bytes``). A beat of codes
narrower than the bus (``quant_lanes x code_bits / 8 < bus_bytes``) is gathered into bus beats
(``Gather``; a row's final beat is zero-padded) instead of going through the BytePacker.

Command unit: the register's commands win a tie against ``s_axis_cmd``; one command at a time.
EVICT_UPTO and CLEAR go to the named tracker (with priority over the write path's APPEND, which
waits a clock); READ holds the write path (no new vector is looked up; beats still enter the queue), waits until
every vector looked up has left the data side and every row write has its response, looks the layer's class and the region base up,
takes the tracker's state and emits at most three runs (sinks, window, window after the wrap) on
``run{port}``; it completes when that port reports it done. While any READ is planned or in flight
(and during any command's DECODE, and for one clock after the last read completes) the write path
starts no vector: stricter than the spec's "an append waits", and what keeps a non-append vector
from overwriting a slot being read.

HEAD_DIM's geometry (validity, row bytes, beats and blocks per vector) is registered: it follows a
HEAD_DIM write one clock later, i.e. before anything sent after that write's B response arrives.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out, connect

from kvpath import layout
from kvpath.config import BLOCK_ELEMS, ELEM_BITS, KVPathConfig
from kvpath.layout import Op, POS_BITS
from kvpath.hdl.ddr.axi4 import AXI4Signature
from kvpath.hdl.lib.streams import Queue, SkidBuffer
from kvpath.hdl.lib.bits import lookup
from kvpath.hdl.ddr.read_port import run_layout
from kvpath.hdl.ddr.repack import BytePacker, chunk_layout
from kvpath.hdl.ddr.tables import READERS, class_shape
from kvpath.hdl.ddr.writer import BurstWriter
from kvpath.hdl.quant.frame import Quantizer
from kvpath.hdl.ring.tracker import Op as RingOp, RingTracker
from kvpath.hdl.rotate.hadamard import Hadamard
from kvpath.hdl.static.cache import read_signature
from kvpath.hdl.static.quant import StaticQuantizer

MAX_READ_RUNS = 3
# Beats the intake can take ahead of the quantizer: more than the lookup's 5-7 cycles, so the next
# vector's lookup is done before the current vector's last beat leaves the queue.
BEAT_QUEUE_DEPTH = 16
TAG_QUEUE_DEPTH = 4        # vectors whose tags wait for the lookup (short vectors: 1-2 beats each)
DECISION_QUEUE_DEPTH = 2   # vectors looked up ahead of the data side


def kv_layout(c: KVPathConfig) -> data.StructLayout:
    """A beat of ``s_axis_kv``: TDATA, TUSER, TLAST."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(ELEM_BITS), c.quant_lanes),
                              "user": layout.kv_tag(c), "last": 1})


def log2(n: int) -> int:
    assert n & (n - 1) == 0, n
    return n.bit_length() - 1


def head_dim_valid(c: KVPathConfig, head_dim) -> object:
    """``layout.head_dim_ok`` in hardware: every unit it must divide by is a power of two."""
    unit = max(BLOCK_ELEMS, c.quant_lanes, c.dequant_lanes, c.rotation)
    return (head_dim != 0) & (head_dim <= c.max_head_dim) & (head_dim[:log2(unit)] == 0)


class Gather(wiring.Component):
    """Chunks ``i: {data, last}`` of ``in_bytes`` into beats ``o: {data, last}`` of ``out_bytes`` (a
    multiple): chunk ``k`` of a beat is its bytes ``[k x in_bytes, (k + 1) x in_bytes)``. A chunk with
    ``last`` ends the beat early (the rest is zero) and the beat carries ``last``. One chunk per
    clock; ``i.ready`` depends combinationally on ``o.ready``; ``o`` comes from registers."""

    def __init__(self, in_bytes: int, out_bytes: int):
        if in_bytes < 1 or out_bytes % in_bytes:
            raise ValueError(f"Gather needs out_bytes a multiple of in_bytes, got {in_bytes} -> {out_bytes}")
        self.in_bytes, self.n = in_bytes, out_bytes // in_bytes
        super().__init__({"i": In(stream.Signature(chunk_layout(in_bytes))),
                          "o": Out(stream.Signature(chunk_layout(out_bytes)))})

    def elaborate(self, platform):
        m = Module()
        i, o, n, w = self.i, self.o, self.n, 8 * self.in_bytes
        fill = Signal(range(max(2, n)))
        free = ~o.valid | o.ready
        m.d.comb += i.ready.eq(free)
        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(i.valid & free):
            with m.Switch(fill):
                for k in range(n):
                    with m.Case(k):
                        if k == 0:   # a new beat: the bytes above the first chunk start as zeros
                            m.d.sync += o.payload.data.eq(i.payload.data)
                        else:
                            m.d.sync += o.payload.data[k * w:(k + 1) * w].eq(i.payload.data)
            with m.If(i.payload.last | (fill == n - 1)):
                m.d.sync += [o.valid.eq(1), o.payload.last.eq(i.payload.last), fill.eq(0)]
            with m.Else():
                m.d.sync += fill.eq(fill + 1)
        return m


class KVEngine(wiring.Component):
    def __init__(self, config: KVPathConfig):
        c = self.config = config
        f = c.format
        self.static = f.needs_scale_cache
        if self.static:
            # One quantizer beat of codes: what the packer (or the gatherer) takes per handshake.
            self.chunk_bytes = c.quant_lanes * f.code_bits // 8
        else:
            if f.block_bytes < c.bus_bytes:
                raise NotImplementedError(f"{c.fmt}: blocks of {f.block_bytes} bytes on a {c.bus_bytes}-byte bus")
            self.chunk_bytes = f.block_bytes
        self.n_rings = c.max_seqs * c.n_classes
        self.trackers = [RingTracker(c.kv_max_tokens) for _ in range(self.n_rings)]
        self.tracker_template = self.trackers[0]
        count_bits = self.tracker_template.count_bits
        members = {
            "kv": In(stream.Signature(kv_layout(c))),
            "cmd_reg": In(stream.Signature(data.StructLayout({"value": 32, "high": 32}))),
            "cmd_axis": In(stream.Signature(layout.command(c))),
            "enable": In(1),         # gates s_axis_kv and s_axis_cmd
            "stop": In(1),           # soft reset requested: no intake, movers drain
            "idle": Out(1),          # stopped and the movers are drained
            "busy": Out(1),
            "head_dim": In(c.max_head_dim.bit_length()),
            "head_dim_err": Out(1),
            "row_bytes": Out(24),
            "ring_max_tokens": In(count_bits),
            "ring_sinks": In(count_bits),
            "ring_window": In(count_bits),
            "sel_seq": In(layout.bits(c.max_seqs)),
            "sel_cls": In(layout.bits(c.n_classes)),
            "ring_n_valid": Out(count_bits),
            "ring_configured": Out(1),
            "ring_cfg_err": Out(1),
            "ring_appended": Out(POS_BITS),
            # events, one clock each
            "vector_written": Out(1),
            "vector_dropped": Out(1),
            "frame_error": Out(1),
            "write_error": Out(1),
            "cmd_error": Out(1),
            "cmds_done": Out(range(c.read_ports + 2)),
            "bytes_written": Out(24),   # row bytes of a row write issued this clock
            "kv_fire": Out(1),
            "block_fire": Out(1),
            "nonfinite_count": Out(32),
            "axi": Out(AXI4Signature(addr_width=c.addr_width, data_width=8 * c.bus_bytes, read=False)),
        }
        for r in READERS:
            members[f"region_addr_{r}"] = Out(layout.bits(layout.region_count(c)))
            members[f"region_data_{r}"] = In(c.addr_width)
            members[f"layer_addr_{r}"] = Out(layout.bits(c.max_layers))
            members[f"layer_data_{r}"] = In(class_shape(c))
        for p in range(c.read_ports):
            members[f"run{p}"] = Out(stream.Signature(run_layout(c)))
            members[f"read_done{p}"] = In(1)
        if self.static:
            # The quantizer's read port of the scale cache (its reciprocal copy), in KVCacheTop.
            members["scales"] = Out(read_signature(c.fmt, c.quant_lanes, c))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        c = self.config
        f = c.format
        trackers = self.trackers
        for k, t in enumerate(trackers):
            m.submodules[f"ring{k}"] = t
            m.d.comb += [t.kv_max_tokens.eq(self.ring_max_tokens), t.n_sink.eq(self.ring_sinks),
                         t.n_window.eq(self.ring_window), t.wr.ready.eq(1), t.rd.ready.eq(1)]
        slot_bits = self.tracker_template.slot_bits
        ring_bits = layout.bits(self.n_rings)

        def ring_of(seq, cls):
            return (seq * c.n_classes + cls)[:ring_bits]

        def pick(name, index):
            """Tracker ``index``'s output ``name``: a Mux chain, not an Array, so that event-driven
            simulators evaluate it from time 0 (``index`` may never change)."""
            get = name if callable(name) else (lambda t: getattr(t, name))
            value = get(trackers[0])
            for k, t in enumerate(trackers[1:], 1):
                value = Mux(index == k, get(t), value)
            return value

        # Selected ring for the registers.
        sel = ring_of(self.sel_seq, self.sel_cls)
        sel_ok = (self.sel_seq < c.max_seqs) & (self.sel_cls < c.n_classes)
        m.d.comb += [
            self.ring_n_valid.eq(Mux(sel_ok, pick("n_valid", sel), 0)),
            self.ring_configured.eq(sel_ok & pick("configured", sel)),
            self.ring_cfg_err.eq(sel_ok & pick("cfg_err", sel)),
            self.ring_appended.eq(Mux(sel_ok, pick("appended", sel), 0)),
        ]

        # Geometry of a vector from HEAD_DIM, registered: HEAD_DIM's validity decode reached the
        # command FSM's next state (9 LUT levels in KVCacheTop). All four change together, one
        # clock after HEAD_DIM; B rises with HEAD_DIM, so nothing sent after the write's B
        # handshake sees the old ones. Not reset: they follow HEAD_DIM (which a soft reset keeps)
        # every clock, and start as its reset value's, max_head_dim (regmap), so no clock sees a
        # geometry HEAD_DIM never had.
        hd_reset = c.max_head_dim
        beats_reset = max(1, -(-hd_reset // c.quant_lanes))
        hd_ok = Signal(init=layout.head_dim_ok(c, hd_reset), reset_less=True)
        row_bytes = Signal(24, init=(hd_reset // BLOCK_ELEMS) * f.block_bytes, reset_less=True)
        beats_per_vec = Signal(range(c.max_head_dim + 1), init=beats_reset, reset_less=True)
        blocks_per_vec = Signal(range(c.max_head_dim + 1), init=hd_reset // BLOCK_ELEMS, reset_less=True)
        # An invalid HEAD_DIM still frames vectors (docs/kvcache.md: max(1, ceil(HEAD_DIM / lanes))
        # beats), so a bad value drops whole vectors instead of never ending one.
        ceil_beats = (self.head_dim + (c.quant_lanes - 1)) >> log2(c.quant_lanes)
        m.d.sync += [
            hd_ok.eq(head_dim_valid(c, self.head_dim)),
            blocks_per_vec.eq(self.head_dim >> log2(BLOCK_ELEMS)),
            row_bytes.eq((self.head_dim >> log2(BLOCK_ELEMS)) * f.block_bytes),
            beats_per_vec.eq(Mux(ceil_beats == 0, 1, ceil_beats)),
        ]
        m.d.comb += [self.head_dim_err.eq(~hd_ok), self.row_bytes.eq(row_bytes)]

        # Per ring: the slot the current token's vectors go to, and whether there is one.
        cur_slot = Array(Signal(slot_bits, name=f"cur_slot{k}") for k in range(self.n_rings))
        has_token = Array(Signal(name=f"has_token{k}") for k in range(self.n_rings))

        # Tracker command port, shared by the write path (APPEND) and the command unit. A skid
        # buffer sits between the FSMs' choice of command and the trackers: the choice and a
        # tracker's command decode were one combinational path (11 LUT levels in KVCacheTop). A
        # command reaches its tracker one clock after it is taken; the write path waits for the
        # tracker's answer anyway, and the command unit's next READ samples the tracker state
        # no sooner than three clocks after an EVICT_UPTO or CLEAR is taken.
        trk_cmd = data.StructLayout({"index": unsigned(ring_bits), "cmd": self.tracker_template.cmd_layout})
        m.submodules.trk_skid = trk_skid = SkidBuffer(trk_cmd)
        trk_valid, trk_index = trk_skid.i.valid, trk_skid.i.payload.index
        trk_payload = trk_skid.i.payload.cmd
        trk_ready = trk_skid.i.ready
        trk_out = trk_skid.o
        for k, t in enumerate(trackers):
            m.d.comb += [t.cmd.valid.eq(trk_out.valid & (trk_out.payload.index == k)),
                         t.cmd.payload.eq(trk_out.payload.cmd)]
        m.d.comb += trk_out.ready.eq(Cat(t.cmd.ready & (trk_out.payload.index == k)
                                         for k, t in enumerate(trackers)).any())

        # ------------------------------------------------------------------ write path
        if self.static:
            m.submodules.quant = quant = StaticQuantizer(c.fmt, c.quant_lanes, c.elem, c)
            connect(m, quant.scales, wiring.flipped(self.scales))
            quant_out = quant.o.payload.codes
        else:
            m.submodules.quant = quant = Quantizer(c.fmt, c.quant_lanes, c.elem, c.quant_elems_per_clock)
            quant_out = quant.o.payload
        if self.chunk_bytes >= c.bus_bytes:
            m.submodules.packer = packer = BytePacker(self.chunk_bytes, c.bus_bytes)
        else:
            m.submodules.packer = packer = Gather(self.chunk_bytes, c.bus_bytes)
        m.submodules.writer = writer = BurstWriter(
            addr_width=c.addr_width, data_bytes=c.bus_bytes, max_burst=c.max_burst,
            max_outstanding=c.max_outstanding, cache=c.axi_cache, prot=c.axi_prot)
        connect(m, writer.axi, wiring.flipped(self.axi))
        m.d.comb += [
            writer.drain.eq(self.stop),
            self.nonfinite_count.eq(quant.nonfinite_count),
        ]

        kv = self.kv
        tag_shape = layout.kv_tag(c)
        tag = Signal(tag_shape)
        cls = Signal(class_shape(c))
        ring = Signal(ring_bits)
        base = Signal(c.addr_width)
        slot = Signal(slot_bits)
        addr = Signal(c.addr_width)
        outstanding = Signal(range(2 * c.max_outstanding + 64))
        read_hold = Signal()   # the command unit has a READ planned or in flight
        cmd_trk = Signal()     # the command unit wants the tracker port this clock
        cmd_go = Signal()      # ... and gets it (the write path is not waiting for an APPEND's answer)
        intake = self.enable & ~self.stop

        m.d.comb += [
            self.region_addr_w.eq(layout_region_index(c, tag.seq, tag.layer, tag.head, tag.kv)),
            self.layer_addr_w.eq(tag.layer),
        ]

        # Intake: every beat into the beat queue with an end-of-vector bit (framing by count), each
        # vector's first-beat tag into the tag queue, so that the lookup of the next vector runs while
        # the current one's beats are still being quantized.
        elem_width = c.quant_lanes * ELEM_BITS
        m.submodules.beat_queue = beat_queue = Queue(elem_width + 1, BEAT_QUEUE_DEPTH)
        m.submodules.tag_queue = tag_queue = Queue(tag_shape.size, TAG_QUEUE_DEPTH)
        in_beat = Signal(range(c.max_head_dim + 1))
        in_bad = Signal()
        in_first = in_beat == 0
        # ">=": a HEAD_DIM written while a vector is half in still ends it.
        in_last = in_beat + 1 >= beats_per_vec
        room = beat_queue.i.ready & (~in_first | tag_queue.i.ready)
        m.d.comb += [
            kv.ready.eq(intake & room),
            beat_queue.i.valid.eq(kv.valid & intake & room),
            beat_queue.i.payload.eq(Cat(kv.payload.data, in_last)),
            tag_queue.i.valid.eq(kv.valid & intake & room & in_first),
            tag_queue.i.payload.eq(kv.payload.user),
        ]
        taken = kv.valid & kv.ready
        mismatch = kv.payload.last != in_last
        m.d.comb += self.frame_error.eq(taken & in_last & (in_bad | mismatch))
        with m.If(taken):
            m.d.sync += [in_beat.eq(Mux(in_last, 0, in_beat + 1)), in_bad.eq(~in_last & (in_bad | mismatch))]

        # Lookup, one vector at a time in stream order: each ends with a decision (write its row, or
        # drop it) for the data side; a row's writer command is issued with its decision.
        decision_layout = data.StructLayout({"write": 1, "tag": tag_shape})
        m.submodules.decisions = decisions = Queue(decision_layout.size, DECISION_QUEUE_DEPTH)
        decide = Signal(decision_layout)
        m.d.comb += decisions.i.payload.eq(decide)
        with m.FSM(name="lookup_fsm") as wfsm:
            with m.State("IDLE"):
                with m.If(tag_queue.o.valid & intake & ~read_hold):
                    m.d.sync += tag.eq(tag_queue.o.payload)
                    m.next = "LOOKUP"
            with m.State("LOOKUP"):
                m.next = "CLASS"
            with m.State("CLASS"):
                in_range = ((tag.seq < c.max_seqs) & (tag.layer < c.max_layers) & (tag.head < c.max_kv_heads)
                            & (self.layer_data_w < c.n_classes) & hd_ok)
                r = ring_of(tag.seq, self.layer_data_w)
                m.d.sync += [cls.eq(self.layer_data_w), ring.eq(r), base.eq(self.region_data_w),
                             slot.eq(lookup(r, list(cur_slot), slot_bits))]
                with m.If(~in_range):
                    m.next = "DROP"
                with m.Elif(tag.append):
                    m.next = "APPEND"
                with m.Elif(lookup(r, list(has_token), 1)):
                    m.next = "ADDR"
                with m.Else():
                    m.next = "DROP"
            with m.State("APPEND"):
                with m.If(~cmd_trk & trk_ready):
                    m.next = "APPEND_WAIT"
            with m.State("APPEND_WAIT"):
                wr_ok, wr_slot = pick(lambda t: t.wr.payload.ok, ring), pick(lambda t: t.wr.payload.slot, ring)
                with m.If(pick(lambda t: t.wr.valid, ring)):
                    m.d.sync += has_token[ring].eq(wr_ok)
                    with m.If(wr_ok):
                        m.d.sync += [cur_slot[ring].eq(wr_slot), slot.eq(wr_slot)]
                        m.next = "ADDR"
                    with m.Else():
                        m.next = "DROP"
            with m.State("ADDR"):
                m.d.sync += addr.eq(base + slot * row_bytes)
                m.next = "ISSUE"
            with m.State("ISSUE"):
                with m.If(writer.cmd.ready & decisions.i.ready):
                    m.next = "IDLE"
            with m.State("DROP"):
                with m.If(decisions.i.ready):
                    m.next = "IDLE"

        # Strobes as expressions of the state rather than assignments under the FSM, so that
        # event-driven simulators evaluate them from time 0 (counters add them).
        in_issue, in_drop = wfsm.ongoing("ISSUE"), wfsm.ongoing("DROP")
        issued = Signal()
        m.d.comb += [
            tag_queue.o.ready.eq(wfsm.ongoing("IDLE") & intake & ~read_hold),
            # The row's command and its decision go together (both readies are registers).
            writer.cmd.valid.eq(in_issue & decisions.i.ready),
            writer.cmd.payload.addr.eq(addr),
            writer.cmd.payload.length.eq(row_bytes),
            issued.eq(writer.cmd.valid & writer.cmd.ready),
            decisions.i.valid.eq(issued | in_drop),
            decide.write.eq(in_issue),
            decide.tag.eq(tag),
            self.bytes_written.eq(issued.replicate(len(row_bytes)) & row_bytes),
        ]

        # Data side: the beat queue's beats, with the decision of the vector they belong to (the
        # decision leaves with the vector's last beat), to the quantizer or dropped.
        dec = decision_layout(decisions.o.payload)
        beat_data, beat_end = beat_queue.o.payload[:elem_width], beat_queue.o.payload[elem_width]
        vector_end = Signal()
        beat = Signal(range(c.max_head_dim + 1))   # beat of the vector at the head of the queue
        if c.rotation:
            # Only written vectors reach the rotation, each HEAD_DIM elements (a multiple of its
            # size: head_dim_valid), so its groups, counted from reset, never straddle two vectors.
            m.submodules.rotation = rotation = Hadamard(c.rotation, c.quant_lanes)
            connect(m, rotation.o, quant.i)
            quant_in = rotation.i
        else:
            quant_in = quant.i
        go = decisions.o.valid & intake & (~dec.write | quant_in.ready)
        m.d.comb += [
            quant_in.valid.eq(beat_queue.o.valid & decisions.o.valid & dec.write & intake),
            beat_queue.o.ready.eq(go),
            decisions.o.ready.eq(go & beat_queue.o.valid & beat_end),
            vector_end.eq(go & beat_queue.o.valid & beat_end),
            self.kv_fire.eq(quant_in.valid & quant_in.ready),
            self.vector_dropped.eq(vector_end & ~dec.write),
        ]
        with m.If(go & beat_queue.o.valid):
            m.d.sync += beat.eq(Mux(beat_end, 0, beat + 1))

        if self.static:
            # The beat's context: the vector's tag, and the channel of lane 0.
            ctx = quant.i.payload.ctx
            m.d.comb += [
                quant.i.payload.elems.eq(beat_data),
                ctx.layer.eq(dec.tag.layer), ctx.head.eq(dec.tag.head), ctx.kv.eq(dec.tag.kv),
                ctx.channel.eq(beat << log2(c.quant_lanes)),
            ]
        else:
            m.d.comb += quant_in.payload.eq(beat_data)

        # Quantized blocks (static: beats of codes): the vector's last one ends the packer's group
        # (a row's final beat). BLOCKS_WRITTEN counts 32-element blocks: for a static format one per
        # 32 / quant_lanes beats of codes (rows are whole blocks, so the count is exact per row).
        block = Signal(range(c.max_head_dim + 1))
        units_per_vec = beats_per_vec if self.static else blocks_per_vec
        q_fire = quant.o.valid & quant.o.ready
        if self.static and c.quant_lanes < BLOCK_ELEMS:
            per_block = log2(BLOCK_ELEMS // c.quant_lanes)
            block_done = q_fire & block[:per_block].all()
        else:
            block_done = q_fire
        # The quantizer's output queue holds its next blocks while the packer still cuts one into
        # bus beats (2 or 3 of them); its pipeline never stalls, so the packer feeds on it directly.
        # A skid buffer between the packer and the writer: the writer's data.ready follows
        # WREADY, and through the packer's ready it reached the quantizer's output (7 LUT levels
        # in the engine, when that was a skid buffer); now it ends at the skid buffer.
        m.submodules.bus_skid = bus_skid = SkidBuffer(writer.data_layout)
        connect(m, bus_skid.o, writer.data)
        m.d.comb += [
            packer.i.valid.eq(quant.o.valid), quant.o.ready.eq(packer.i.ready),
            packer.i.payload.data.eq(quant_out),
            packer.i.payload.last.eq(block + 1 == units_per_vec),
            self.block_fire.eq(block_done),
            bus_skid.i.valid.eq(packer.o.valid), packer.o.ready.eq(bus_skid.i.ready),
            bus_skid.i.payload.data.eq(packer.o.payload.data),
            writer.done.ready.eq(1),
        ]
        with m.If(quant.o.valid & quant.o.ready):
            m.d.sync += block.eq(Mux(block + 1 == units_per_vec, 0, block + 1))
        done = writer.done.valid
        m.d.comb += [self.vector_written.eq(done & ~writer.done.payload.error),
                     self.write_error.eq(done & writer.done.payload.error)]
        m.d.sync += outstanding.eq(outstanding + issued - done)
        # Every vector looked up has left the data side and every row write has its response.
        write_quiet = wfsm.ongoing("IDLE") & (decisions.level == 0) & (outstanding == 0)

        # ------------------------------------------------------------------ command unit
        cmd = Signal(layout.command(c))
        word = cmd.word
        in_flight = [Signal(range(16), name=f"reads_in_flight{p}") for p in range(c.read_ports)]
        run_valid = Signal()
        run = Signal(run_layout(c))
        port = Signal(layout.bits(c.read_ports))
        for p in range(c.read_ports):
            out = getattr(self, f"run{p}")
            m.d.comb += [out.valid.eq(run_valid & (port == p)), out.payload.eq(run)]
        run_ready = Cat(getattr(self, f"run{p}").ready & (port == p) for p in range(c.read_ports)).any()
        run_taken = run_valid & run_ready
        # Registered pulses: a command other than a READ completed (with or without error).
        completed_now, cmd_error = Signal(), Signal()
        m.d.sync += [completed_now.eq(0), cmd_error.eq(0)]
        read_issued = Signal()     # a READ's final run is taken by its port
        m.d.comb += [self.region_addr_c.eq(layout_region_index(c, word.seq, word.layer, word.head, word.kv)),
                     self.layer_addr_c.eq(word.layer)]

        # The plan: the tracker's state when the READ is planned.
        n_sink_valid = Signal(self.tracker_template.count_bits)
        win_len = Signal(self.tracker_template.count_bits)
        lo_slot = Signal(slot_bits)
        win_lo = Signal(POS_BITS)
        cap = Signal(self.tracker_template.count_bits)
        sinks = Signal(self.tracker_template.count_bits)
        first = Signal(self.tracker_template.count_bits)   # window slots before the wrap
        rbase = Signal(c.addr_width)
        rring = Signal(ring_bits)

        with m.FSM(name="cmd_fsm") as cfsm:
            with m.State("IDLE"):
                with m.If(self.cmd_reg.ready & self.cmd_reg.valid):
                    m.d.sync += cmd.eq(Cat(self.cmd_reg.payload.value, self.cmd_reg.payload.high))
                    m.next = "DECODE"
                with m.Elif(self.cmd_axis.ready & self.cmd_axis.valid):
                    m.d.sync += cmd.eq(self.cmd_axis.payload)
                    m.next = "DECODE"
            with m.State("DECODE"):
                ring_ok = (word.seq < c.max_seqs) & (word.cls < c.n_classes)
                read_ok = ((word.seq < c.max_seqs) & (word.layer < c.max_layers)
                           & (word.head < c.max_kv_heads) & (word.port < c.read_ports) & hd_ok)
                m.d.sync += port.eq(word.port)
                with m.Switch(word.op):
                    with m.Case(Op.NOP):
                        m.d.sync += completed_now.eq(1)
                        m.next = "IDLE"
                    with m.Case(Op.EVICT_UPTO, Op.CLEAR):
                        with m.If(ring_ok):
                            m.next = "TRACKER"
                        with m.Else():
                            m.d.sync += [completed_now.eq(1), cmd_error.eq(1)]
                            m.next = "IDLE"
                    with m.Case(Op.READ):
                        with m.If(read_ok):
                            m.next = "READ_WAIT"
                        with m.Else():
                            m.d.sync += [completed_now.eq(1), cmd_error.eq(1)]
                            m.next = "IDLE"
            with m.State("TRACKER"):
                with m.If(cmd_go & trk_ready):
                    with m.If(word.op == Op.CLEAR):
                        m.d.sync += has_token[ring_of(word.seq, word.cls)].eq(0)
                    m.d.sync += completed_now.eq(1)
                    m.next = "IDLE"
            with m.State("READ_WAIT"):
                # Layer and region tables are addressed from the command; data is ready next clock.
                with m.If(write_quiet):
                    m.next = "READ_CLASS"
            with m.State("READ_CLASS"):
                k = self.layer_data_c
                r = ring_of(word.seq, k)
                m.d.sync += [rring.eq(r), rbase.eq(self.region_data_c)]
                if self.static:   # the READ's context: the port's dequantizer reads its scales
                    m.d.sync += [run.layer.eq(word.layer), run.head.eq(word.head), run.kv.eq(word.kv)]
                with m.If((k < c.n_classes) & pick("configured", r)):
                    m.next = "READ_STATE"
                with m.Else():
                    m.d.sync += [completed_now.eq(1), cmd_error.eq(1)]
                    m.next = "IDLE"
            with m.State("READ_STATE"):
                m.d.sync += [n_sink_valid.eq(pick("n_sink_valid", rring)), win_len.eq(pick("win_len", rring)),
                             lo_slot.eq(pick("lo_slot", rring)), win_lo.eq(pick("win_lo", rring)),
                             cap.eq(pick("cap", rring)), sinks.eq(pick("sinks", rring))]
                m.next = "PLAN"
            with m.State("PLAN"):
                to_end = cap - lo_slot
                m.d.sync += first.eq(Mux(win_len < to_end, win_len, to_end))
                with m.If((n_sink_valid == 0) & (win_len == 0)):
                    m.d.sync += [run.addr.eq(rbase), run.slots.eq(0), run.pos.eq(0), run.last.eq(1), run_valid.eq(1)]
                    m.next = "RUN_LAST"
                with m.Elif(n_sink_valid != 0):
                    m.d.sync += [run.addr.eq(rbase), run.slots.eq(n_sink_valid), run.pos.eq(0),
                                 run.last.eq(win_len == 0), run_valid.eq(1)]
                    m.next = "RUN_SINKS"
                with m.Else():
                    m.next = "WINDOW"
            with m.State("RUN_SINKS"):
                with m.If(run_taken):
                    m.d.sync += run_valid.eq(0)
                    with m.If(run.last):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "WINDOW"
            with m.State("WINDOW"):
                m.d.sync += [run.addr.eq(rbase + lo_slot * self.row_bytes), run.slots.eq(first), run.pos.eq(win_lo),
                             run.last.eq(first == win_len), run_valid.eq(1)]
                m.next = "RUN_WINDOW"
            with m.State("RUN_WINDOW"):
                with m.If(run_taken):
                    m.d.sync += run_valid.eq(0)
                    with m.If(run.last):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "WRAP"
            with m.State("WRAP"):
                m.d.sync += [run.addr.eq(rbase + sinks * self.row_bytes), run.slots.eq(win_len - first),
                             run.pos.eq(win_lo + first), run.last.eq(1), run_valid.eq(1)]
                m.next = "RUN_LAST"
            with m.State("RUN_LAST"):
                with m.If(run_taken):
                    m.d.sync += run_valid.eq(0)
                    m.next = "IDLE"

        m.d.comb += [
            read_issued.eq(run_taken & run.last),
            self.cmd_error.eq(cmd_error),
            self.cmd_reg.ready.eq(cfsm.ongoing("IDLE") & ~self.stop),
            self.cmd_axis.ready.eq(cfsm.ongoing("IDLE") & ~self.cmd_reg.valid & self.enable & ~self.stop),
            cmd_trk.eq(cfsm.ongoing("TRACKER")),
            cmd_go.eq(cmd_trk & ~wfsm.ongoing("APPEND_WAIT")),
            # The tracker port: the command unit's EVICT_UPTO / CLEAR, else the write path's APPEND.
            trk_valid.eq(cmd_go | (wfsm.ongoing("APPEND") & ~cmd_trk)),
            trk_index.eq(Mux(cmd_go, ring_of(word.seq, word.cls), ring)),
            trk_payload.op.eq(Mux(cmd_go, Mux(word.op == Op.CLEAR, RingOp.CLEAR, RingOp.EVICT_UPTO), RingOp.APPEND)),
            trk_payload.pos.eq(cmd.arg),
        ]
        read_states = ("READ_WAIT", "READ_CLASS", "READ_STATE", "PLAN", "RUN_SINKS", "WINDOW", "RUN_WINDOW",
                       "WRAP", "RUN_LAST")
        planning = Signal()
        m.d.comb += planning.eq(Cat(cfsm.ongoing(s) for s in read_states).any()
                                | (cfsm.ongoing("DECODE") & (word.op == Op.READ)))
        # The hold as the lookup FSM sees it: DECODE (any command: one clock, so that DECODE's op
        # compare stays out of it) or the full condition one clock late, a register. It covers the
        # full condition: a READ is planned only after DECODE, and a read is in flight only after
        # a READ state issued it; it outlasts it by one clock after the last read's completion.
        # Decoded combinationally, the command FSM's state and the in-flight counts reached the tag
        # queue's read enables (7 LUT levels in the engine).
        hold_q = Signal()
        m.d.sync += hold_q.eq(planning | Cat(n != 0 for n in in_flight).any())
        m.d.comb += read_hold.eq(cfsm.ongoing("DECODE") | hold_q)
        dones = []
        for p, n in enumerate(in_flight):
            done_p = getattr(self, f"read_done{p}")
            dones.append(done_p)
            m.d.sync += n.eq(n + (read_issued & (port == p)) - done_p)
        m.d.comb += self.cmds_done.eq(completed_now + sum(dones))

        m.d.comb += [
            self.busy.eq(~wfsm.ongoing("IDLE") | (outstanding != 0) | ~cfsm.ongoing("IDLE") | read_hold
                         | (beat_queue.level != 0) | (tag_queue.level != 0) | (decisions.level != 0)
                         | (in_beat != 0) | trk_skid.o.valid),
            self.idle.eq(writer.idle),
        ]
        return m


def layout_region_index(c: KVPathConfig, seq, layer, head, kv):
    """``layout.region_index`` over signals (constant multipliers)."""
    return ((seq * c.max_layers + layer) * c.max_kv_heads + head) * 2 + kv

