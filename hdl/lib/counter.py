"""A 32-bit event counter that adds up to a few hundred events per clock.

The dequantizer counts saturated elements of a whole output beat (up to 128 per clock) and replaced
scale fields. ``count`` includes the events presented with ``fire`` two clocks after they were
presented. Both stages reduce bits with 6:3 population-count compressors (one LUT6 level each),
column by column as in a Wallace tree: the first stage runs two levels on the events, the second
compresses the count plus what is left to two rows and adds them. The count wraps.
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

COUNT_BITS = 32
# Population count of 6 bits as three 64-entry truth tables: each sum bit is one LUT6, where an adder
# would become a carry chain with LUTs around it.
_POP6 = [Const(sum(((bin(k).count("1") >> j) & 1) << k for k in range(64)), 64) for j in range(3)]
# Compressor levels in the first stage; the second stage takes the rest (three levels for 128
# events) and the final add, so each stays well inside six LUT levels.
STAGE1_LEVELS = 2


def compress(cols: list[list], height: int, max_levels: int = 99) -> list[list]:
    """Columns (bit weight -> list of 1-bit values) with the same sum as ``cols``: compressed until
    no column has more than ``height`` bits, or for ``max_levels`` compressor levels."""
    levels = 0
    while any(len(c) > height for c in cols) and levels < max_levels:
        nxt = [[] for _ in range(len(cols) + 2)]
        for w, col in enumerate(cols):
            for k in range(0, len(col), 6):
                group = col[k:k + 6]
                if len(group) <= 2:
                    nxt[w] += group
                    continue
                index = Cat(*group, Const(0, 6 - len(group)))
                for j in range(len(group).bit_length()):
                    nxt[w + j].append(_POP6[j].bit_select(index, 1))
        while nxt and not nxt[-1]:
            nxt.pop()
        cols = nxt
        levels += 1
    return cols


class EventCounter(wiring.Component):
    """``count += popcount(events)`` on every clock with ``fire`` high (seen two clocks later)."""

    latency = 2

    def __init__(self, width: int):
        self.width = width
        super().__init__({
            "events": In(width),
            "fire": In(1),
            "count": Out(COUNT_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        # Stage 1: two compressor levels (128 events leave at most 12 bits per weight).
        cols = compress([[self.events[k] for k in range(self.width)]], 2, max_levels=STAGE1_LEVELS)
        height = max(len(c) for c in cols)
        rows = [Signal(len(cols), name=f"row{j}") for j in range(height)]
        for w, col in enumerate(cols):
            for j, bit in enumerate(col):
                m.d.sync += rows[j][w].eq(bit)
        fired = Signal()
        m.d.sync += fired.eq(self.fire)
        # Stage 2: count + rows, compressed to two rows and added.
        total = [[self.count[w]] + [row[w] for row in rows if w < len(row)] for w in range(COUNT_BITS)]
        total = compress(total, 2)
        two = [Cat(*(col[j] if j < len(col) else Const(0, 1) for col in total[:COUNT_BITS]))
               for j in range(2)]
        with m.If(fired):
            m.d.sync += self.count.eq(two[0] + two[1])
        return m
