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

Pipeline (front and back never stall; docs/benchmarks.md gives its area and depth):

* front: ``FRONT_STAGES`` stages turn FP16 into 41-bit signed fixed point (sanitize: +/-Inf ->
  +/-65504, NaN -> +0, counted; then the shift; then the sign), then ``log2(min(lanes, n))`` stages
  of lane butterflies, every register loaded every clock, into a ``CreditQueue`` whose ``room``
  register is ``i.ready``;
* across beats (``log2(G)`` elastic stages, distance ``D = 1, 2, .., G/2`` beats): for each block of
  ``2D`` beats the first ``D`` are stored, the next ``D`` leave as sums with the stored ones while
  their differences are stored, and the differences leave during the next block's first ``D`` beats
  (or on their own when no input comes, so the last group is never stuck);
* back: ``BACK_STAGES`` stages (magnitude, leading one, shift amounts, shift and sticky, rounding)
  round to nearest even at FP16's quantum with the ``2**-k`` scale folded into the exponent and
  saturate at 65504 (counted), into a second ``CreditQueue`` that drives ``o``.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from kvpath.golden.hadamard import size_exponent
from kvpath.hdl.lib.bits import any_below, msb_index, tree_sum
from kvpath.hdl.lib.pipe import Pipe
from kvpath.hdl.lib.streams import CreditQueue

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

    # The front's stages before the lane butterflies: decode, shift, sign.
    FRONT_STAGES = 3
    # The back's stages: magnitude; leading one; shift amounts; shift and sticky; rounding and
    # saturation.
    BACK_STAGES = 5

    def elaborate(self, platform):
        m = Module()
        lanes, k = self.lanes, self.k
        # Front and back never stall: each has a valid bit per stage that moves every clock and ends in
        # a CreditQueue, whose ``room`` register is the side's input ready. So no ready path enters a
        # pipeline, and only the queues and the counters have enables. Comb logic is written as
        # expressions: an If assignment becomes an always block that Icarus never runs while its
        # inputs keep their time-0 values.
        p = Pipe(m, None, reset=True)

        # ---------------------------------------------------------------- front: fixed point, lanes
        front_len = self.FRONT_STAGES + self.inner_stages
        m.submodules.front_queue = fq = CreditQueue(beat_layout(lanes, FX_BITS + self.inner_stages, True),
                                                    CreditQueue.depth_for(front_len + 3))
        take = self.i.valid & fq.room
        m.d.comb += [self.i.ready.eq(fq.room), fq.take.eq(take)]
        f_valid = p.delay(take, front_len, "f_valid")

        # F1: sanitize (+/-Inf -> +/-65504, NaN -> +0: the quantizer's rule) into sign, significand
        # and the shift that places it in units of 2**-24.
        neg1, sig1, sh1, bad1 = [], [], [], []
        for lane in range(lanes):
            bits = self.i.payload[lane]
            e, frac, sign = bits[10:15], bits[:10], bits[15]
            inf_nan = e == 0x1F
            nan = inf_nan & (frac != 0)
            neg1.append(p.reg(sign & ~nan, f"f1_neg{lane}"))
            sig1.append(p.reg(Mux(inf_nan, Mux(nan, 0, 0x7FF), Mux(e != 0, Cat(frac, Const(1, 1)), frac)),
                              f"f1_sig{lane}"))
            sh1.append(p.reg(Mux(inf_nan, 29, Mux(e != 0, e - 1, 0))[:5], f"f1_sh{lane}"))
            bad1.append(p.reg(take & inf_nan, f"f1_bad{lane}"))
        # F2: magnitude; F3: signed fixed point (41 bits).
        mag2 = [p.reg((sig1[l] << sh1[l])[:FX_BITS - 1], f"f2_mag{l}") for l in range(lanes)]
        neg2 = [p.reg(neg1[l], f"f2_neg{l}") for l in range(lanes)]
        fx = Signal(beat_layout(lanes, FX_BITS, True), name="fx")
        for lane in range(lanes):
            m.d.sync += fx[lane].eq(Mux(neg2[lane], -mag2[lane], mag2[lane]))
        # Its idle terms are not needed: a taken beat keeps the front queue from being empty for
        # longer than the count's two stages take.
        self._count(m, p, bad1, "nonfinite", self.nonfinite_count)

        cur, width = fx, FX_BITS
        for s in range(self.inner_stages):
            h = 1 << s
            nxt = Signal(beat_layout(lanes, width + 1, True), name=f"lanes{s}")
            for lane in range(lanes):
                value = cur[lane - h] - cur[lane] if lane & h else cur[lane] + cur[lane + h]
                m.d.sync += nxt[lane].eq(value)
            cur, width = nxt, width + 1
        m.d.comb += [fq.i.valid.eq(f_valid), fq.i.payload.eq(cur)]

        # ---------------------------------------------------------------- across beats
        src, idles = fq.o, [fq.empty]
        for s in range(self.cross_stages):
            stage = CrossBeatStage(1 << s, lanes, width)
            m.submodules[f"beats{s}"] = stage
            wiring.connect(m, src, stage.i)
            src, width = stage.o, width + 1
            idles.append(stage.idle)

        # ---------------------------------------------------------------- back: round to FP16
        fp16 = data.ArrayLayout(unsigned(16), lanes)
        m.submodules.back_queue = bq = CreditQueue(fp16, CreditQueue.depth_for(self.BACK_STAGES + 3))
        wiring.connect(m, bq.o, wiring.flipped(self.o))
        b_take = src.valid & bq.room
        m.d.comb += [src.ready.eq(bq.room), bq.take.eq(b_take)]
        b_valid = [b_take]  # b_valid[s]: stage s's registers hold a beat
        for stage_no in range(1, self.BACK_STAGES + 1):
            b_valid.append(p.reg(b_valid[-1], f"b{stage_no}_valid"))
        idles.append(bq.empty)

        # B1: sign and magnitude. B2: leading one. B3: shift = max(L - 11, k) in units of the value's
        # 2**-(24 + k), so FP16's quantum is 2**shift units; the guard bit is one below. B4: the 11 or
        # 12 kept bits with the guard bit, and the sticky bit. B5: RNE, the exponent field
        # max(L - 11 - k, 0), saturation.
        out = Signal(fp16, name="b5_out")
        over_flags = []
        for lane in range(lanes):
            y = src.payload[lane]
            sign1 = p.reg(y < 0, f"b1_sign{lane}")
            mag1 = p.reg(Mux(y < 0, -y, y)[:width], f"b1_mag{lane}")
            lead, zero = msb_index(m, mag1, name=f"b1_lead{lane}")
            sign2, mag2_ = p.reg(sign1, f"b2_sign{lane}"), p.reg(mag1, f"b2_mag{lane}")
            length2 = p.reg(Mux(zero, 0, lead + 1), f"b2_len{lane}")
            sign3, mag3 = p.reg(sign2, f"b3_sign{lane}"), p.reg(mag2_, f"b3_mag{lane}")
            long3 = length2 > 11 + k
            guard3 = p.reg(Mux(long3, length2 - 12, k - 1)[:len(Const(width))], f"b3_guard{lane}")
            exp3 = p.reg(Mux(long3, length2 - 11 - k, 0)[:len(Const(width))], f"b3_exp{lane}")
            kept4 = p.reg((mag3 >> guard3)[:13], f"b4_kept{lane}")  # the kept bits, then the guard bit
            sticky4 = p.reg(any_below(mag3, guard3), f"b4_sticky{lane}")
            sign4, exp4 = p.reg(sign3, f"b4_sign{lane}"), p.reg(exp3, f"b4_exp{lane}")
            rounded = (kept4 >> 1) + (kept4[0] & (sticky4 | kept4[1]))
            field = ((exp4 << 10) + rounded)[:16]
            over = field > 0x7BFF
            over_flags.append(p.reg(b_valid[4] & over, f"b5_over{lane}"))
            m.d.sync += out[lane].eq(Cat(Mux(over, 0x7BFF, field)[:15], sign4))
        m.d.comb += [bq.i.valid.eq(b_valid[-1]), bq.i.payload.eq(out)]
        idles += self._count(m, p, over_flags, "saturated", self.saturated_count)

        m.d.comb += self.idle.eq(Cat(idles).all())
        return m

    def _count(self, m, p, flags, name, total):
        """Accumulate registered per-lane flags into the 32-bit ``total``, two stages later (the
        flags' sum gets a stage of its own); returns idle terms for the stages in between."""
        pending = p.reg(Cat(flags).any(), f"{name}_pending")
        added = p.reg(tree_sum([Cat(f, Const(0, 5)) for f in flags]), f"{name}_sum")
        count = Signal(32, name=f"{name}_count")
        m.d.sync += count.eq(count + added)
        m.d.comb += total.eq(count)
        return [~Cat(flags).any(), ~pending]
