"""What both movers share: parameters, payload layouts, byte-lane helpers and the burst splitter.

Burst rule (both directions): full-width INCR bursts, never longer than ``max_burst`` beats and
never crossing a *burst window* of ``window = min(max_burst, 4096 // data_bytes)`` beats, aligned
to its own size. Windows nest inside 4 KiB pages, so no burst crosses 4 KiB; bursts after the
first of a command are window-aligned, which is also what DDR controllers serve best. Because
the rule depends on the beat address only, the write data path finds WLAST from the address
instead of from a per-burst queue. ``max_burst`` is therefore a power of two.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from kvpath.hdl.ddr.axi4 import BURST_INCR, AXI4Signature
from kvpath.hdl.lib.streams import SkidBuffer

__all__ = ["MoverParams", "command_layout", "BurstSplitter", "up_down", "lanes_below", "lanes_at_or_below",
           "byte_rotate_right"]


@dataclass(frozen=True)
class MoverParams:
    addr_width: int = 40
    data_bytes: int = 16
    max_burst: int = 16
    max_outstanding: int = 4
    len_bits: int = 24
    tag_bits: int = 8
    cache: int = 0b0011
    prot: int = 0
    id_width: int = 1

    def __post_init__(self):
        def pow2(x):
            return x >= 1 and not x & (x - 1)
        if not pow2(self.data_bytes) or not 4 <= self.data_bytes <= 128:
            raise ValueError(f"data_bytes must be a power of two from 4 to 128, got {self.data_bytes}")
        if not pow2(self.max_burst) or self.max_burst > 256:
            raise ValueError(f"max_burst must be a power of two from 1 to 256, got {self.max_burst}")
        if not 1 <= self.max_outstanding <= 64:
            raise ValueError(f"max_outstanding must be 1..64, got {self.max_outstanding}")
        if not 12 <= self.addr_width <= 64:
            raise ValueError(f"addr_width must be 12..64, got {self.addr_width}")
        if not 1 <= self.len_bits <= 32:
            raise ValueError(f"len_bits must be 1..32, got {self.len_bits}")
        if self.tag_bits < 1 or self.id_width < 1:
            raise ValueError("tag_bits and id_width must be >= 1")
        if not 0 <= self.cache < 16 or not 0 <= self.prot < 8:
            raise ValueError("cache is 4 bits, prot is 3 bits")

    @property
    def shift(self) -> int:
        """log2(data_bytes): AxSIZE, and the address bits below a bus beat."""
        return (self.data_bytes - 1).bit_length()

    @property
    def window(self) -> int:
        """Beats in a burst window (see the module docstring)."""
        return min(self.max_burst, 4096 // self.data_bytes)

    @property
    def beat_addr_width(self) -> int:
        return self.addr_width - self.shift

    @property
    def count_shape(self):
        """Shape of a bus beat count."""
        return unsigned(self.max_bus_beats.bit_length())

    @property
    def max_bus_beats(self) -> int:
        """Bus beats of the longest command at the worst alignment."""
        return (self.data_bytes - 1 + (1 << self.len_bits) - 1 + self.data_bytes - 1) >> self.shift


def command_layout(p: MoverParams) -> data.StructLayout:
    return data.StructLayout({
        "addr": unsigned(p.addr_width),
        "length": unsigned(p.len_bits),
        "tag": unsigned(p.tag_bits),
    })


class Mover(wiring.Component):
    """Base of ``BurstWriter`` and ``BurstReader``: the parameters, the ``cmd`` stream, the drain
    handshake and the AXI4 half (write or read) of the master, around the mover's own ``members``."""

    def __init__(self, p: MoverParams, *, write: bool, members: dict):
        self.p = p
        self.cmd_layout = command_layout(p)
        super().__init__({
            "cmd": In(stream.Signature(self.cmd_layout)),
            **members,
            "drain": In(1),
            "idle": Out(1),
            "axi": Out(AXI4Signature(addr_width=p.addr_width, data_width=8 * p.data_bytes,
                                     id_width=p.id_width, write=write, read=not write)),
        })


def command_intake(m, mover, p: MoverParams):
    """The movers' command side: the latched drain flag, a skid buffer (so ``cmd.ready`` is a
    register) and the decode of its output. Returns ``(draining, cmd_q, cmd, zero, off, last_byte,
    bus_beats)``: ``off`` is the first byte's lane, ``last_byte`` = offset + length - 1 (the bus
    position of the last byte), ``bus_beats`` the bus beats the command touches."""
    s = p.shift
    draining = Signal()
    with m.If(mover.drain):
        m.d.sync += draining.eq(1)
    # The decode is done in front of the skid buffer and held in it: from its output, the two
    # adders led into the splitter's first-burst compare (7 LUT levels in KVCacheTop).
    c = mover.cmd.payload
    in_last_byte = Signal(p.len_bits + 1)
    in_bus_beats = Signal(p.count_shape)
    m.d.comb += [in_last_byte.eq(c.addr[:s] + c.length - 1), in_bus_beats.eq((in_last_byte >> s) + 1)]
    intake = data.StructLayout({"cmd": mover.cmd_layout, "zero": 1, "last_byte": len(in_last_byte),
                                "bus_beats": p.count_shape})
    m.submodules.cmd_q = cmd_q = SkidBuffer(intake)
    m.d.comb += [
        cmd_q.i.payload.cmd.eq(c),
        cmd_q.i.payload.zero.eq(c.length == 0),
        cmd_q.i.payload.last_byte.eq(in_last_byte),
        cmd_q.i.payload.bus_beats.eq(in_bus_beats),
        cmd_q.i.valid.eq(mover.cmd.valid & ~draining),
        mover.cmd.ready.eq(cmd_q.i.ready & ~draining),
    ]
    q = cmd_q.o.payload
    cmd = q.cmd
    off = cmd.addr[:s]
    return draining, cmd_q, cmd, q.zero, off, q.last_byte, q.bus_beats


def address_channel(axi, ch: str, split, p: MoverParams) -> list:
    """Statements driving the AW (``ch="aw"``) or AR channel from a ``BurstSplitter``: INCR bursts
    of full-width beats, ID 0, the build's AxCACHE/AxPROT, no lock, no QoS."""
    port = {name: getattr(axi, ch + name) for name in ("id", "addr", "len", "size", "burst", "lock",
                                                       "cache", "prot", "qos", "valid")}
    return [port["id"].eq(0), port["addr"].eq(split.addr), port["len"].eq(split.len),
            port["size"].eq(p.shift), port["burst"].eq(BURST_INCR), port["lock"].eq(0),
            port["cache"].eq(p.cache), port["prot"].eq(p.prot), port["qos"].eq(0),
            port["valid"].eq(split.valid)]


def lanes_below(n, lanes: int):
    """Mask of the byte lanes ``l < n`` (``n`` a Value in 0..lanes-1)."""
    return Cat(*(n > l for l in range(lanes)))


def lanes_at_or_below(n, lanes: int):
    """Mask of the byte lanes ``l <= n``."""
    return Cat(*(n >= l for l in range(lanes)))


def up_down(m, value, up, down, up_by=1, down_by=1):
    """The next value of counter ``value`` given increment and decrement strobes, as a Signal.

    The sums are formed from registers only and the strobes select among them at the end, so a
    strobe that arrives late (from a READY input, say) passes through one multiplexer, not
    through the adders."""
    nxt = Signal.like(value, name=f"{value.name}_next")
    both, only_up, only_down = value + up_by - down_by, value + up_by, value - down_by
    # An expression, not If assignments: those become an always block that Icarus never runs
    # while its inputs keep their time-0 values (tests/top/test_generated_verilog.py).
    m.d.comb += nxt.eq(Mux(up, Mux(down, both, only_up), Mux(down, only_down, value)))
    return nxt


def byte_rotate_right(x, amount, lanes: int):
    """Lane ``l`` of the result is lane ``(l + amount) % lanes`` of ``x`` (a log shifter: two LUT
    levels for 16 lanes)."""
    return Cat(x, x).bit_select(amount * 8, 8 * lanes)


class BurstSplitter(wiring.Component):
    """Splits one command at a time into bursts and holds the address-channel register.

    ``cmd`` carries the command's first beat address, its bus beat count and ``phantom``: a
    phantom (a zero-length command) issues one empty burst (``issue`` with ``issue_phantom``) and
    no address beat, so the owner can keep zero-length commands in order with the others.

    ``allow`` is the owner's credit for the burst it sees on ``next_len`` (beats, 0 for a phantom):
    a burst issues when the splitter holds a command, ``allow`` is high and the address register is
    free (or is emptied this cycle). ``issue`` pulses with the burst that was issued. ``cmd.ready``
    rises in the cycle the last burst of the current command issues, so single-burst commands
    issue one per cycle.

    The next burst's length and whether it is the command's last are registers, computed when the
    command is taken and after every burst (after the first burst of a command, bursts start
    window-aligned, so the next one is min(beats left, window)).

    The address register (``addr``, ``len`` as AxLEN, ``valid``) only loads when free, so VALID is
    never withdrawn and the payload never changes while VALID & ~READY.
    """

    def __init__(self, p: MoverParams):
        self.p = p
        super().__init__({
            "cmd": In(stream.Signature(data.StructLayout({
                "beat": unsigned(p.beat_addr_width), "beats": p.count_shape, "phantom": unsigned(1)}))),
            "allow": In(1),
            "next_len": Out(range(p.window + 1)),
            "addr": Out(p.addr_width),
            "len": Out(8),
            "valid": Out(1),
            "ready": In(1),
            "issue": Out(1),
            "issue_len": Out(range(p.window + 1)),
            "issue_last": Out(1),
            "issue_phantom": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        wbits = (p.window - 1).bit_length()

        busy = self.busy
        beat = Signal(p.beat_addr_width)
        left = Signal(p.count_shape)        # beats not yet issued
        phantom = Signal()
        nlen = self.next_len                # the next burst: a register
        nlast = Signal()                    # ... and whether it ends the command

        slot_free = ~self.valid | self.ready
        fire = busy & self.allow & (phantom | slot_free)
        m.d.comb += [
            self.issue.eq(fire),
            self.issue_len.eq(nlen),
            self.issue_last.eq(nlast),
            self.issue_phantom.eq(phantom),
            self.cmd.ready.eq(~busy | (fire & nlast)),
        ]

        with m.If(fire & ~phantom):
            m.d.sync += [
                self.valid.eq(1),
                self.addr.eq(Cat(Const(0, p.shift), beat)),
                self.len.eq(nlen - 1),
            ]
        with m.Elif(self.ready):
            m.d.sync += self.valid.eq(0)

        rest = Signal.like(left)
        m.d.comb += rest.eq(left - nlen)  # outside the If: see up_down
        with m.If(fire):
            m.d.sync += [
                beat.eq(beat + nlen),
                left.eq(rest),
                nlast.eq(rest <= p.window),
                nlen.eq(Mux(rest <= p.window, rest, p.window)),
            ]
            with m.If(nlast):
                m.d.sync += busy.eq(0)
        c = self.cmd.payload
        room = Signal(range(p.window + 1))  # beats from the first beat to its window's end
        m.d.comb += room.eq(p.window - (c.beat[:wbits] if wbits else 0))  # outside the If: see up_down
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [
                busy.eq(1),
                beat.eq(c.beat),
                left.eq(c.beats),
                phantom.eq(c.phantom),
                nlast.eq(c.phantom | (c.beats <= room)),
                nlen.eq(Mux(c.phantom, 0, Mux(c.beats <= room, c.beats, room))),
            ]
        return m
