"""The integrated KV path: register block, scale constant cache, write and read datapaths, ring tracker.

``KVPathTop(config)`` is the one block a Vivado design instantiates. Ports:

* ``s_axil_*``: the register block's AXI4-Lite slave (``hdl/ctrl/csr.py``), passed through by name.
* ``kv_in`` -> quantizer -> ``q_out`` (write path, towards the DDR writer) and ``q_in`` -> dequantizer
  -> ``kv_out`` (read path). The payloads are the datapaths' own: for block-scaled formats (ggml, mx)
  ``kv_in`` is ``quant_lanes`` elements and ``q_out`` one block; for static formats both carry the
  beat's context (layer, head, kv, channel of lane 0) next to the elements or codes, and the blocks
  are ``StaticQuantizer`` / ``StaticDequantizer`` reading a ``ScaleCache``.
  ``kv_in.ready`` / ``q_in.ready`` come from registers (the datapaths' output-queue credits, CTRL.enable,
  the soft reset) and do not follow ``q_out.ready`` / ``kv_out.ready``: the datapaths never stall, and
  their output queues take back-pressure. Valid and payload of ``q_out`` / ``kv_out`` come from the
  queues' registers (valid also from the soft reset).
* ``memset``: bulk scale-cache writes (``ScaleWrite`` records, the DMA path).
* ``ring_cmd`` / ``ring_wr`` / ``ring_rd``: the ring tracker's streams; its KV_MAX_TOKENS, sinks and
  window come from the RING_* registers and are sampled by a CLEAR command.

Control:

* CTRL.enable = 0 stops intake: ``kv_in`` and ``q_in`` are not accepted (ready low towards the
  source, valid low towards the datapath). The outputs are not gated: beats already inside drain to
  ``q_out`` / ``kv_out``, because an AXI-Stream beat once offered must stay offered until taken; a
  partly collected block waits. The ring and ``memset`` streams are control traffic and keep running:
  scales are loaded while disabled.
* CTRL.soft_reset resets the datapaths, the ring tracker and the counters for one clock; the
  register block and the scale cache's contents (configuration, like the registers) are kept. Beats
  inside the datapaths (a partly collected block, too) are dropped; in the reset cycle itself no
  data or ring stream moves.
* CTRL.counter_clear zeroes the counters the registers report (``hdl/top/counters.py``).

Scale-cache writes: the cache takes one write per clock. A SCALE_DATA write from the register block
has priority; ``memset.ready`` is low in the cycle it is presented, so the bulk stream stalls one clock
per register write and neither source is ever lost. Block-scaled formats have no cache
(CFG_SCALE_ENTRIES = 0): every write from either source is accepted, discarded and flagged.

Counters and status:

* ELEMS_QUANTIZED: accepted ``kv_in`` beats x quant_lanes. BLOCKS_WRITTEN / BLOCKS_READ: elements of
  ``q_out`` / ``q_in`` handshakes / 32 (one ``q_out`` beat is one block for block-scaled formats,
  quant_lanes codes for static ones; a ``q_in`` beat holds ``read_lanes`` / 32 blocks, at least one).
* NONFINITE_ELEMS: non-finite K/V elements the quantizer sanitized plus non-finite scales the read
  path replaced (ggml d/m fields, MX NaN scales); SATURATED_ELEMS: dequantized elements saturated to
  the largest finite value. (The static quantizer's clamp count is not reported: no register.)
* STATUS.nonfinite_seen / saturated_seen are set when those counts move; STATUS.bad_scale_index when
  the cache refuses a write (index out of range, non-finite half), when a static datapath sees a beat
  whose context addresses no cache entry (the beat becomes zeros), or when a block-scaled build
  receives any scale write. STATUS.axi_error only reports the register block's own refusals: the
  KV path has no AXI master of its own.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, ResetInserter, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, connect

from kvpath.config import BLOCK_ELEMS, DEFAULT, KVPathConfig, load

from kvpath.hdl.ctrl.csr import CSRBlock
from kvpath.hdl.ring.tracker import RingTracker
from kvpath.hdl.static.cache import ScaleCache
from kvpath.hdl.static.write_port import ScaleWrite
from kvpath.hdl.top.counters import PathCounters

AXIL_PREFIX = "s_axil_"
DATA_STREAMS = (("kv_in", "quant", "i"), ("q_out", "quant", "o"), ("q_in", "dequant", "i"),
                ("kv_out", "dequant", "o"))
RING_STREAMS = (("ring_cmd", "cmd"), ("ring_wr", "wr"), ("ring_rd", "rd"))


def build_datapaths(config: KVPathConfig):
    """``(quantizer, dequantizer)`` of the configured format's family (``config.FAMILIES``); the
    families with a scale cache take the configuration, which sizes it."""
    family = config.format.family_info
    extra = (config,) if family.scale_cache else ()
    rate = () if family.scale_cache else (config.quant_elems_per_clock,)  # block-scaled quantizers only
    return (load(family.quantizer)(config.fmt, config.quant_lanes, config.elem, *extra, *rate),
            load(family.dequantizer)(config.fmt, config.dequant_lanes, config.elem, *extra))


def build_scale_cache(config: KVPathConfig):
    """The scale constant cache with one copy per datapath, or None for block-scaled formats."""
    if not config.format.needs_scale_cache:
        return None
    return ScaleCache(config.fmt, config.elem, config, quant_lanes=config.quant_lanes,
                      dequant_lanes=config.dequant_lanes)


class KVPathTop(wiring.Component):
    def __init__(self, config: KVPathConfig = DEFAULT):
        self.config = config
        self.csr = CSRBlock(config)
        self.quant, self.dequant = build_datapaths(config)
        self.cache = build_scale_cache(config)
        self.ring = RingTracker(config.kv_max_tokens)
        blocks = {"quant": self.quant, "dequant": self.dequant}
        members = {name: member for name, member in self.csr.signature.members.items()
                   if name.startswith(AXIL_PREFIX)}
        for port, block, inner in DATA_STREAMS:
            members[port] = blocks[block].signature.members[inner]
        members["memset"] = In(stream.Signature(ScaleWrite))
        for port, inner in RING_STREAMS:
            members[port] = self.ring.signature.members[inner]
        super().__init__(members)

    def _elems_per_beat(self) -> tuple[int, int, int]:
        """Elements one ``kv_in``, ``q_out`` and ``q_in`` handshake carries."""
        c = self.config
        if self.cache is not None:
            return c.quant_lanes, c.quant_lanes, c.dequant_lanes
        blocks_in = len(Value.cast(self.dequant.i.payload)) // (8 * c.format.block_bytes)
        return c.quant_lanes, BLOCK_ELEMS, BLOCK_ELEMS * blocks_in

    def elaborate(self, platform):
        m = Module()
        csr, quant, dequant, ring = self.csr, self.quant, self.dequant, self.ring
        counters = PathCounters(*self._elems_per_beat())
        soft_reset = {"sync": csr.soft_reset}
        m.submodules.csr = csr
        m.submodules.quant = ResetInserter(soft_reset)(quant)
        m.submodules.dequant = ResetInserter(soft_reset)(dequant)
        m.submodules.ring = ResetInserter(soft_reset)(ring)
        m.submodules.counters = ResetInserter(soft_reset)(counters)

        for name, member in self.signature.members.items():
            if name.startswith(AXIL_PREFIX):
                ours, theirs = getattr(self, name), getattr(csr, name)
                m.d.comb += (theirs.eq(ours) if member.flow == wiring.In else ours.eq(theirs))

        # Intake stops while disabled; no stream moves in the soft-reset cycle, so no beat is taken
        # by a source and then lost in a reset register. Outputs drain whatever is inside.
        running, enable = ~csr.soft_reset, Signal()
        m.d.comb += enable.eq(csr.enable & running)
        blocks = {"quant": quant, "dequant": dequant}
        for port, block, inner in DATA_STREAMS:
            outer, dp = getattr(self, port), getattr(blocks[block], inner)
            src, dst = (outer, dp) if inner == "i" else (dp, outer)
            gate = enable if inner == "i" else running
            m.d.comb += [dst.valid.eq(src.valid & gate), src.ready.eq(dst.ready & gate),
                         dst.payload.eq(src.payload)]

        # Ring tracker: runtime configuration from the registers.
        for port, inner in RING_STREAMS:
            outer, rp = getattr(self, port), getattr(ring, inner)
            src, dst = (outer, rp) if inner == "cmd" else (rp, outer)
            m.d.comb += [dst.valid.eq(src.valid & running), src.ready.eq(dst.ready & running),
                         dst.payload.eq(src.payload)]
        m.d.comb += [
            ring.kv_max_tokens.eq(csr.ring_max_tokens),
            ring.n_sink.eq(csr.ring_sinks),
            ring.n_window.eq(csr.ring_window),
            csr.ring_cfg_err.eq(ring.cfg_err),
        ]

        bad_scale_write = self._scale_writes(m)

        # Counters and sticky bits.
        fire = {port: getattr(self, port).valid & getattr(self, port).ready for port, _, _ in DATA_STREAMS}
        m.d.comb += [
            counters.clear.eq(csr.counter_clear),
            counters.kv_in_fire.eq(fire["kv_in"]),
            counters.q_out_fire.eq(fire["q_out"]),
            counters.q_in_fire.eq(fire["q_in"]),
            counters.nonfinite_total.eq(quant.nonfinite_count + dequant.nonfinite_count),
            counters.saturated_total.eq(dequant.saturated_count),
            csr.elems_quantized.eq(counters.elems_quantized),
            csr.blocks_written.eq(counters.blocks_written),
            csr.blocks_read.eq(counters.blocks_read),
            csr.nonfinite_elems.eq(counters.nonfinite_elems),
            csr.saturated_elems.eq(counters.saturated_elems),
            csr.nonfinite_seen.eq(counters.nonfinite_moved),
            csr.saturated_seen.eq(counters.saturated_moved),
            csr.bad_scale_index.eq(bad_scale_write | counters.context_error_moved),
            csr.axi_error.eq(0),
        ]
        if self.cache is not None:
            m.d.comb += counters.context_error_total.eq(quant.context_error_count
                                                        + dequant.context_error_count)
        return m

    def _scale_writes(self, m: Module) -> Signal:
        if self.cache is not None:
            m.submodules.scale_cache = self.cache
            connect(m, self.quant.scales, self.cache.quant)
            connect(m, self.dequant.scales, self.cache.dequant)
        return merge_scale_writes(m, self.csr.scale_write, self.memset, self.cache)


def merge_scale_writes(m: Module, single, bulk, cache) -> Signal:
    """Merge the register block's (``single``) and the bulk (``bulk``) scale writes into ``cache``
    (None: a build without one); returns the refusal pulse (registered, one clock per refused write)."""
    if cache is None:
        refused = Signal(name="scale_write_refused")
        m.d.comb += [single.ready.eq(1), bulk.ready.eq(1)]
        m.d.sync += refused.eq(single.valid | bulk.valid)
        return refused

    w = cache.write
    # Expressions, not If assignments: those become an always block that Icarus never runs while
    # its inputs keep their time-0 values (tests/top/test_generated_verilog.py).
    m.d.comb += [w.valid.eq(single.valid | bulk.valid),
                 w.payload.eq(Mux(single.valid, Value.cast(single.payload), Value.cast(bulk.payload)))]
    m.d.comb += [single.ready.eq(w.ready), bulk.ready.eq(w.ready & ~single.valid)]
    return cache.error
