"""Byte gearboxes between fixed-size chunks (quantized blocks) and bus beats.

``BytePacker(in_bytes, out_bytes)``, in_bytes >= out_bytes: chunks ``i: {data, last}`` to beats
``o: {data, last}``. The chunks' bytes are concatenated (chunk byte 0 first) and cut into
out_bytes beats; the chunk with ``last`` ends a *group*: its final beat is padded with zero bytes
and carries ``last``, and the next group starts at lane 0 of a new beat.

``ByteUnpacker(in_bytes, out_bytes)``, out_bytes >= in_bytes: beats ``i: {data, last}`` to chunks
``o: {data, last}``, the reverse cut. ``last`` goes on the final whole chunk of a group. At an
input ``last``, the group's bytes that do not fill a whole chunk (fewer than out_bytes) are
padding and are dropped; a group shorter than one chunk yields nothing. (The DDR engine only
reads whole blocks, so its padding is the tail of the last bus beat.)

Both run at one beat per clock on their narrow side: the packer emits an output beat every clock
its input can supply the bytes (accepting a chunk per clock when out_bytes == in_bytes), and the
unpacker accepts an input beat every clock the output is taken (16 -> 18: 9 beats in, 8 chunks out
per 9 clocks). ``i.ready`` depends combinationally on ``o.ready`` (one gate); ``o.valid`` and
``o.payload`` are registers, held while ``o.valid & ~o.ready``.

Storage and why it is the least that sustains that rate:

* Packer: the output register, plus a residue register of out_bytes - 1 bytes. It reads beats
  straight out of the input chunk, which the stream rules keep stable until ``i.ready``, so the
  chunk itself is never copied; only the tail that does not fill a beat is kept, to be joined with
  the next chunk in the same cycle that chunk arrives.
* Unpacker: the output register assembles the chunk in place, plus a spill register of
  out_bytes - 1 bytes. An input beat that completes a chunk usually starts the next one too, and
  its remaining bytes must wait until the whole chunk leaves. And a whole chunk can only be
  offered once it is known whether it is the group's last: when fewer than out_bytes - in_bytes
  bytes of the next chunk have arrived, the next beat may be the group's ``last`` with only
  padding after the chunk. So the chunk is held back, and the following beats collect in the
  spill register, until either ``last`` comes (the chunk goes with ``last``, the held bytes are
  padding) or the next beat is sure to complete another chunk (the chunk goes without ``last``);
  up to out_bytes - 1 bytes. This costs no throughput: the held chunk leaves in the cycle the
  deciding beat arrives. (If groups were promised to end within one beat of their last chunk,
  in_bytes - 1 spill bytes would do; the general rule above is what the block implements.)

Both are state machines over the *fill phase* (how far into the current chunk or beat the
stream is), whose reachable values are enumerated at elaboration: every byte of every register
has a multiplexer over only the sources those phases can select (packer states: 5 for 20 -> 16,
9 for 18 -> 16, 17 for 17, 34, 68 and 136 -> 16, 33 for 33 -> 16; the input byte count per
output byte follows, which is why 17 and 33 cost the most, see README).
"""

from __future__ import annotations

from math import gcd

from amaranth.hdl import Cat, Const, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["BytePacker", "ByteUnpacker", "chunk_layout"]


def chunk_layout(nbytes: int) -> data.StructLayout:
    return data.StructLayout({"data": unsigned(8 * nbytes), "last": unsigned(1)})


def _bytes(x, start: int, stop: int):
    return x[8 * start:8 * stop]


def packer_states(in_bytes: int, out_bytes: int) -> list[int]:
    """Reachable window starts of the packer: s >= 0 is the next beat's first byte in the current
    chunk; s < 0 means the beat starts with -s residue bytes of the previous chunk."""
    states, todo = {0}, [0]
    while todo:
        s = todo.pop()
        nxt = s + out_bytes
        tail = in_bytes - nxt
        t = 0 if tail == 0 else -tail if tail < out_bytes else nxt
        if t not in states:
            states.add(t)
            todo.append(t)
    return sorted(states, key=lambda s: (s != 0, s))  # index 0 (the reset state) is s = 0


class BytePacker(wiring.Component):
    def __init__(self, in_bytes: int, out_bytes: int = 16):
        if not 1 <= out_bytes <= in_bytes:
            raise ValueError(f"BytePacker needs 1 <= out_bytes <= in_bytes, got {in_bytes} -> {out_bytes}")
        self.in_bytes, self.out_bytes = in_bytes, out_bytes
        self.states = packer_states(in_bytes, out_bytes)
        super().__init__({
            "i": In(stream.Signature(chunk_layout(in_bytes))),
            "o": Out(stream.Signature(chunk_layout(out_bytes))),
        })

    def elaborate(self, platform):
        m = Module()
        n_in, n_out = self.in_bytes, self.out_bytes
        index = {s: k for k, s in enumerate(self.states)}
        state = Signal(range(len(self.states)))
        flush = Signal()                            # the residue is a group's final, partial beat
        residue = Signal(8 * max(n_out - 1, 1))     # left-aligned: byte 0 goes out first
        chunk, o = self.i.payload.data, self.o
        o_free = ~o.valid | o.ready

        # The chunk's last beat leaves in this state: one bit per state. (An expression rather than
        # an assignment under Switch, so that simulators evaluate it from time 0.)
        leaves = Const(sum(1 << k for k, s in enumerate(self.states) if n_in - s - n_out < n_out), len(self.states))
        m.d.comb += self.i.ready.eq(~flush & o_free & leaves.bit_select(state, 1))

        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(flush):
            with m.If(o_free):
                m.d.sync += [o.valid.eq(1), o.payload.last.eq(1), flush.eq(0), state.eq(index[0])]
                with m.Switch(state):
                    for s in self.states:
                        if s < 0:
                            with m.Case(index[s]):
                                m.d.sync += o.payload.data.eq(_bytes(residue, 0, -s))  # zero-extended
        with m.Elif(o_free):
            with m.Switch(state):
                for s in self.states:
                    with m.Case(index[s]):
                        nxt = s + n_out
                        tail = n_in - nxt
                        with m.If(self.i.valid):
                            if s < 0:
                                beat = Cat(_bytes(residue, 0, -s), _bytes(chunk, 0, nxt))
                            else:
                                beat = _bytes(chunk, s, nxt)
                            m.d.sync += [o.valid.eq(1), o.payload.data.eq(beat)]
                            if tail == 0:
                                m.d.sync += [o.payload.last.eq(self.i.payload.last), state.eq(index[0])]
                            elif tail < n_out:
                                m.d.sync += [o.payload.last.eq(0), state.eq(index[-tail]),
                                             residue[:8 * tail].eq(_bytes(chunk, nxt, n_in)),
                                             flush.eq(self.i.payload.last)]
                            else:
                                m.d.sync += [o.payload.last.eq(0), state.eq(index[nxt])]
        return m


class ByteUnpacker(wiring.Component):
    def __init__(self, in_bytes: int = 16, out_bytes: int = 18):
        if not 1 <= in_bytes <= out_bytes:
            raise ValueError(f"ByteUnpacker needs 1 <= in_bytes <= out_bytes, got {in_bytes} -> {out_bytes}")
        self.in_bytes, self.out_bytes = in_bytes, out_bytes
        self.fills = list(range(0, out_bytes, gcd(in_bytes, out_bytes)))
        self.spill_bytes = out_bytes - 1
        super().__init__({
            "i": In(stream.Signature(chunk_layout(in_bytes))),
            "o": Out(stream.Signature(chunk_layout(out_bytes))),
        })

    def elaborate(self, platform):
        m = Module()
        n_in, n_out, cap = self.in_bytes, self.out_bytes, self.spill_bytes
        o, beat, last = self.o, self.i.payload.data, self.i.payload.last
        chunk = o.payload.data
        spill = Signal(8 * max(cap, 1))
        # Bytes of the next chunk held: in `chunk` while it is being assembled, else in `spill`.
        fill = Signal(range(n_out))
        # `chunk` is whole but held back: the group may end (input `last`) before another whole
        # chunk arrives, and then it must carry `last`. Invariant: fill + n_in < n_out.
        wait = Signal()
        free = ~o.valid | o.ready
        m.d.comb += self.i.ready.eq(free)

        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)
        with m.If(wait):
            with m.If(self.i.valid):
                with m.If(last):  # the held chunk was the group's last; the rest is padding
                    m.d.sync += [o.valid.eq(1), o.payload.last.eq(1), wait.eq(0), fill.eq(0)]
                with m.Else():
                    with m.Switch(fill):
                        for f in self.fills:
                            if f + n_in < n_out:
                                with m.Case(f):
                                    m.d.sync += [_bytes(spill, f, f + n_in).eq(beat), fill.eq(f + n_in)]
                                    if f + 2 * n_in >= n_out:  # the next beat completes a chunk
                                        m.d.sync += [o.valid.eq(1), o.payload.last.eq(0), wait.eq(0)]
        with m.Elif(free):
            with m.Switch(fill):
                for f in self.fills:
                    with m.Case(f):
                        if 0 < f <= cap:
                            with m.If(o.valid):  # the whole chunk leaves: the next one starts from `spill`
                                m.d.sync += _bytes(chunk, 0, f).eq(_bytes(spill, 0, f))
                        with m.If(self.i.valid):
                            place = min(n_in, n_out - f)
                            m.d.sync += _bytes(chunk, f, f + place).eq(_bytes(beat, 0, place))
                            if f + n_in >= n_out:
                                rest = f + n_in - n_out
                                if rest:
                                    m.d.sync += _bytes(spill, 0, rest).eq(_bytes(beat, place, n_in))
                                with m.If(last):
                                    m.d.sync += [o.valid.eq(1), o.payload.last.eq(1), fill.eq(0)]
                                with m.Else():
                                    m.d.sync += fill.eq(rest)
                                    if rest + n_in < n_out:
                                        m.d.sync += wait.eq(1)
                                    else:
                                        m.d.sync += [o.valid.eq(1), o.payload.last.eq(0)]
                            else:
                                with m.If(last):
                                    m.d.sync += fill.eq(0)
                                with m.Else():
                                    m.d.sync += fill.eq(f + n_in)
        return m
