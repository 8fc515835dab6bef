"""The KV path's register-visible counters and the events that set its sticky status bits.

Two kinds of source:

* Handshakes the top level sees (``*_fire``): counted here in 64 bits, in elements, because a beat
  of a static format holds ``lanes`` elements, not a whole block. Blocks are the element count
  divided by 32, so a partly streamed block is not counted until its last element passes.
* The datapaths' own 32-bit counters (``*_total``): free-running and never cleared, because the
  datapaths stay out of the clear path (a clear must not disturb a stream in flight). What is
  reported is the difference to a snapshot taken at the last clear, modulo 2**32.

``clear`` zeroes what is reported; an event presented in the same cycle as ``clear`` still counts.
The sticky-bit pulses (``*_moved``) are raised, registered, in the cycle after a datapath counter
changed. Soft reset is applied from outside (the top wraps this block in a ``ResetInserter``
together with the datapaths, so both counters and snapshots restart from zero in step).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from kvpath.config import BLOCK_ELEMS

BLOCK_SHIFT = (BLOCK_ELEMS - 1).bit_length()
COUNTER_BITS = 64
TOTAL_BITS = 32


class PathCounters(wiring.Component):
    """``*_elems_per_beat``: elements one handshake of that stream carries."""

    STREAMS = ("kv_in", "q_out", "q_in")
    TOTALS = ("nonfinite", "saturated", "context_error")

    def __init__(self, kv_in_elems_per_beat: int, q_out_elems_per_beat: int, q_in_elems_per_beat: int):
        self.per_beat = {"kv_in": kv_in_elems_per_beat, "q_out": q_out_elems_per_beat,
                         "q_in": q_in_elems_per_beat}
        members = {"clear": In(1)}
        members.update({f"{s}_fire": In(1) for s in self.STREAMS})
        members.update({f"{t}_total": In(TOTAL_BITS) for t in self.TOTALS})
        members.update({
            "elems_quantized": Out(COUNTER_BITS),
            "blocks_written": Out(COUNTER_BITS),
            "blocks_read": Out(COUNTER_BITS),
            "nonfinite_elems": Out(TOTAL_BITS),
            "saturated_elems": Out(TOTAL_BITS),
        })
        members.update({f"{t}_moved": Out(1) for t in self.TOTALS})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        # Element counts; blocks carry BLOCK_SHIFT more bits so the block count keeps all 64.
        elems = {}
        for s in self.STREAMS:
            width = COUNTER_BITS + (0 if s == "kv_in" else BLOCK_SHIFT)
            count = Signal(width, name=f"{s}_elems")
            add = Mux(getattr(self, f"{s}_fire"), self.per_beat[s], 0)
            m.d.sync += count.eq(Mux(self.clear, 0, count) + add)
            elems[s] = count
        m.d.comb += [
            self.elems_quantized.eq(elems["kv_in"]),
            self.blocks_written.eq(elems["q_out"][BLOCK_SHIFT:]),
            self.blocks_read.eq(elems["q_in"][BLOCK_SHIFT:]),
        ]

        for t in self.TOTALS:
            total = getattr(self, f"{t}_total")
            previous = Signal(TOTAL_BITS, name=f"{t}_previous")
            m.d.sync += [previous.eq(total), getattr(self, f"{t}_moved").eq(total != previous)]
        for t, out in (("nonfinite", self.nonfinite_elems), ("saturated", self.saturated_elems)):
            total = getattr(self, f"{t}_total")
            snapshot = Signal(TOTAL_BITS, name=f"{t}_snapshot")
            with m.If(self.clear):
                m.d.sync += snapshot.eq(total)
            m.d.comb += out.eq(total - snapshot)
        return m


class EngineCounters(wiring.Component):
    """The KV cache top's counters (register map v2): each ``add_<name>`` is added every clock
    (an event pulse or a byte / block count); ``<name>_total`` inputs are the datapaths' own
    free-running 32-bit counts, reported as the difference to a snapshot taken at the last clear,
    as in ``PathCounters``. ``clear`` zeroes every count; an amount added in the same clock still
    counts. ``<total>_moved`` pulses (registered) when a total changed."""

    WIDE = ("elems_quantized", "blocks_written", "blocks_read", "ddr_bytes_written", "ddr_bytes_read", "cycles")
    NARROW = ("vectors_written", "vectors_dropped", "commands_done", "ddr_errors", "frame_errors", "cmd_errors")
    TOTALS = ("nonfinite", "saturated")

    def __init__(self, add_bits: int = 32):
        members = {"clear": In(1)}
        for name in self.WIDE + self.NARROW:
            members[f"add_{name}"] = In(add_bits)
            members[name] = Out(COUNTER_BITS if name in self.WIDE else TOTAL_BITS)
        for t in self.TOTALS:
            members[f"{t}_total"] = In(TOTAL_BITS)
            members[f"{t}_elems"] = Out(TOTAL_BITS)
            members[f"{t}_moved"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for name in self.WIDE + self.NARROW:
            count = getattr(self, name)
            m.d.sync += count.eq(Mux(self.clear, 0, count) + getattr(self, f"add_{name}"))
        for t in self.TOTALS:
            total = getattr(self, f"{t}_total")
            previous = Signal(TOTAL_BITS, name=f"{t}_previous")
            snapshot = Signal(TOTAL_BITS, name=f"{t}_snapshot")
            m.d.sync += [previous.eq(total), getattr(self, f"{t}_moved").eq(total != previous)]
            with m.If(self.clear):
                m.d.sync += snapshot.eq(total)
            m.d.comb += getattr(self, f"{t}_elems").eq(total - snapshot)
        return m
