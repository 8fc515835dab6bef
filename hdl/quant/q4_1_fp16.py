"""q4_1 quantizer arithmetic: block header (d, m) and 4-bit codes, bit-exact with gguf-py's Q4_1.

ggml computes, in float32, with ``min``/``max`` the signed block extremes::

    d  = fl32(fl32(max - min) / 15)
    id = 0 if d == 0 else fl32(1 / d)
    q  = clip(trunc(fl32(fl32(fl32(x - min) * id) + 0.5)), 0, 15)
    header = fp16(d), fp16(min)

Block unit: max/min compare-select tree, r = fl32(max - min) from the exact fixed-point
difference, then d = r / 15 and id = 1 / d through exact pipelined dividers (quotient and
remainder give guard and sticky for round-to-nearest-even), fp16(d).

Lane unit, derived so that no floating-point normalisation is needed per element:

* Only ``t = fl32(x - min) > 2**(er - 5)`` can give a non-zero code (``er`` = exponent of ``r``;
  q >= 1 needs ``t * id > 0.49...`` and ``id < 2**(4 - er)``, below). So ``x - min`` is formed in a
  block-relative fixed-point window of 31 bits with LSB ``2**(er - 30)``, modulo ``2**31``
  (``0 <= x - min < 2**(er + 1)``, so the wrap is exact), plus a sticky bit for anything below the
  window; below ``2**(er - 6)`` the window value is only truncated, which keeps such codes 0.
* ``t`` is rounded to 24 significant bits in place (masks from the leading-one position), so it
  stays a window integer ``t_w``, and ``t * id = t_w * scale * 2**-51`` with
  ``scale = significand(id) << (er + exp(id) - 2)``, because ``er + exp(id)`` is always 2 or 3.
  The exact 31 x 25-bit product takes two DSP48E2s.
* ``trunc(fl32(fl32(y) + 0.5)) >= n`` is ``y >= T_n`` for exact thresholds: ``n - 0.5 - ulp/2``
  below ``n - 0.5`` for n >= 2 (the +0.5 is exact there and ties round up to the even
  ``n - 0.5``), and ``y > 0.5 - 3 * 2**-26`` for n = 1, where ``fl32(0.49999997 + 0.5)`` rounds up
  to 1. So the code is ``round-half-up(y)`` plus a correction when the fraction bits just below
  the next half-integer are all ones.

Signed zeros: when the block min (header m) or max is zero, its sign is the last zero's in block
order, kvpath's rule (docs/numerics.md, section 7). gguf's numpy reduction picks whichever zero its
SIMD lanes meet last: the last zero in every all-zero block, mostly but not always otherwise.
"""

from amaranth.hdl import Cat, Const, EnableInserter, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring

from kvpath.config import BLOCK_ELEMS, get_format

from kvpath.hdl.lib.divider import Divider
from kvpath.hdl.lib.pipe import Pipe
from kvpath.hdl.quant.contract import BlockUnitSignature, LaneUnitSignature

__all__ = ["Q41BlockUnit", "Q41LaneUnit", "CONST_LAYOUT", "WINDOW_BITS"]

FMT = get_format("q4_1")
WINDOW_BITS = 31  # x - min window: bits er-30 .. er of the value

CONST_LAYOUT = data.StructLayout({
    "scale": unsigned(25),  # significand(id) << (er + exp(id) - 2); 0 for a constant block
    "not_min": unsigned(WINDOW_BITS),  # ~floor(min / 2**(er-30)) mod 2**31
    "neg_min": unsigned(WINDOW_BITS),  # -floor(min / 2**(er-30)) mod 2**31
    "shift": unsigned(6),  # 16 - er: x's significand moves to exp_eff + shift in the window
    "min_frac": unsigned(1),  # min has bits below the window
})


def _fp16_fields(bits):
    """Sign, effective biased exponent (subnormals use 1) and significand with the hidden bit."""
    normal = bits[10:15].any()
    return bits[15], Mux(normal, bits[10:15], 1), Cat(bits[:10], normal)


def _above(a, b):
    """FP16 ``a > b``, taking -0 < +0; either answer is fine when a and b are the same bits.

    One magnitude comparison serves both signs: for two negatives ``a > b`` is ``|a| <= |b|``,
    and equal magnitudes with equal signs are the same value. Comparing raw bits lets the carry
    chain take its generate input straight from a register, where an order-preserving key
    (bits XOR sign) would cost a LUT per bit for it.
    """
    sa, sb = a[15], b[15]
    return Mux(sa ^ sb, sb, sa ^ (a[:15] > b[:15]))


def _window(mant, amount):
    """floor(|v| / 2**(er-30)) mod 2**31 and whether |v| has bits below the window.

    ``|v| = mant * 2**(exp_eff - 25)``; in window units that is ``mant << (amount - 11)`` with
    ``amount = exp_eff + shift``, so the window is bits 11..41 of ``mant << amount``. The lost-bits
    flag comes from a prefix OR of ``mant`` picked by ``amount`` beside the shifter rather than
    from the shifter's output, which would add two LUT levels after it.
    """
    full = mant << amount
    # low_any[j] = any of mant[:11 - j]: the bits that land below the window when amount == j
    low_any = Cat(*[mant[:11 - j].any() for j in range(11)])
    return full[11:11 + WINDOW_BITS], (low_any >> amount)[0]


def window_consts(p, smin, mmin, amount, shift, window) -> dict:
    """The block unit's last ``WINDOW_STAGES`` stages: min's window value (``window(m1, amount)``
    places its significand) and the constants the lanes take from it."""
    s1, m1 = p.reg(smin, "w_s1"), p.reg(mmin, "w_m1")
    mag, frac = window(m1, amount)
    mag2, frac2 = p.reg(mag, "w_mag"), p.reg(frac, "w_frac")
    s2, shift2 = p.reg(s1, "w_s2"), p.reg(shift, "w_shift2")
    # floor() of a negative min with bits below the window is one lower
    mi = p.reg(Mux(s2, ~mag2 + ~frac2, mag2)[:WINDOW_BITS], "w_mi")
    return {
        "not_min": ~mi,
        "neg_min": (-mi)[:WINDOW_BITS],
        "shift": p.reg(shift2, "w_shift3"),
        "min_frac": p.reg(frac2, "w_frac3"),
    }


def pipe(m: Module) -> Pipe:
    """The units' registers: enabled by the EnableInserter around them, and reset although no output
    depends on it (``hdl/lib/pipe.py``: reset-less chains would become SRL LUTs)."""
    return Pipe(m, None, reset=True, delay_names="{name}_d{k}")


class Q41BlockUnit(wiring.Component):
    """A block's FP16 elements in, ``lanes`` per beat; header = fp16(d) | fp16(min) << 16 and the
    lanes' constants out.

    Stages: log2(lanes) compare-select levels over a beat, the beats' combine, zero-sign fix, exact max - min, 2 normalisation stages,
    rounding to fp32, the divider by 15, rounding d, the reciprocal divider, rounding id. fp16(d)
    and the window constants run beside the reciprocal.
    """

    DIV15_STEPS_PER_STAGE = 6  # table steps: about one LUT level per two quotient bits
    RECIP_STEPS_PER_STAGE = 3  # 25-bit remainder: one carry chain per step
    WINDOW_STAGES = 3  # window constants need 3 stages before the output register
    per_beat = True  # reduces max and min beat by beat (contract.BlockUnitSignature)

    def __init__(self, lanes: int = BLOCK_ELEMS):
        super().__init__(BlockUnitSignature(FMT, CONST_LAYOUT, lanes))
        self.lanes = lanes
        self.latency = (self.extremes_latency(lanes) + 7 + Divider.stages(27, self.DIV15_STEPS_PER_STAGE) + 1
                        + Divider.stages(25, self.RECIP_STEPS_PER_STAGE) + 1)

    @staticmethod
    def extremes_latency(lanes: int) -> int:
        """Stages from a block's last beat to its extremes: the tree over a beat, the register that
        combines a block's beats, the zero-sign fix."""
        return (lanes - 1).bit_length() + 2

    def _div15(self):
        return Divider(30, 4, 27, steps_per_stage=self.DIV15_STEPS_PER_STAGE, den=15)

    def _recip(self):
        return Divider(48, 24, 25, steps_per_stage=self.RECIP_STEPS_PER_STAGE, num=(1 << 48) - 1)

    def _start(self, m):
        """The pipe, both dividers (submodules ``div15``, ``recip``) and the block's signed extremes."""
        p = pipe(m)
        m.submodules.div15 = div15 = self._div15()
        m.submodules.recip = recip = self._recip()
        assert recip.latency >= self.WINDOW_STAGES
        m.d.comb += [div15.en.eq(self.en), recip.en.eq(self.en)]
        vmax, vmin = self._extremes(p, [self.beat[i] for i in range(self.lanes)], self.take, self.first)
        return p, div15, recip, vmax, vmin

    def elaborate(self, platform):
        m = Module()
        p, div15, recip, vmax, vmin = self._start(m)
        mr, er, zero = self._span(m, p, vmax, vmin)
        min_bits = p.delay(vmin, 7, "min_span")

        # --- d = r / 15: Q = floor(mr * 64 / 15) has 26 or 27 bits; keep 24 plus guard/sticky.
        m.d.comb += div15.num.eq(Cat(Const(0, 6), mr))
        lat = div15.latency
        er_q = p.delay(er, lat, "er_q")
        zero_q = p.delay(zero, lat, "zero_q")
        min_bits = p.delay(min_bits, lat, "min_q")
        q15, r15 = div15.quot, div15.rem
        wide = q15[26]
        dsig = Mux(wide, q15[3:27], q15[2:26])
        dguard = Mux(wide, q15[2], q15[1])
        dsticky = Mux(wide, q15[:2].any(), q15[0]) | r15.any()
        dsig_up = dsig + (dguard & (dsticky | dsig[0]))
        md = p.reg(Mux(dsig_up[24], 1 << 23, dsig_up[:24]), "md")
        # d's exponent is r's minus 3 when Q has 27 bits, else minus 4; rounding may add 1.
        ed = p.reg(er_q - 4 + wide + dsig_up[24], "ed")
        er = p.reg(er_q, "er_d")
        zero = p.reg(zero_q, "zero_d")
        min_bits = p.reg(min_bits, "min_d")

        # --- id = 1 / d. For md in [2**23, 2**24), floor((2**48 - 1) / md) is floor(2**48 / md)
        # except at md = 2**23, where it is one less; and 2**48 / md is inexact except there.
        # So with sticky = 1, RNE is "round half up" of the 25-bit quotient, which also carries
        # md = 2**23 up to the exact power of two.
        m.d.comb += recip.den.eq(md)
        lat = recip.latency
        d_bits = self._fp16_of_d(p, md, ed, zero, lat)
        k_pre = p.delay((er - ed - 3)[:2], lat, "k_pre")  # er + exp(id) - 2 before rounding id
        zero_i = p.delay(zero, lat, "zero_i")
        min_bits_i = p.delay(min_bits, lat, "min_i")
        early = lat - self.WINDOW_STAGES
        consts = self._window_consts(p, p.delay(min_bits, early, "min_w"),
                                     p.delay(er, early, "er_w"))
        return self._outputs(m, p, recip.quot, k_pre, zero_i, Cat(d_bits, min_bits_i), consts, CONST_LAYOUT)

    def _outputs(self, m, p, recip_quot, k_pre, zero_i, header, consts, layout):
        """The registered header and lane constants: id's significand, rounded from the reciprocal
        divider's quotient (one guard bit), becomes the lanes' ``scale``."""
        mi_up = (recip_quot + 1)[1:26]  # 25 bits: 2**24 means a carry into the exponent
        k = k_pre + mi_up[24]
        isig = Mux(mi_up[24], 1 << 23, mi_up[:24])
        scale = Mux(zero_i, 0, Mux(k[0], isig << 1, isig))

        header_r = p.reg(header, "header_r")
        const_r = Signal(layout)
        m.d.sync += const_r.scale.eq(scale)
        m.d.sync += [getattr(const_r, f).eq(v) for f, v in consts.items()]
        m.d.comb += [self.header.eq(header_r), self.const.eq(const_r)]
        return EnableInserter({"sync": self.en})(m)

    @staticmethod
    def _extremes(p, elems, take, first):
        """Signed max and min of a block as FP16 bits, registered ``extremes_latency`` stages after
        its last beat: a compare-select tree over each beat (a register per level), a register that
        combines a block's beats in order as they come, then the zero-sign fix. Reducing per beat
        needs a tree as wide as a beat, not as the block."""
        # The first level gives each pair's larger and smaller element from one comparison.
        his, los = [], []
        for j in range(0, len(elems), 2):
            a, b = elems[j], elems[j + 1]
            b_gt = _above(b, a)
            his.append(Mux(b_gt, b, a))
            los.append(Mux(b_gt, a, b))
        # Which zero is the extreme matters only for its sign: carry (any zero, last zero's sign).
        zs = [(~e[:15].any(), e[15]) for e in elems]
        level = 0
        while True:
            zs = [(zl | zr, Mux(zr, sr, sl)) for (zl, sl), (zr, sr) in zip(zs[0::2], zs[1::2])]
            level += 1
            his = [p.reg(v, f"hi{level}_{i}") for i, v in enumerate(his)]
            los = [p.reg(v, f"lo{level}_{i}") for i, v in enumerate(los)]
            zs = [(p.reg(z, f"z{level}_{i}"), p.reg(s, f"zs{level}_{i}")) for i, (z, s) in enumerate(zs)]
            if len(his) == 1:
                break
            his = [Mux(_above(r, l), r, l) for l, r in zip(his[0::2], his[1::2])]
            los = [Mux(_above(l, r), r, l) for l, r in zip(los[0::2], los[1::2])]
        (hi,), (lo,), ((z, s),) = his, los, zs
        take_t, first_t = p.delay(take, level, "ext_take"), p.delay(first, level, "ext_first")

        # The block so far: a block's first beat starts it, a later beat (later in block order,
        # the right operand as in the tree) joins it. Expressions under a Mux, not an If (see _span).
        acc_hi, acc_lo, acc_s = Signal(16, name="acc_hi"), Signal(16, name="acc_lo"), Signal(name="acc_zs")
        join_hi = Mux(_above(hi, acc_hi), hi, acc_hi)
        join_lo = Mux(_above(acc_lo, lo), lo, acc_lo)
        p.m.d.sync += [
            acc_hi.eq(Mux(take_t, Mux(first_t, hi, join_hi), acc_hi)),
            acc_lo.eq(Mux(take_t, Mux(first_t, lo, join_lo), acc_lo)),
            acc_s.eq(Mux(take_t & (first_t | z), s, acc_s)),
        ]

        def fix(bits):
            return Mux(bits[:15].any(), bits, Cat(Const(0, 15), acc_s))
        return p.reg(fix(acc_hi), "max_bits"), p.reg(fix(acc_lo), "min_bits")

    @staticmethod
    def _span(m, p, vmax, vmin):
        """r = fl32(max - min) as (24-bit significand, exponent, r == 0), after 7 stages."""
        # Splitting the fields off in their own stage keeps the shifter stage shallow.
        smax, emax, mmax = (p.reg(v, f"max_{n}") for v, n in zip(_fp16_fields(vmax), "sem"))
        smin, emin, mmin = (p.reg(v, f"min_{n}") for v, n in zip(_fp16_fields(vmin), "sem"))
        # Exact max - min in units of 2**-24 (41 bits, never negative). One adder covers
        # (+,+) max - min, (+,-) max + |min| and (-,-) |min| - |max|; (-,+) cannot occur because
        # max >= min and zero extremes share one sign.
        fmax = (mmax << emax)[1:43]  # mant * 2**(exp_eff - 1), without an adder before the shift
        fmin = (mmin << emin)[1:43]
        fmax, fmin = p.reg(fmax, "fix_max"), p.reg(fmin, "fix_min")
        smax, smin = p.reg(smax, "fix_smax"), p.reg(smin, "fix_smin")
        a = Mux(smax, ~fmax, fmax)
        b = Mux(smin, fmin, ~fmin)
        diff = p.reg((a + b + (smax == smin))[:41], "diff")

        # Normalise in two steps (whole bytes, then bits) to keep each stage shallow; padding at
        # the LSB end leaves the leading-zero count equal to diff's.
        v = p.reg(Cat(Const(0, 7), diff), "diff_v")
        groups = [p.reg(diff[max(0, 8 * k - 7):8 * k + 1].any(), f"byte{k}") for k in range(6)]
        # Priority encoders and selections here are expressions, not assignments under If or
        # Switch: those become always blocks, which Icarus never runs while their inputs keep
        # their time-0 values, and a constant first block (q4_1's Icarus regression with
        # KVPATH_LONG=1) then left its codes unknown.
        coarse = Const(0, 3)
        for k in range(6):  # highest non-zero byte wins
            coarse = Mux(groups[k], 5 - k, coarse)
        v1 = p.reg((v << Cat(Const(0, 3), coarse))[:48], "norm_coarse")
        c1 = p.reg(coarse, "coarse")
        zero1 = p.reg(~Cat(*groups).any(), "zero1")
        top = v1[40:48]
        fine = Const(0, 3)
        for k in range(8):
            fine = Mux(top[k], 7 - k, fine)
        v2 = p.reg((v1 << fine)[:48], "norm_fine")
        er2 = p.reg(Const(16, signed(8)) - Cat(fine, c1), "er_n")
        zero2 = p.reg(zero1, "zero2")

        # RNE to 24 bits; a carry out of the significand bumps the exponent.
        norm = v2[7:48]
        sig = norm[17:41]
        sig_up = sig + (norm[16] & (norm[:16].any() | sig[0]))
        mr = p.reg(Mux(sig_up[24], 1 << 23, sig_up[:24]), "mr")
        er = p.reg(er2 + sig_up[24], "er")
        return mr, er, p.reg(zero2, "zero_r")

    @staticmethod
    def _fp16_of_d(p, md, ed, zero, lat):
        """fp16(d) with RNE, subnormal below 2**-14 (d >= 2**-28 always), delayed to ``lat``."""
        sub_sh = p.reg(Mux(ed < -14, -14 - ed, 0)[:4], "d16_sh")
        # h below carries the hidden bit, so adding it to (exponent - 1) << 10 also covers a
        # rounding carry into the exponent and subnormals rounding up to the smallest normal.
        base = p.reg(Mux(ed < -14, 0, ed + 14)[:5], "d16_base")
        md1 = p.reg(md, "d16_md")
        zero1 = p.reg(zero, "d16_zero")
        # Bits shifted out here never decide the rounding: a subnormal d is k * 2**-24 / 15 for an
        # integer k, at least 1/30 of an FP16 step from a tie, so with the guard bit set one of the
        # five bits below it is set too.
        w = p.reg((md1 >> sub_sh)[:24], "d16_w")
        base2 = p.reg(base, "d16_base2")
        zero2 = p.reg(zero1, "d16_zero2")
        h = w[13:24]
        h_up = h + (w[12] & (w[:12].any() | h[0]))
        d_bits = p.reg(Mux(zero2, 0, ((base2 << 10) + h_up)[:16]), "d16")
        return p.delay(d_bits, lat - 3, "d16")

    @staticmethod
    def _window_consts(p, min_bits, er):
        """The lanes' window constants; ``WINDOW_STAGES`` stages, then the output register."""
        smin, emin, mmin = _fp16_fields(min_bits)
        shift = p.reg((16 - er)[:6], "w_shift")
        amount = p.reg((emin + 16 - er)[:7], "w_amount")
        return window_consts(p, smin, mmin, amount, shift, _window)


class Q41LaneUnit(wiring.Component):
    """One FP16 ``x`` and its block's constants in; the 4-bit q4_1 code out."""

    latency = 10

    def __init__(self, const_layout: data.Layout = CONST_LAYOUT):
        super().__init__(LaneUnitSignature(FMT, const_layout))

    def _front(self, p, c):
        """Stages 0-1: x's sign, its place in the block's window and its lost-bits flag (the
        window's two stages; the first output is registered by the caller)."""
        sign, exp_eff, mant = _fp16_fields(self.x)
        amount0 = p.reg(exp_eff + c.shift, "amount0")
        mant0 = p.reg(mant, "mant0")
        mag, frac = _window(mant0, amount0)
        return sign, mag, frac

    def elaborate(self, platform):
        m = Module()
        p = pipe(m)
        c = self.const

        # --- stages 0-1: x into the block's window.
        sign, mag, frac = self._front(p, c)
        sign1 = p.delay(sign, 2, "sign")
        mag1 = p.reg(mag, "mag1")
        frac1 = p.reg(frac, "frac1")
        not_min1 = p.delay(c.not_min, 2, "not_min")
        neg_min1 = p.delay(c.neg_min, 2, "neg_min")
        min_frac1 = p.delay(c.min_frac, 2, "min_frac")
        scale = p.delay(c.scale, 6, "scale")

        # --- stage 2: D = floor((x - min) / lsb) mod 2**31, sticky = (x - min) has lower bits.
        # floor(x) for x < 0 is ~mag + (no lost bits); -min is not_min + 1 = neg_min. When min has
        # bits below the window, |min| < 2**(er - 20): a non-negative x without such bits then
        # borrows from them, while a negative x has |x - min| <= |min|, far below the codes'
        # reach, so it needs no borrow. Both having such bits also means x - min is that small.
        cin = Mux(sign1, ~frac1, ~min_frac1 | frac1)
        xw = Mux(sign1, ~mag1, mag1)
        kw = Mux(sign1, neg_min1, not_min1)
        d2 = p.reg((xw + kw + cin)[:WINDOW_BITS], "d2")
        s2 = p.reg(frac1 | min_frac1, "s2")

        # --- stage 3: where D's leading one is, if at bit 23 or above: only those t round inside
        # the window; lower values stay truncated, which keeps their codes 0. Prefix ORs of the
        # low bits, ready for the sticky bit wherever the lead turns out to be.
        lead = Const(0, 3)  # leading one at bit 23 + lead (0 when below bit 23); an expression (see _span)
        for i in range(8):
            lead = Mux(d2[23 + i], i, lead)
        d3 = p.reg(d2, "d3")
        s3 = p.reg(s2, "s3")
        lead3 = p.reg(lead, "lead3")
        any3 = p.reg(Cat(*[d2[:j + 1].any() for j in range(6)]), "any3")  # any3[j]: bits 0..j

        # --- stages 4-5: t = RNE of D to 24 significant bits, kept in window position: with the
        # lead at bit 23 + i the kept LSB is bit i, the guard bit i - 1 and sticky bits below;
        # each is one 8:1 selection by i. The decision and the addition get a stage each.
        lsb = d3[:8].bit_select(lead3, 1)
        guard = Cat(Const(0, 1), d3[:7]).bit_select(lead3, 1)
        sticky = Cat(Const(0, 2), any3).bit_select(lead3, 1) | s3
        low_mask = Cat(*[lead3 > j for j in range(7)])  # bits 0 .. i - 1
        kept4 = p.reg(d3 & ~Cat(low_mask, Const(0, WINDOW_BITS - 7)), "kept4")
        inc4 = p.reg(Mux(guard & (sticky | lsb), 1 << lead3, 0)[:8], "inc4")
        t5 = p.reg((kept4 + inc4)[:WINDOW_BITS], "t5")

        # --- stages 6-7: P = t * scale = y * 2**51 exactly, as two 17-bit slices of t so each
        # product fits one DSP48E2 (25 x 17 unsigned).
        plo = p.reg(t5[:17] * scale, "plo")
        phi = p.reg(t5[17:] * scale, "phi")
        psum = p.reg(phi + (plo >> 17), "psum")
        st_low = p.reg(plo[:17].any(), "st_low")

        # --- stages 8-9: code from y's bits around the half-integer grid: first the facts
        # about y, then the choice.
        y = psum[8:39]  # y * 2**26: fraction bits 0..25, integer bits 26..29, bit 30 = y >= 16
        zf = y[:26] ^ (1 << 25)  # fraction of y + 0.5
        n0 = p.reg(y[26:30] + y[25], "n0")  # floor(y + 0.5)
        # ones[k]: frac(y + 0.5) >= 1 - 2**-k. The nested tests share one 21-bit AND and finish
        # in the next stage; registered separately they would map as one long chain.
        ones21 = p.reg(zf[5:26].all(), "ones21")
        z = p.reg(zf[2:5], "z")
        ones = {21: ones21, 22: ones21 & z[2], 23: ones21 & z[1:3].all(), 24: ones21 & z.all()}
        # frac(y + 0.5) > 1 - 3 * 2**-26, given ones(24): bit 2**-25 set, or 2**-26 and any below
        above1 = p.reg(zf[1] | (zf[0] & (st_low | psum[:8].any())), "above1")
        big = p.reg(y[30], "big")
        # An expression, as in Q41BlockUnit._span: n0 = 15 gives no carry, as before.
        up = Mux(n0 == 0, ones[24] & above1,
             Mux(n0 == 1, ones[24],
             Mux(n0 < 4, ones[23],
             Mux(n0 < 8, ones[22],
             Mux(n0 < 15, ones[21], 0)))))
        q = n0 + up
        # y < 16 for constants from a real block; the clip keeps the lane exact for any constants
        # with er + exp(id) in {2, 3}, which is the domain its tests cover.
        code = p.reg(Mux(big | (q > 15), 15, q[:4]), "code")
        m.d.comb += self.code.eq(code)
        return EnableInserter({"sync": self.en})(m)
