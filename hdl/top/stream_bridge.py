"""The DMA stream bridge: the engine's tagged K/V streams carried over plain AXI-Stream (docs/kv260.md,
"The stream path").

A Xilinx AXI DMA moves bytes between memory and AXI-Stream with TDATA/TKEEP/TLAST only: no TUSER,
and TLAST only at the end of a transfer. The engine needs a tag per beat (``s_axis_kv``: TUSER =
``kv_tag``) and gives one per beat (``m_axis_kv{p}``: TUSER = ``read_tag``). The two adapters here
carry the tag in-band, as a **header beat** in front of a **segment** of data beats:

* A segment is a run of beats with one TUSER value, ending at a TLAST, at a change of TUSER, or
  (output side only) after ``max_segment`` beats. In normal traffic a segment is one vector.
* Its header is one beat of the same TDATA width; bits 63..0 are ``header_layout(tag)``:
  ``tag`` (bits 39..0, the TUSER value, zero-extended), ``beats`` (bits 55..40: data beats that
  follow) and ``last`` (bit 56: the segment's last beat carries TLAST). Bits above 63 are 0
  (ignored on input).

``HeaderStrip`` (DMA MM2S -> ``s_axis_kv``) takes header + data beats, drops each header and puts
its tag on TUSER of the data beats. ``beats`` = 0 is the other form: the segment runs to the DMA's
TLAST (the end of the transfer), which becomes the vector's TLAST. A DMA TLAST always ends a
segment (the next beat is a header); a counted segment cut short by it passes its beats on without
TLAST (the engine then counts a frame error), and a header carrying the DMA's TLAST is an empty
transfer (nothing is passed on).

``HeaderInsert`` (``m_axis_kv{p}`` -> DMA S2MM) buffers each segment (up to ``max_segment`` beats
in a FIFO of twice that, so the next segment fills while one drains) and sends its header, then
its beats; TLAST is kept where the engine put it (the end of a READ), so one S2MM transfer is one
READ. ``read_tag.error`` is set on a READ's last beat only (docs/kvcache.md, "Streams"): that beat
has its own TUSER, so a failed READ ends with a one-beat segment whose tag has ``error`` = 1, and
every beat's TUSER survives the trip exactly.

``frame`` / ``unframe`` are the same rules in Python (the driver's side, and the testbenches'
expectations).
"""

from __future__ import annotations

from typing import Iterable, Sequence

from amaranth.hdl import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["HEADER_BITS", "TAG_BITS", "BEATS_OFFSET", "BEATS_BITS", "LAST_BIT", "MAX_BEATS", "header_layout",
           "dma_layout", "pack_header", "unpack_header", "frame", "unframe", "FramingError", "HeaderStrip",
           "HeaderInsert"]

HEADER_BITS = 64
TAG_BITS = 40
BEATS_OFFSET, BEATS_BITS = 40, 16
LAST_BIT = 56
MAX_BEATS = (1 << BEATS_BITS) - 1


def _width(shape) -> int:
    return shape.size if isinstance(shape, data.Layout) else Shape.cast(shape).width


def header_layout(tag_shape) -> data.FlexibleLayout:
    """Bits 63..0 of a header beat: ``tag`` at 0, ``beats`` at 40 (16 bits), ``last`` at 56."""
    if _width(tag_shape) > TAG_BITS:
        raise ValueError(f"a {_width(tag_shape)}-bit tag does not fit the header's {TAG_BITS}-bit tag field")
    return data.FlexibleLayout(HEADER_BITS, {"tag": data.Field(tag_shape, 0),
                                             "beats": data.Field(unsigned(BEATS_BITS), BEATS_OFFSET),
                                             "last": data.Field(unsigned(1), LAST_BIT)})


def dma_layout(width: int) -> data.StructLayout:
    """A beat on the DMA side: TDATA and TLAST (the flat top adds a constant TKEEP on the output)."""
    if width < HEADER_BITS:
        raise ValueError(f"TDATA of {width} bits cannot carry a {HEADER_BITS}-bit header")
    return data.StructLayout({"data": unsigned(width), "last": unsigned(1)})


# --- the framing in Python ---------------------------------------------------------------------------

class FramingError(ValueError):
    """A DMA-side word sequence that is not header-framed (truncated, or a header out of range)."""


def pack_header(tag: int, beats: int, last: bool) -> int:
    if not 0 <= tag < 1 << TAG_BITS:
        raise ValueError(f"tag 0x{tag:x} does not fit {TAG_BITS} bits")
    if not 0 <= beats <= MAX_BEATS:
        raise ValueError(f"{beats} beats do not fit the header's {BEATS_BITS}-bit count")
    return tag | beats << BEATS_OFFSET | int(bool(last)) << LAST_BIT


def unpack_header(word: int) -> tuple[int, int, bool]:
    """(tag, beats, last) of a header word (bits above 63 ignored)."""
    return (word & ((1 << TAG_BITS) - 1), (word >> BEATS_OFFSET) & MAX_BEATS, bool(word >> LAST_BIT & 1))


def frame(beats: Iterable[Sequence], max_segment: int = MAX_BEATS) -> list[int]:
    """The DMA-side words of ``beats`` ``(tdata, tuser, tlast)``: a header (counted form) before every
    segment. A segment ends at TLAST, before a beat whose TUSER differs, or after ``max_segment``
    beats (``HeaderInsert``'s cap; at most ``MAX_BEATS``). The DMA adds TLAST on the last word."""
    if not 1 <= max_segment <= MAX_BEATS:
        raise ValueError(f"max_segment={max_segment}: must be 1..{MAX_BEATS}")
    words: list[int] = []
    seg: list[int] = []
    tag = None

    def close(last: bool):
        nonlocal seg, tag
        if seg:
            words.append(pack_header(tag, len(seg), last))
            words.extend(seg)
        seg, tag = [], None

    for tdata, tuser, tlast in beats:
        if seg and (tuser != tag or len(seg) == max_segment):
            close(False)
        tag = tuser
        seg.append(int(tdata))
        if tlast:
            close(True)
    close(False)
    return words


def unframe(words: Sequence[int]) -> list[tuple[int, int, bool]]:
    """The beats ``(tdata, tuser, tlast)`` of counted-form DMA-side words: the inverse of ``frame``.
    Raises ``FramingError`` on a zero count or a segment that runs past the end."""
    beats: list[tuple[int, int, bool]] = []
    k = 0
    while k < len(words):
        tag, n, last = unpack_header(words[k])
        if n == 0:
            raise FramingError(f"word {k}: header 0x{words[k]:x} has a count of 0 (the DMA side always counts)")
        if k + 1 + n > len(words):
            raise FramingError(f"word {k}: header announces {n} beats, only {len(words) - k - 1} follow")
        for j in range(n):
            beats.append((int(words[k + 1 + j]), tag, last and j == n - 1))
        k += 1 + n
    return beats


# --- the adapters --------------------------------------------------------------------------------------

class HeaderStrip(wiring.Component):
    """DMA MM2S (``i``: TDATA, TLAST) -> the engine's K/V input (``o``: ``kv_layout``: data, user, last).

    Headers are taken at one per clock and never reach ``o``; a data beat passes through
    combinationally (``i.ready`` = ``o.ready``), with the segment's tag on ``o.payload.user``.
    """

    def __init__(self, kv_layout: data.StructLayout):
        fields = dict(kv_layout)
        if set(fields) != {"data", "user", "last"}:
            self._MustUse__silence = True   # refused, not forgotten
            raise ValueError(f"{kv_layout!r}: expected a layout of data, user and last")
        self.kv_layout = kv_layout
        self.width = _width(fields["data"].shape)
        self.header = header_layout(fields["user"].shape)
        super().__init__({"i": In(stream.Signature(dma_layout(self.width))),
                          "o": Out(stream.Signature(kv_layout))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        hdr = data.View(self.header, i.payload.data[:HEADER_BITS])
        in_segment = Signal()
        tag = Signal(self.kv_layout["user"].shape)
        remaining = Signal(BEATS_BITS)
        counted = Signal()
        last = Signal()

        # Outputs as plain expressions (continuous assignments in Verilog, defined from time 0 in
        # every simulator); the state updates under If.
        end_count = counted & (remaining == 1)
        m.d.comb += [
            o.payload.data.eq(i.payload.data),
            o.payload.user.eq(tag),
            o.payload.last.eq(Mux(counted, end_count & last, i.payload.last)),
            o.valid.eq(in_segment & i.valid),
            i.ready.eq(~in_segment | o.ready),
        ]
        with m.If(~in_segment):
            with m.If(i.valid):
                m.d.sync += [tag.eq(hdr.tag), remaining.eq(hdr.beats), counted.eq(hdr.beats != 0),
                             last.eq(hdr.last), in_segment.eq(~i.payload.last)]
        with m.Elif(i.valid & o.ready):
            m.d.sync += remaining.eq(remaining - 1)
            with m.If(i.payload.last | end_count):
                m.d.sync += in_segment.eq(0)
        return m


class HeaderInsert(wiring.Component):
    """A read port's output (``i``: ``out_layout``: data, user, last) -> DMA S2MM (``o``: TDATA, TLAST).

    Segments of at most ``max_segment`` beats (default: the caller's vector length) are collected in
    a FIFO of ``2 * max_segment`` beats; their headers wait in a small descriptor FIFO. A segment
    ended by a change of TUSER closes when the differing beat arrives (that clock takes no beat), so
    each vector costs one extra clock on each side, which the header beat costs anyway.
    """

    def __init__(self, out_layout: data.StructLayout, max_segment: int):
        fields = dict(out_layout)
        if set(fields) != {"data", "user", "last"} or not 1 <= max_segment <= MAX_BEATS:
            self._MustUse__silence = True   # refused, not forgotten
            if set(fields) != {"data", "user", "last"}:
                raise ValueError(f"{out_layout!r}: expected a layout of data, user and last")
            raise ValueError(f"max_segment={max_segment}: must be 1..{MAX_BEATS}")
        self.out_layout = out_layout
        self.max_segment = max_segment
        self.width = _width(fields["data"].shape)
        self.header = header_layout(fields["user"].shape)
        super().__init__({"i": In(stream.Signature(out_layout)),
                          "o": Out(stream.Signature(dma_layout(self.width)))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        tag_shape = self.out_layout["user"].shape
        desc_layout = data.StructLayout({"tag": tag_shape, "beats": unsigned(BEATS_BITS), "last": 1})
        m.submodules.beats = beats = fifo.SyncFIFOBuffered(width=self.width, depth=2 * self.max_segment)
        m.submodules.descs = descs = fifo.SyncFIFOBuffered(width=desc_layout.size, depth=4)
        desc_in = data.View(desc_layout, descs.w_data)
        desc_out = data.View(desc_layout, descs.r_data)

        # Collecting: the open segment's tag and count.
        open_ = Signal()
        seg_tag = Signal(tag_shape)
        seg_beats = Signal(BEATS_BITS)
        user = i.payload.user
        close_open = open_ & ((i.valid & (user.as_value() != seg_tag.as_value()))
                              | (seg_beats == self.max_segment))
        count = Mux(open_, seg_beats + 1, 1)
        take = ~close_open & i.valid & i.ready
        m.d.comb += [
            beats.w_data.eq(i.payload.data),
            i.ready.eq(~close_open & beats.w_rdy & (descs.w_rdy | ~i.payload.last)),
            beats.w_en.eq(take),
            descs.w_en.eq(close_open | (take & i.payload.last)),
            desc_in.tag.eq(Mux(close_open, seg_tag.as_value(), user.as_value())),
            desc_in.beats.eq(Mux(close_open, seg_beats, count)),
            desc_in.last.eq(~close_open),
        ]
        with m.If(close_open):
            with m.If(descs.w_rdy):
                m.d.sync += open_.eq(0)
        with m.Elif(take):
            with m.If(i.payload.last):
                m.d.sync += open_.eq(0)
            with m.Else():
                m.d.sync += [open_.eq(1), seg_tag.eq(user), seg_beats.eq(count)]

        # Sending: a header, then the segment's beats.
        sending = Signal()
        remaining = Signal(BEATS_BITS)
        last = Signal()
        hdr = Signal(self.header)
        m.d.comb += [hdr.tag.eq(desc_out.tag), hdr.beats.eq(desc_out.beats), hdr.last.eq(desc_out.last)]
        m.d.comb += [
            o.valid.eq(Mux(sending, beats.r_rdy, descs.r_rdy)),
            o.payload.data.eq(Mux(sending, beats.r_data, hdr.as_value())),
            o.payload.last.eq(sending & last & (remaining == 1)),
            beats.r_en.eq(sending & o.ready),
            descs.r_en.eq(~sending & o.ready),
        ]
        with m.If(o.valid & o.ready):
            with m.If(~sending):
                m.d.sync += [sending.eq(1), remaining.eq(desc_out.beats), last.eq(desc_out.last)]
            with m.Else():
                m.d.sync += remaining.eq(remaining - 1)
                with m.If(remaining == 1):
                    m.d.sync += sending.eq(0)
        return m
