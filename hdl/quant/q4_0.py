"""q4_0 datapath: ``d = max / -8`` (max = the first element of largest magnitude), codes
``min(15, trunc(fl32(fl32(x * (1/d)) + 8.5)))``.

Block unit (latency: the max tree's stages, ``MaxMagnitudeTree.stages(lanes)``, then 3): the
signed maximum by magnitude, reduced beat by beat; ``d`` is exact in fp32, so its
FP16 form is the maximum's own bits with the exponent lowered by 3 (rounded to nearest even when
that leaves the FP16 normal range); ``1/d`` comes from a 1024-word ROM of ``fl32(1/m)`` indexed by
the normalized fraction. An all-zero block keeps the first zero's sign: d = -0 for +0 and +0 for -0.

Lane unit (latency 8): ``quant_fp32.ProductFront`` gives the exactly rounded product ``p``; the tail
reproduces the second fp32 rounding, of ``S = p + 8.5``, and the truncation. With ``a = |p|``
split into integer ``I`` and fraction ``F`` (``a`` is exact in 25 fraction bits whenever
``a >= 1/4``; below that the code is 8 whatever the rounding):

- ``p >= 0``: ``S`` lies in [8, 16), its ulp is 2**-20, and it rounds up to the next integer when
  ``F >= 0.5 - 2**-21`` (the tie goes to the even integer): code ``8 + floor(a + 0.5 + 2**-21)``;
- ``p < 0``: ``S = (7 - I) + (1.5 - F)`` rounds up to ``8 - I`` when ``F <= 0.5 + 2**(n-24)``,
  ``n`` being S's binade: 2**-22 for ``I <= 3``; for ``I >= 4`` ``a``'s own ulp (2**-21) exceeds
  the margin, so 2**-22 gives the same answer there too: code ``8 - I - [F > 0.5 + 2**-22]``.

Both are one carry-chain add of a constant chosen by the sign and the alignment ``r``, then the
integer bits at ``r``'s position, clipped to 0..15.
"""

from amaranth.hdl import Cat, Const, Mux, Signal, signed
from amaranth.lib import data

from kvpath.config import get_format

from kvpath.hdl.lib.bits import lookup
from kvpath.hdl.lib.pipe import delay
from kvpath.hdl.quant.fp32 import (BlockUnit, FrontLaneUnit, front_units, SIG_BITS, WINDOW_BITS, ProductFront, normalized_max,
                                   reciprocal_rom, round_div)
from kvpath.hdl.quant.contract import UnitTable
from kvpath.hdl.quant.ggml_bf16 import Q40_CONST, Q40Bf16BlockUnit

FMT = get_format("q4_0")

CONST_LAYOUT = data.StructLayout({
    "mi": SIG_BITS,  # |id|'s significand with its hidden bit; 0 for an all-zero block
    "rb": signed(8),  # lane shift base: r = rb - (x's normalized exponent)
    "neg": 1,  # id's sign (opposite to the maximum's)
})

ROM_LAYOUT = data.StructLayout({
    "mi": 23,  # fl32(1/m) significand below the hidden bit
    "ie": 1,  # its exponent offset
})

# A = |p| * 2**25 is the window shifted left by 5 - r; r = 0 belongs to |p| near 8 (x the block
# maximum with a power-of-two significand) and r >= 8 leaves |p| < 1/4.
R_LIMIT = 8
A_FRAC = 25
A_INT_BITS = 4  # |p| <= 8 + a few ulps, plus the rounding increment
# floor(a + 1/2 + 2**-21) for p >= 0; floor(a + 1/2 - 2**-22 - 2**-25) for p < 0 (the code drops
# by one only when F > 1/2 + 2**-22, which for a >= 4, whose ulp is 2**-21, is just F > 1/2).
K_POS = (1 << 24) + (1 << 4)
K_NEG = (1 << 24) - (1 << 3) - 1


def window_addend(r: int, sign: int) -> int:
    """floor(K * 2**(r - 5)): adding it to the window is adding K to A, as far as bits >= 2**25
    are concerned (the window is an integer, so the dropped fraction of K never carries)."""
    k = K_NEG if sign else K_POS
    return k >> (5 - r) if r <= 5 else k << (r - 5)


def rom_entry(frac: int) -> dict[str, int]:
    """ROM word for a normalized maximum ``(1024 + frac) * 2**e``: ``fl32(1/m) = mi * 2**(ie - 34)``."""
    mi, iexp = round_div(1, 1024 + frac)
    ie = iexp + 34
    assert ie in (0, 1)
    return {"mi": mi - (1 << 23), "ie": ie}


class Q40BlockUnit(BlockUnit):
    fmt, const_layout, after_tree = "q4_0", CONST_LAYOUT, 3

    def stages(self, m, p):
        en = self.en

        # The tree's stages: the signed maximum by magnitude. Then: normalize, and prepare d = max / 8
        # in FP16. Exponent fields of 4 and up just drop by 3; below that d is FP16-subnormal:
        # mx >> (4 - ee), rounded to nearest even.
        vmax, mx, ea, lz = normalized_max(m, en, self, keep_sign=True)
        exp = vmax[10:15]
        # ee = 1, 2, 3: shift right by 4 - ee. Expressions rather than a Switch: a Switch becomes an
        # always block, which Icarus never runs while its inputs keep their time-0 values (a +0
        # first block left its header unknown; tests/datapath, test_constant_first_block_icarus).
        one, two = exp == 2, exp == 3
        shifted = Mux(two, mx >> 1, Mux(one, mx >> 2, mx >> 3))[:11]
        rbit = Mux(two, mx[0], Mux(one, mx[1], mx[2]))
        sticky = Mux(two, 0, Mux(one, mx[0], mx[:2] != 0))
        s4_mx, s4_lz, s4_ea = p.reg(mx, "s4_mx"), p.reg(lz, "s4_lz"), p.reg(ea, "s4_ea")
        s4_normal = p.reg(exp >= 4, "s4_normal")
        s4_hnorm = p.reg(Cat(vmax[:10], exp - 3), "s4_hnorm", 15)
        s4_sub = p.reg(shifted, "s4_sub", 11)
        s4_rbit, s4_sticky = p.reg(rbit, "s4_rbit"), p.reg(sticky, "s4_sticky")
        s4_neg = p.reg(~vmax[15], "s4_neg", 1)
        s4_zero = p.reg(mx == 0, "s4_zero", 1)

        # Next stage: ROM read with the normalized fraction; finish d.
        word, s5_ean = reciprocal_rom(m, p, s4_mx, s4_lz, s4_ea, ROM_LAYOUT, rom_entry)
        up = s4_rbit & (s4_sticky | s4_sub[0])
        mag = Mux(s4_normal, s4_hnorm, s4_sub + up)
        s5_header = p.reg(Cat(mag[:15], s4_neg), "s5_header", 16)
        s5_neg, s5_zero = p.reg(s4_neg, "s5_neg"), p.reg(s4_zero, "s5_zero")

        # Last stage: the lane constants.
        rb = Signal(signed(8))
        m.d.comb += rb.eq(s5_ean - word.ie + 1)
        s6_const = Signal(CONST_LAYOUT)
        with m.If(en):
            m.d.sync += [
                s6_const.mi.eq(Mux(s5_zero, 0, Cat(word.mi, Const(1, 1)))),
                s6_const.rb.eq(rb),
                s6_const.neg.eq(s5_neg),
            ]
        s6_header = delay(m, en, s5_header, 1, "header", reset=True, names="{name}_d{k1}")

        m.d.comb += [self.header.eq(s6_header), self.const.eq(s6_const)]


class Q40LaneUnit(FrontLaneUnit):
    """With BF16 elements the block constants carry a ``void`` bit (the block's 1/d overflowed):
    it forces code 0, kvpath's rule for those blocks."""

    fmt, r_limit = FMT, R_LIMIT

    def __init__(self, elem: str = "fp16", const_layout: data.Layout = CONST_LAYOUT):
        super().__init__(elem, const_layout)

    def neg(self):
        return self.const.neg

    def tail(self, m, front):
        en = self.en

        # Stage 7: one add does the second rounding (see the module docstring): the code is
        # 8 + floor(A + K) >> 25 for p >= 0 and 8 - that for p < 0, with A = |p| * 2**25
        # = w * 2**(5 - r). In window units the constant becomes floor(K * 2**(r - 5)).
        total = Signal(WINDOW_BITS + 1)
        # The table as one constant and a word select (an expression), not a Switch, for the
        # reason in Q40BlockUnit.stages.
        table = [0] * 16
        for sign in (0, 1):
            for r in range(R_LIMIT):
                table[r | sign << 3] = window_addend(r, sign)
        addend = lookup(Cat(front.r[:3], front.sign), table, WINDOW_BITS)
        m.d.comb += total.eq(front.w + addend)
        s7_total = Signal(A_INT_BITS + R_LIMIT - 1)  # window bits [20, 31): I for every r
        s7_r = Signal(3)
        s7_sign = Signal()
        s7_small = Signal()
        with m.If(en):
            m.d.sync += [
                s7_total.eq(total[A_FRAC - 5:]),
                s7_r.eq(front.r[:3]),
                s7_sign.eq(front.sign),
                s7_small.eq(front.far | front.zero),
            ]
        if self.elem == "bf16":
            # The block constant arrives with the element; align it with the front's output.
            s7_void = delay(m, en, self.const.void, ProductFront.latency + 1, "void", reset=True, names="{name}_d{k1}")

        # Stage 8: pick the integer part and saturate.
        i = Signal(A_INT_BITS)
        m.d.comb += i.eq(s7_total >> s7_r)
        code = Signal(4)
        cases = [(s7_small, 8), (s7_sign, Mux(i >= 8, 0, 8 - i))]
        if self.elem == "bf16":
            cases.insert(0, (s7_void, 0))
        with m.If(en):
            for k, (cond, value) in enumerate(cases):
                with (m.If if k == 0 else m.Elif)(cond):
                    m.d.sync += code.eq(value)
            with m.Else():
                m.d.sync += code.eq(Mux(i >= 7, 15, 8 + i))
        m.d.comb += self.code.eq(code)


class Q40Datapath(UnitTable):
    fmt, units = FMT, front_units(Q40LaneUnit, Q40BlockUnit, CONST_LAYOUT, Q40Bf16BlockUnit, Q40_CONST)
