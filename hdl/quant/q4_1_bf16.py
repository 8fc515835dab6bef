"""q4_1 quantizer units for BF16 elements: the FP16 units' structure with an fp32 adder for the span.

What changes against ``quant_q4_1`` (docs/numerics.md, "BF16 input"):

* ``r = fl32(max - min)``: BF16 values span 2**-133 .. 2**128, so no fixed-point window holds the
  exact difference. An aligned adder does: the larger magnitude's 8-bit significand sits above
  26 guard bits, the smaller one is shifted right by the exponent difference, and what falls off
  is a sticky bit jammed below everything kept (when anything falls off the result has 33 or more
  bits, so the jam lies below the rounding's guard bit). The span can overflow to Inf.
* ``d = fl32(r / 15)`` can be an fp32 subnormal: with the quotient's exponent at -127 or -128 it
  keeps 23 or 22 bits. Once ``d <= 2**-128`` its reciprocal overflows; such blocks and those with
  an Inf span are *void*: scale 0, so every code is 0 (kvpath's rule), header as gguf's.
* ``fp16(d)`` and ``fp16(min)`` round with a full sticky bit and overflow to Inf.
* The lanes' window (LSB ``2**(er - 30)``) takes a BF16 significand at a shift
  ``A = e + shift`` that may fall entirely below (all bits lost) or above (a multiple of 2**31,
  which the modulo window drops) the window.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring

from kvpath.config import BLOCK_ELEMS

from kvpath.hdl.lib.divider import Divider
from kvpath.hdl.quant.contract import BlockUnitSignature
from kvpath.hdl.lib.bits import any_below
from kvpath.hdl.quant.q4_1_fp16 import FMT, WINDOW_BITS, Q41BlockUnit, Q41LaneUnit, window_consts

EXP_BITS = 10  # signed exponents and shifts: BF16's 254 binades plus guard
SPAN_GUARD = 26
FP16_INF = 0x7C00
WINDOW_SPAN = 8 + WINDOW_BITS  # a significand shifted by A in [0, 39) reaches the window

CONST_LAYOUT_BF16 = data.StructLayout({
    "scale": unsigned(25),
    "not_min": unsigned(WINDOW_BITS),
    "neg_min": unsigned(WINDOW_BITS),
    "shift": signed(EXP_BITS),  # -er - 96: x's significand moves to A = e + shift (see _window)
    "min_frac": unsigned(1),
})


def _fields(bits):
    """Sign, effective exponent field (1 for subnormals) and 8-bit significand of a BF16 value:
    ``|x| = mant * 2**(e_eff - 134)``."""
    normal = bits[7:15].any()
    return bits[15], Mux(normal, bits[7:15], 1), Cat(bits[:7], normal)


def _window(mant, a):
    """floor(|v| / 2**(er-30)) mod 2**31 and whether |v| has bits below it, for
    ``|v| / 2**(er-30) = mant * 2**(a - 8)`` (``a`` signed)."""
    below = a < 0
    above = a >= WINDOW_SPAN
    a6 = a[:6]
    full = mant << a6
    low_any = Cat(*[mant[:8 - j].any() for j in range(8)])  # bits lost when a == j
    window = Mux(below | above, 0, full[8:WINDOW_SPAN])
    frac = Mux(below, mant.any(), Mux(a < 8, (low_any >> a6[:3])[0], 0))
    return window, frac


FP16_OF_BF16_STAGES = 3


def fp16_of_bf16(p, bits, name: str):
    """NumPy's float16 of a BF16 value: rounded to nearest even (FP16 subnormals included), Inf
    on overflow. Three register stages: the plan, the subnormal shift, the rounding."""
    e = bits[7:15]
    e16 = (e - 112)[:EXP_BITS].as_signed()  # FP16's exponent field
    # 1: the right shift into the FP16 subnormals (1..12, 12 when nothing is left).
    sig = Cat(Const(0, 3), bits[:7], e.any())
    sh = p.reg(Mux(e16 <= -11, 12, 1 - e16)[:4], f"{name}_sh")
    sig1 = p.reg(sig, f"{name}_sig")
    inf1 = p.reg(e16 >= 31, f"{name}_inf")
    normal1 = p.reg(e16 >= 1, f"{name}_normal")
    efield1 = p.reg(e16[:5], f"{name}_efield")
    sign1 = p.reg(bits[15], f"{name}_sign")
    # 2: the subnormal significand and its rounding increment (round bit sig[sh - 1], sticky
    # bits sig[:sh - 1]).
    sub = (sig1 >> sh)[:11]
    rbit = Cat(Const(0, 1), sig1).bit_select(sh, 1)
    low = any_below(Cat(Const(0, 1), sig1), sh)
    sub2 = p.reg(sub, f"{name}_sub")
    up2 = p.reg(rbit & (low | sub[0]), f"{name}_up")
    normal_mag2 = p.reg(Cat(sig1[:10], efield1), f"{name}_normal_mag")
    inf2, normal2, sign2 = (p.reg(v, f"{name}_{n}2") for v, n in ((inf1, "inf"), (normal1, "normal"),
                                                                    (sign1, "sign")))
    # 3: pick the case; a subnormal rounding up to 2**-14 carries into the exponent field itself.
    mag = Mux(inf2, FP16_INF, Mux(normal2, normal_mag2, (sub2 + up2)[:15]))
    return p.reg(Cat(mag[:15], sign2), f"{name}_fp16")


class Q41Bf16BlockUnit(Q41BlockUnit):
    """32 BF16 elements in; header = fp16(d) | fp16(min) << 16 and the lanes' constants out.

    Every stage stays within 6 LUT levels (the KV260 target), so the steps that the FP16 unit
    does in one stage (normalizing, rounding d, fp16 conversions) take two or three here.
    """

    SPAN_STAGES = 8
    D_ROUND_STAGES = 3

    def __init__(self, lanes: int = BLOCK_ELEMS):
        # Not Q41BlockUnit.__init__: the signature carries the BF16 constants' layout.
        wiring.Component.__init__(self, BlockUnitSignature(FMT, CONST_LAYOUT_BF16, lanes))
        self.lanes = lanes
        self.latency = (self.extremes_latency(lanes) + self.SPAN_STAGES + Divider.stages(27, self.DIV15_STEPS_PER_STAGE)
                        + self.D_ROUND_STAGES + Divider.stages(25, self.RECIP_STEPS_PER_STAGE) + 1)

    def elaborate(self, platform):
        m = Module()
        p, div15, recip, vmax, vmin = self._start(m)
        mr, er, zero, inf = self._span_bf16(m, p, vmax, vmin)
        min_bits = p.delay(vmin, self.SPAN_STAGES, "min_span")

        # --- d = r / 15, rounded at 24 bits, or at 2**-149 when d is an fp32 subnormal.
        m.d.comb += div15.num.eq(Cat(Const(0, 6), mr))
        lat = div15.latency
        er_q = p.delay(er, lat, "er_q")
        zero_q = p.delay(zero, lat, "zero_q")
        inf_q = p.delay(inf, lat, "inf_q")
        min_bits = p.delay(min_bits, lat, "min_q")
        q15, r15 = div15.quot, div15.rem
        # 1: d's exponent before rounding, the quotient's 24 bits with guard and sticky, and how
        # many of them the fp32 subnormal range drops.
        wide = q15[26]
        ed_raw = Signal(signed(EXP_BITS))
        m.d.comb += ed_raw.eq(er_q - 4 + wide)
        x = p.reg(Cat(Mux(wide, q15[:2].any(), q15[0]) | r15.any(), Mux(wide, q15[2], q15[1]),
                      Mux(wide, q15[3:27], q15[2:26])), "dq_x")  # sticky, guard, 24 quotient bits
        extra = p.reg(Mux(ed_raw >= -126, 0, Mux(ed_raw == -127, 1, 2))[:2], "dq_extra")
        below_128 = p.reg(ed_raw <= -129, "dq_below_128")
        at_128 = p.reg(ed_raw == -128, "dq_at_128")
        ed_raw = p.reg(ed_raw, "dq_ed_raw")
        # 2: round to nearest even at the kept LSB.
        lsb = x[2:5].bit_select(extra, 1)
        guard = x[1:4].bit_select(extra, 1)
        sticky = Cat(x[0], x[:2].any(), x[:3].any()).bit_select(extra, 1)
        kept = p.reg(((((x >> 2) >> extra) + (guard & (sticky | lsb))) << extra)[:25], "dq_kept")
        below_128, at_128 = p.reg(below_128, "dq_below_128_2"), p.reg(at_128, "dq_at_128_2")
        ed_raw = p.reg(ed_raw, "dq_ed_raw2")
        # 3: renormalize a carry out of the significand.
        md = p.reg(Mux(kept[24], 1 << 23, kept[:24]), "md")
        ed = p.reg((ed_raw + kept[24])[:EXP_BITS].as_signed(), "ed")
        # d <= 2**-128: 1/d is Inf. Below exponent -128 always; at -128 only when rounding left
        # exactly 2**-128.
        d_void = p.reg(below_128 | (at_128 & (kept == 1 << 23)), "d_void")
        n = self.D_ROUND_STAGES
        er = p.delay(er_q, n, "er_d")
        zero = p.delay(zero_q, n, "zero_d")
        inf = p.delay(inf_q, n, "inf_d")
        m16 = p.delay(fp16_of_bf16(p, min_bits, "m16"), n - FP16_OF_BF16_STAGES, "m16_r")
        min_bits = p.delay(min_bits, n, "min_d")

        # --- id = 1 / d, as the FP16 unit (md is normalized also for a subnormal d).
        m.d.comb += recip.den.eq(md)
        lat = recip.latency
        d_bits = self._fp16_of_d_bf16(p, md, ed, zero, inf, lat)
        k_pre = p.delay((er - ed - 3)[:2], lat, "k_pre")
        zero_i = p.delay(zero | d_void | inf, lat, "zero_i")
        m16_i = p.delay(m16, lat, "m16_i")
        early = lat - self.WINDOW_STAGES
        consts = self._window_consts_bf16(p, p.delay(min_bits, early, "min_w"), p.delay(er, early, "er_w"))
        return self._outputs(m, p, recip.quot, k_pre, zero_i, Cat(d_bits, m16_i), consts, CONST_LAYOUT_BF16)

    @staticmethod
    def _span_bf16(m, p, vmax, vmin):
        """r = fl32(max - min) as (24-bit significand, exponent, r == 0, r is Inf), 8 stages."""
        # 1: operands by magnitude; max - min adds magnitudes when the signs differ.
        smax, emax, mmax = _fields(vmax)
        smin, emin, mmin = _fields(vmin)
        max_big = vmax[:15] >= vmin[:15]
        big_e = p.reg(Mux(max_big, emax, emin), "sp_big_e")
        big_m = p.reg(Mux(max_big, mmax, mmin), "sp_big_m")
        small_e = p.reg(Mux(max_big, emin, emax), "sp_small_e")
        small_m = p.reg(Mux(max_big, mmin, mmax), "sp_small_m")
        sub = p.reg(smax == smin, "sp_sub")
        # 2: align the smaller operand; bits shifted off become the sticky bit.
        k = Signal(8)
        m.d.comb += k.eq(big_e - small_e)
        far = k >= 8 + SPAN_GUARD
        b = Mux(far, 0, (Cat(Const(0, SPAN_GUARD), small_m) >> k)[:8 + SPAN_GUARD])
        lost = Cat(Const(0, 1), *[small_m[:j].any() for j in range(1, 9)])  # lost[j]: j low bits
        j = Mux(k <= SPAN_GUARD, 0, Mux(far, 8, k - SPAN_GUARD))[:4]
        a2 = p.reg(Cat(Const(0, SPAN_GUARD), big_m), "sp_a")
        b2 = p.reg(b, "sp_b")
        st2 = p.reg(lost.bit_select(j, 1), "sp_sticky")
        sub2, e2 = p.reg(sub, "sp_sub2"), p.reg(big_e, "sp_e2")
        # 3: the jammed sum or difference, in units of 2**(big_e - 161).
        total = Mux(sub2, ((a2 - b2) << 1) - st2, ((a2 + b2) << 1) + st2)[:36]
        diff = p.reg(total, "sp_diff")
        e3 = p.reg(e2, "sp_e3")
        # 4-6: normalize: which bytes are non-zero, then whole bytes, then bits.
        v0 = Cat(Const(0, 4), diff)  # 40 bits
        v = p.reg(v0, "sp_v0")
        groups = [p.reg(v0[8 * g:8 * g + 8].any(), f"sp_byte{g}") for g in range(5)]
        e3 = p.reg(e3, "sp_e3b")
        # Expressions, not If assignments: see Q41BlockUnit._span (Icarus and time-0 inputs).
        coarse = Const(0, 3)
        for g in range(5):  # highest non-zero byte wins
            coarse = Mux(groups[g], 4 - g, coarse)
        v1 = p.reg((v << Cat(Const(0, 3), coarse))[:40], "sp_v1")
        c1, zero1, e4 = p.reg(coarse, "sp_c1"), p.reg(~Cat(*groups).any(), "sp_zero1"), p.reg(e3, "sp_e4")
        fine = Const(0, 3)
        for t in range(8):
            fine = Mux(v1[32 + t], 7 - t, fine)
        v2 = p.reg((v1 << fine)[:40], "sp_v2")
        lz = p.reg(Cat(fine, c1), "sp_lz")
        zero2, e5 = p.reg(zero1, "sp_zero2"), p.reg(e4, "sp_e5")
        # 7: round to 24 bits; exponent of r is big_e - 126 - lz (+ 1 on a carry).
        sig = v2[16:40]
        sig_up = sig + (v2[15] & (v2[:15].any() | sig[0]))
        mr = p.reg(Mux(sig_up[24], 1 << 23, sig_up[:24]), "sp_mr")
        er6 = p.reg((e5 - 126 - lz + sig_up[24])[:EXP_BITS].as_signed(), "sp_er6")
        zero6 = p.reg(zero2, "sp_zero6")
        # 8: overflow.
        inf = p.reg(er6 >= 128, "sp_inf")
        return p.reg(mr, "sp_mr7"), p.reg(er6, "sp_er"), p.reg(zero6, "sp_zero"), inf

    @staticmethod
    def _fp16_of_d_bf16(p, md, ed, zero, inf, lat):
        """fp16(d) with RNE over every dropped bit, Inf on overflow, delayed to ``lat``."""
        e16 = (ed + 15)[:EXP_BITS].as_signed()
        sh = p.reg(Mux(e16 >= 1, 0, Mux(e16 <= -11, 12, 1 - e16))[:4], "d16_sh")
        base = p.reg(Mux(e16 >= 1, e16 - 1, 0)[:5], "d16_base")
        force_inf = p.reg((e16 >= 31) | inf, "d16_inf")
        md1, zero1 = p.reg(md, "d16_md"), p.reg(zero, "d16_zero")
        w = p.reg((md1 >> sh)[:24], "d16_w")
        lost = p.reg(any_below(md1[:12], sh), "d16_lost")  # sh <= 12
        base2, inf2, zero2 = p.reg(base, "d16_base2"), p.reg(force_inf, "d16_inf2"), p.reg(zero1, "d16_zero2")
        h = w[13:24]
        h_up = h + (w[12] & (w[:12].any() | lost | h[0]))
        # A zero span carries a meaningless exponent, so zero is decided first.
        d_bits = p.reg(Mux(zero2, 0, Mux(inf2, FP16_INF, ((base2 << 10) + h_up)[:16])), "d16")
        return p.delay(d_bits, lat - 3, "d16")

    @staticmethod
    def _window_consts_bf16(p, min_bits, er):
        smin, emin, mmin = _fields(min_bits)
        shift = p.reg((-er - 96)[:EXP_BITS].as_signed(), "w_shift")
        amount = p.reg((emin - er - 96)[:EXP_BITS + 1].as_signed(), "w_amount")
        return window_consts(p, smin, mmin, amount, shift, _window)


class Q41Bf16LaneUnit(Q41LaneUnit):
    """The FP16 lane with a BF16 front: the element's place in the block's window."""

    def __init__(self):
        super().__init__(CONST_LAYOUT_BF16)

    def _front(self, p, c):
        sign, exp_eff, mant = _fields(self.x)
        amount0 = p.reg((exp_eff + c.shift)[:EXP_BITS + 1].as_signed(), "amount0")
        mant0 = p.reg(mant, "mant0")
        mag, frac = _window(mant0, amount0)
        return sign, mag, frac
