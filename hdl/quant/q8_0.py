"""q8_0 datapath: ``d = amax / 127``, codes ``roundf(x * (1/d))`` as signed bytes.

Block unit (latency: the amax tree's stages, ``MaxMagnitudeTree.stages(lanes)``, then 4): the
largest magnitude of the block, reduced beat by beat as the block comes in; its normalized fraction
addresses a 1024-word ROM holding ``fl32(m/127)`` and ``fl32(1/fl32(m/127))`` for the significand
``m`` (the exponent only shifts both, as long as nothing leaves fp32's normal range, which an FP16
input cannot cause), then ``d`` is rounded to FP16 with ties to even, including the FP16-subnormal
range.

Lane unit (latency 8): ``quant_fp32.ProductFront`` gives the exactly rounded product; the code is
``roundf`` of it, which only needs the integer bits and the half bit: with ``T = floor(2|p|)``,
``|q| = (T + 1) >> 1``.
"""

from amaranth.hdl import Cat, Const, Mux, Signal, signed
from amaranth.lib import data

from kvpath.config import get_format

from kvpath.hdl.lib.bits import lookup
from kvpath.hdl.lib.pipe import delay
from kvpath.hdl.quant.fp32 import (BlockUnit, FrontLaneUnit, front_units, SIG_BITS, normalized_max,
                                   reciprocal_rom, round_div, trailing_zeros)
from kvpath.hdl.quant.contract import UnitTable
from kvpath.hdl.quant.ggml_bf16 import Q80_CONST, Q80Bf16BlockUnit

FMT = get_format("q8_0")

CONST_LAYOUT = data.StructLayout({
    "mi": SIG_BITS,  # id's significand with its hidden bit; 0 when amax is 0
    "rb": signed(8),  # lane shift base: r = rb - (x's normalized exponent)
})

ROM_LAYOUT = data.StructLayout({
    "mi": 23,  # fl32(1/d) significand below the hidden bit
    "ie": 1,  # its exponent offset
    "d": 23,  # fl32(m/127) significand below the hidden bit
    "de": 1,  # its exponent offset
    "ctz": 5,  # trailing zeros of d's 24-bit significand (sticky bit when rounding d to FP16)
})

# With |p| < 128 and the window's bit 16 weighing 1/2 for r = 0, any r >= 10 leaves T = 0.
R_LIMIT = 10


def rom_entry(frac: int) -> dict[str, int]:
    """ROM word for the normalized block maximum ``(1024 + frac) * 2**e``, by long division.

    ``d = fl32(m / 127)`` is ``dsig * 2**(de - 20)`` and ``fl32(1 / d)`` of that is
    ``mi * 2**(ie - 47)`` relative to the same scale.
    """
    m = 1024 + frac
    dsig, dexp = round_div(m, 127)
    mi, iexp = round_div(1, dsig)
    de, ie = dexp + 20, iexp + 47
    assert de in (0, 1) and ie in (0, 1)
    return {"mi": mi - (1 << 23), "ie": ie, "d": dsig - (1 << 23), "de": de,
            "ctz": trailing_zeros(dsig)}


def d_to_fp16_plan(ean: int, de: int) -> tuple[int, int]:
    """How ``d = dsig * 2**(ean + de - 45)`` becomes FP16: ``(shift - 13, base)``.

    FP16 bits are ``base * 1024 + RNE(dsig >> shift)``: for a normal result ``base`` is the biased
    exponent minus one (the hidden bit of the rounded significand adds the last one, and a carry
    out of the significand moves into the exponent on its own); for a subnormal result ``base`` is 0
    and the shift grows. Shifts beyond 25 all give 0 and are clamped there.
    """
    e16 = ean + de - 7
    shift = min(25, 13 + max(0, 1 - e16))
    return shift - 13, max(0, e16 - 1)


class Q80BlockUnit(BlockUnit):
    fmt, const_layout, after_tree = "q8_0", CONST_LAYOUT, 4

    def stages(self, m, p):
        en = self.en

        # The tree's stages: amax; then normalize subnormal maxima.
        amax, mx, ea, lz = normalized_max(m, en, self, keep_sign=False)
        s4_mx, s4_lz, s4_ea = p.reg(mx, "s4_mx"), p.reg(lz, "s4_lz"), p.reg(ea, "s4_ea")
        s4_zero = p.reg(amax == 0, "s4_zero")

        # Stage 5: ROM read with the normalized fraction.
        word, s5_ean = reciprocal_rom(m, p, s4_mx, s4_lz, s4_ea, ROM_LAYOUT, rom_entry)
        s5_zero = p.reg(s4_zero, "s5_zero")

        # Stage 6: constants, and d's FP16 shift (a lookup on the exponent) and sticky bit.
        # A table in one constant, read by a word select rather than a Switch: a Switch becomes an
        # always block that Icarus never runs while its inputs keep their time-0 values.
        plan = [0] * 256  # index de | ean << 1, entry shift | base << 4; exponents never reached read 0
        for e in range(-9, 31):
            for de in (0, 1):
                shift, b = d_to_fp16_plan(e, de)
                plan[de | ((e & 0x7F) << 1)] = shift | (b << 4)
        entry = lookup(Cat(word.de, s5_ean[:7]), plan, 9)
        sp, base = entry[:4], entry[4:9]
        dsig = Cat(word.d, Const(1, 1))
        top = Signal(12)  # dsig bits [12, 24): the 11 kept bits at shift 13 and the round bit
        m.d.comb += top.eq(dsig[12:] >> sp)
        s6_q = p.reg(top[1:], "s6_q")
        s6_round = p.reg(top[0], "s6_round")
        s6_sticky = p.reg(word.ctz < sp + 12, "s6_sticky")
        s6_base = p.reg(base, "s6_base")
        s6_zero = p.reg(s5_zero, "s6_zero")
        rb = Signal(signed(8))
        m.d.comb += rb.eq(s5_ean + word.de - word.ie)
        s6_const = Signal(CONST_LAYOUT)
        with m.If(en):
            m.d.sync += [
                s6_const.mi.eq(Mux(s5_zero, 0, Cat(word.mi, Const(1, 1)))),
                s6_const.rb.eq(rb),
            ]

        # Stage 7: round d to nearest even.
        up = s6_round & (s6_sticky | s6_q[0])
        d16 = Signal(16)
        m.d.comb += d16.eq((s6_base << 10) + s6_q + up)
        s7_header = p.reg(Mux(s6_zero, 0, d16), "s7_header", 16)
        s7_const = delay(m, en, s6_const, 1, "const", reset=True, names="{name}_d{k1}", shape=s6_const.shape())

        m.d.comb += [self.header.eq(s7_header), self.const.eq(s7_const)]


class Q80LaneUnit(FrontLaneUnit):
    fmt, r_limit = FMT, R_LIMIT

    def __init__(self, elem: str = "fp16", const_layout: data.Layout = CONST_LAYOUT):
        super().__init__(elem, const_layout)

    def tail(self, m, front):
        en = self.en
        # T = floor(2|p|): window bits from 16 + r up; at most 8 bits since |p| < 128.
        s7_t = Signal(8)
        s7_sign = Signal()
        s7_small = Signal()
        with m.If(en):
            m.d.sync += [s7_t.eq(front.w[16:] >> front.r), s7_sign.eq(front.sign),
                         s7_small.eq(front.far | front.zero)]
        # roundf: (T + 1) >> 1, negated for negative p; one carry chain does both, because
        # -floor((T+1)/2) == (-T) >> 1 and -T == ~T + 1.
        t = Mux(s7_small, 0, s7_t)
        v = Signal(9)
        m.d.comb += v.eq((Cat(t, Const(0, 1)) ^ s7_sign.replicate(9)) + 1)
        code = Signal(8)
        with m.If(en):
            m.d.sync += code.eq(v[1:])
        m.d.comb += self.code.eq(code)


class Q80Datapath(UnitTable):
    fmt, units = FMT, front_units(Q80LaneUnit, Q80BlockUnit, CONST_LAYOUT, Q80Bf16BlockUnit, Q80_CONST)
