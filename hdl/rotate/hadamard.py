"""Walsh–Hadamard rotation of FP16 vectors at one beat per clock, bit-exact with
``kvpath.golden.hadamard.ref_hadamard`` (the arithmetic: docs/numerics.md, "Hadamard rotation").

``Hadamard(n, lanes)``: stream ``i`` of ``lanes`` FP16 elements per beat, stream ``o`` the same; every
``n`` consecutive elements of the stream (``n / lanes`` beats, or ``lanes / n`` groups per beat) come
out as ``H x``, ``H = H_n / sqrt(n)`` in Sylvester order. ``n`` is a power of 4, ``lanes`` a power of
two. The stream has no framing: groups are counted from the first beat after reset, so a
user keeps vectors whole (a vector of ``head_dim`` elements is ``head_dim / n`` groups).

Why it is cheap: element ``i = t * lanes + l`` (beat ``t`` of its group, lane ``l``) gives
``H_n = H_G (x) H_lanes`` with ``G = n / lanes``, so the transform is the lanes' butterflies inside a
beat followed by the beats' butterflies across beats, all additions and subtractions, and one
scale that is a power of two. Every sum is exact in fixed point (FP16 is ``fx * 2**-24`` with
|fx| < 2**40; each butterfly stage adds a bit), so the stage order cannot change a bit and the only
rounding is the last one, to FP16.

Pipeline:

* front (one enable): sanitize (+/-Inf -> +/-65504, NaN -> +0, counted) and fixed point (41-bit
  signed), then ``log2(min(lanes, n))`` stages of lane butterflies, a register each;
* across beats (``log2(G)`` elastic stages, distance ``D = 1, 2, .., G/2`` beats): for each block of
  ``2D`` beats the first ``D`` are stored, the next ``D`` leave as sums with the stored ones while
  their differences are stored, and the differences leave during the next block's first ``D`` beats
  (or on their own when no input comes, so the last group is never stuck);
* back (one enable): leading one, round to nearest even at FP16's quantum with the ``2**-k`` scale
  folded into the exponent, saturate at 65504 (counted).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from kvpath.golden.hadamard import size_exponent
from kvpath.hdl.lib.bits import any_below, msb_index, tree_sum

__all__ = ["Hadamard", "CrossBeatStage"]

FX_BITS = 41   # signed fixed point of an FP16 value, units of 2**-24: |fx| <= 65504 * 2**24 < 2**40


def _log2(n: int) -> int:
    if n < 1 or n & (n - 1):
        raise ValueError(f"{n} is not a power of two")
    return n.bit_length() - 1


def beat_layout(lanes: int, width: int, sign: bool) -> data.ArrayLayout:
    return data.ArrayLayout(signed(width) if sign else unsigned(width), lanes)


class CrossBeatStage(wiring.Component):
    """Butterflies between beats ``D`` apart inside every block of ``2 D`` beats: ``y[t] = x[t] +
    x[t + D]``, ``y[t + D] = x[t] - x[t + D]`` (t < D), per lane, one bit wider out than in."""

    def __init__(self, distance: int, lanes: int, width: int):
        self.distance, self.lanes, self.width = distance, lanes, width
        super().__init__({"i": In(stream.Signature(beat_layout(lanes, width, True))),
                          "o": Out(stream.Signature(beat_layout(lanes, width + 1, True))),
                          "idle": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d, lanes, w = self.distance, self.lanes, self.width
        i, o = self.i, self.o
        m.submodules.first = first = Memory(shape=beat_layout(lanes, w, True), depth=d, init=[])
        m.submodules.diffs = diffs = Memory(shape=beat_layout(lanes, w + 1, True), depth=d, init=[])
        first_w, first_r = first.write_port(), first.read_port(domain="comb")
        diffs_w, diffs_r = diffs.write_port(), diffs.read_port(domain="comb")
        combine = Signal()                  # second half of the block: sums out, differences stored
        k = Signal(range(max(2, d)))        # beat within the half
        pending = Signal(range(d + 1))      # differences stored and not yet out
        out_k = Signal(range(max(2, d)))    # the next difference to leave
        free = ~o.valid | o.ready
        # Sums may only start once the previous block's differences have all left (order of y).
        take_combine = combine & free & ((k != 0) | (pending == 0))
        m.d.comb += [
            i.ready.eq(~combine | take_combine),
            first_w.addr.eq(k), first_w.data.eq(i.payload), first_w.en.eq(i.valid & ~combine),
            first_r.addr.eq(k),
            diffs_w.addr.eq(k), diffs_r.addr.eq(out_k),
            diffs_w.en.eq(i.valid & take_combine),
            self.idle.eq(~combine & (k == 0) & (pending == 0) & ~o.valid),
        ]
        for lane in range(lanes):
            m.d.comb += diffs_w.data[lane].eq(first_r.data[lane] - i.payload[lane])

        with m.If(o.ready):
            m.d.sync += o.valid.eq(0)
        fire = i.valid & i.ready
        with m.If(fire):
            m.d.sync += k.eq(Mux(k == d - 1, 0, k + 1))
            with m.If(k == d - 1):
                m.d.sync += combine.eq(~combine)
        with m.If(i.valid & take_combine):
            m.d.sync += o.valid.eq(1)
            for lane in range(lanes):
                m.d.sync += o.payload[lane].eq(first_r.data[lane] + i.payload[lane])
        # Differences leave while the next block's first half comes in (or on their own), and
        # before the next block's first sum (which waits for them).
        drain = (~combine | (k == 0)) & (pending != 0) & free
        with m.If(drain):
            m.d.sync += [o.valid.eq(1), o.payload.eq(diffs_r.data), out_k.eq(Mux(out_k == d - 1, 0, out_k + 1))]
        m.d.sync += pending.eq(pending + (i.valid & take_combine) - drain)
        return m


class Hadamard(wiring.Component):
    def __init__(self, n: int, lanes: int):
        self.n, self.lanes = n, lanes
        self.k = size_exponent(n)
        _log2(lanes)
        self.inner = min(lanes, n)               # elements per group inside one beat
        self.groups = max(1, n // lanes)         # beats per group
        self.inner_stages = _log2(self.inner)
        self.cross_stages = _log2(self.groups)
        fp16 = data.ArrayLayout(unsigned(16), lanes)
        super().__init__({
            "i": In(stream.Signature(fp16)),
            "o": Out(stream.Signature(fp16)),
            "nonfinite_count": Out(32),   # input elements that were +/-Inf or NaN
            "saturated_count": Out(32),   # outputs beyond 65504, given as +/-65504
            "idle": Out(1),               # nothing inside (every group that came in has left)
        })

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes

        # ---------------------------------------------------------------- front: fixed point, lanes
        f_out = stream.Signature(beat_layout(lanes, FX_BITS + self.inner_stages, True)).create()
        stages = 1 + self.inner_stages
        f_valid = Signal(stages)
        f_en = ~f_valid[-1] | f_out.ready
        m.d.comb += self.i.ready.eq(f_en)
        with m.If(f_en):
            m.d.sync += f_valid.eq(Cat(self.i.valid, f_valid[:-1]))

        fx = Signal(beat_layout(lanes, FX_BITS, True), name="fx")
        nonfinite = []
        for lane in range(lanes):
            bits = self.i.payload[lane]
            e, frac, sign = bits[10:15], bits[:10], bits[15]
            inf_nan = e == 0x1F
            nan = inf_nan & (frac != 0)
            nonfinite.append(inf_nan)
            # +/-Inf saturates to +/-65504 (e = 30, all ones), NaN is +0: the quantizer's rule.
            sig = Mux(inf_nan, 0x7FF, Mux(e != 0, Cat(frac, Const(1, 1)), frac))
            shift = Signal(5, name=f"fx_shift{lane}")
            m.d.comb += shift.eq(Mux(inf_nan, 29, Mux(e != 0, e - 1, 0)))
            mag = Signal(FX_BITS - 1, name=f"fx_mag{lane}")
            m.d.comb += mag.eq(Mux(nan, 0, sig << shift))
            with m.If(f_en):
                m.d.sync += fx[lane].eq(Mux(sign & ~nan, -mag, mag))
        count = Signal(32)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += count.eq(count + tree_sum([Cat(b, Const(0, 5)) for b in nonfinite]))
        m.d.comb += self.nonfinite_count.eq(count)

        cur, width = fx, FX_BITS
        for s in range(self.inner_stages):
            h = 1 << s
            nxt = Signal(beat_layout(lanes, width + 1, True), name=f"lanes{s}")
            for lane in range(lanes):
                if lane & h:
                    value = cur[lane - h] - cur[lane]
                else:
                    value = cur[lane] + cur[lane + h]
                with m.If(f_en):
                    m.d.sync += nxt[lane].eq(value)
            cur, width = nxt, width + 1
        m.d.comb += [f_out.valid.eq(f_valid[-1]), f_out.payload.eq(cur)]

        # ---------------------------------------------------------------- across beats
        src, idles = f_out, [~f_valid.any()]
        for s in range(self.cross_stages):
            stage = CrossBeatStage(1 << s, lanes, width)
            m.submodules[f"beats{s}"] = stage
            wiring.connect(m, src, stage.i)
            src, width = stage.o, width + 1
            idles.append(stage.idle)

        # ---------------------------------------------------------------- back: round to FP16
        b_valid = Signal(3)
        b_en = ~b_valid[-1] | self.o.ready
        m.d.comb += src.ready.eq(b_en)
        with m.If(b_en):
            m.d.sync += b_valid.eq(Cat(src.valid, b_valid[:-1]))
        idles.append(~b_valid.any())
        m.d.comb += self.idle.eq(Cat(idles).all())

        # Stage 1: sign and magnitude. Stage 2: leading one -> shift = max(L - 11, k) (in units of
        # the value's 2**-(24 + k)), so FP16's quantum is 2**shift units. Stage 3: RNE, exponent
        # field max(L - 11 - k, 0), saturation.
        k = self.k
        saturated = []
        for lane in range(lanes):
            y = src.payload[lane]
            b_sign = Signal(name=f"b_sign{lane}")
            b_mag = Signal(width, name=f"b_mag{lane}")
            with m.If(b_en):
                m.d.sync += [b_sign.eq(y < 0), b_mag.eq(Mux(y < 0, -y, y))]
            lead, zero = msb_index(m, b_mag, name=f"b_lead{lane}")
            length = Signal(range(width + 2), name=f"b_len{lane}")
            m.d.comb += length.eq(Mux(zero, 0, lead + 1))
            r_sign, r_mag = Signal(name=f"r_sign{lane}"), Signal(width, name=f"r_mag{lane}")
            r_guard = Signal(range(width + 1), name=f"r_guard{lane}")   # shift - 1: the guard bit
            r_exp = Signal(range(width + 1), name=f"r_exp{lane}")
            with m.If(b_en):
                m.d.sync += [r_sign.eq(b_sign), r_mag.eq(b_mag),
                             r_guard.eq(Mux(length > 11 + k, length - 12, k - 1)),
                             r_exp.eq(Mux(length > 11 + k, length - 11 - k, 0))]
            kept = Signal(13, name=f"r_kept{lane}")   # the 11 or 12 significant bits, then the guard bit
            m.d.comb += kept.eq(r_mag >> r_guard)
            sticky = any_below(r_mag, r_guard)
            n_rounded = (kept >> 1) + (kept[0] & (sticky | kept[1]))
            field = Signal(16, name=f"r_field{lane}")
            m.d.comb += field.eq((r_exp << 10) + n_rounded)
            over = field > 0x7BFF
            saturated.append(b_valid[1] & over)
            with m.If(b_en):
                m.d.sync += self.o.payload[lane].eq(Cat(Mux(over, 0x7BFF, field)[:15], r_sign))
        m.d.comb += self.o.valid.eq(b_valid[-1])
        sat_count = Signal(32)
        with m.If(b_en):
            m.d.sync += sat_count.eq(sat_count + tree_sum([Cat(s, Const(0, 5)) for s in saturated]))
        m.d.comb += self.saturated_count.eq(sat_count)
        return m
