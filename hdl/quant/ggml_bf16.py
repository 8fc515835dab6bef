"""Block units of q8_0 and q4_0 for BF16 elements (the lanes are the FP16 ones with BF16 fields).

A BF16 block maximum reaches fp32's whole range, so beside the FP16 units' ROM of fl32 reciprocals
by significand these units know three more outcomes (docs/numerics.md, "BF16 input"):

* the FP16 ``d`` field overflows to Inf or rounds into the FP16 subnormals or to zero;
* the fp32 ``d`` is itself subnormal (q8_0, maxima below about 2**-119): ``d`` then has fewer
  than 24 significant bits and ``1/d`` is not the significand ROM's; those maxima have BF16
  exponent fields 5..7 and get ROM rows of their own, indexed by the whole pattern;
* ``1/d`` overflows to Inf (q8_0: exponent field below 5 or the ROM's ``void`` flag; q4_0:
  ``|max| <= 2**-125``): the block is *void* and every code is 0, kvpath's rule.

Every other maximum is a normal BF16 number whose ROM row depends on its 7-bit fraction only;
the exponent field enters the lanes' shift base ``rb = e + rb_off``. The ROM contents come from the
golden model's scale tables (integer long division), and their construction asserts that the
exponent really does only shift them.
"""

from functools import lru_cache

from amaranth.hdl import Cat, Const, Mux, Signal, signed
from amaranth.lib import data
from amaranth.lib.memory import Memory


from kvpath.golden.ggml import bf16 as ggml_bf16
from kvpath.golden.num import bf16_arith

from kvpath.hdl.lib.bits import any_below
from kvpath.hdl.lib.pipe import delay, reg
from kvpath.hdl.quant.fp32 import SIG_BITS, BlockUnit, block_max, trailing_zeros

RB_BITS = 10  # e + rb_off for e in 0..254 and |rb_off| <= 3
# Lane shift bases (see quant_q8_0 / quant_q4_0 tails): with id = id_sig * 2**id_exp (id_sig
# 24 bits) a BF16 element's window aligns at r = RB_BASE - id_exp - E.
RB_BASE = {"q8_0": 110, "q4_0": 107}

Q80_CONST = data.StructLayout({"mi": SIG_BITS, "rb": signed(RB_BITS)})
Q40_CONST = data.StructLayout({"mi": SIG_BITS, "rb": signed(RB_BITS), "neg": 1, "void": 1})

Q80_ROM = data.StructLayout({
    "mi": 23,  # fl32(1/d) below the hidden bit
    "rb_off": signed(3),
    "void": 1,  # 1/d overflows: codes 0
    "d": 23,  # fl32(m/127) below the hidden bit (normal rows only)
    "de": 1,
    "ctz": 5,  # trailing zeros of d's significand: the sticky bit of its FP16 rounding
})
Q80_NORMAL_SEL = 3  # ROM rows 3*128.. : maxima with exponent field >= 8, by fraction
Q80_TINY_E = (5, 6, 7)  # exponent fields with rows of their own (fp32-subnormal d)
Q40_ROM = data.StructLayout({"mi": 23, "rb_off": signed(3)})
Q40_VOID_MAX = 0x0100  # |max| <= 2**-125: |d| <= 2**-128 and 1/d overflows
FP16_INF = 0x7C00


def _row(fmt: str, pattern: int):
    table = ggml_bf16.q8_0_scale_table() if fmt == "q8_0" else ggml_bf16.q4_0_scale_table()
    _, i_sig, i_exp, void = table
    e = pattern >> 7
    if void[pattern]:
        return {"mi": 0, "rb_off": 0, "void": 1}
    rb_off = RB_BASE[fmt] - int(i_exp[pattern]) - e
    assert -4 <= rb_off <= 3, (fmt, pattern, rb_off)
    return {"mi": int(i_sig[pattern]) - (1 << 23), "rb_off": rb_off, "void": 0}


@lru_cache(maxsize=None)
def q8_0_rom() -> list[dict]:
    rows = []
    for sel in range(4):
        for frac in range(128):
            if sel < Q80_NORMAL_SEL:
                row = _row("q8_0", Q80_TINY_E[sel] << 7 | frac)
                rows.append({**row, "d": 0, "de": 0, "ctz": 0})
                continue
            row = _row("q8_0", 127 << 7 | frac)
            for e in (8, 9, 64, 200, 254):  # the exponent only shifts the row
                assert _row("q8_0", e << 7 | frac) == row, (e, frac)
            d_sig, d_exp, _ = bf16_arith.divide(128 + frac, 0, 127)
            de = int(d_exp) + 23
            assert de in (0, 1) and not row["void"]
            rows.append({**row, "d": int(d_sig) - (1 << 23), "de": de, "ctz": trailing_zeros(int(d_sig))})
    return rows


@lru_cache(maxsize=None)
def q4_0_rom() -> list[dict]:
    rows = []
    for frac in range(128):
        row = _row("q4_0", 127 << 7 | frac)
        for e in (2 + (frac == 0), 3, 64, 200, 254):
            assert _row("q4_0", e << 7 | frac) == row, (e, frac)
        rows.append({"mi": row["mi"], "rb_off": row["rb_off"]})
    return rows


class Q80Bf16BlockUnit(BlockUnit):
    """q8_0 block unit for BF16: amax tree (per beat), ROM read (1), d's FP16 plan (1), rounding (1)."""

    fmt, const_layout, after_tree = "q8_0", Q80_CONST, 3

    def stages(self, m, p):
        en = self.en
        amax = block_max(m, en, self, keep_sign=False)

        # Stage 4: ROM row by (exponent class, fraction).
        m.submodules.rom = rom = Memory(shape=Q80_ROM, depth=512, init=q8_0_rom())
        rd = rom.read_port(domain="sync")
        e = amax[7:15]
        sel = Signal(2)
        m.d.comb += [sel.eq(Mux(e >= 8, Q80_NORMAL_SEL, e - Q80_TINY_E[0])),
                     rd.addr.eq(Cat(amax[:7], sel)), rd.en.eq(en)]
        s4_e = reg(m, en, e, "s4_e", reset=True)
        s4_void = reg(m, en, e < Q80_TINY_E[0], "s4_void", reset=True)  # includes the all-zero block
        # d = dsig * 2**(e + de - 157) goes to FP16 with biased exponent e16 = e + de - 119. The
        # ROM's de is not known yet, so plan both cases now and pick one beside the ROM output:
        # sp is the extra right shift into the FP16 subnormals, clamped where all is gone.
        plans = []
        for de in (0, 1):
            e16 = Signal(signed(RB_BITS), name=f"e16_de{de}")
            m.d.comb += e16.eq(e + de - 119)
            plans.append({
                "sp": reg(m, en, Mux(e16 >= 1, 0, Mux(e16 <= -11, 12, 1 - e16))[:4], f"s4_sp{de}", reset=True, shape=4),
                "base": reg(m, en, Mux(e16 >= 1, e16 - 1, 0)[:5], f"s4_base{de}", reset=True, shape=5),
                "inf": reg(m, en, e16 >= 31, f"s4_inf{de}", reset=True),
            })
        word = rd.data

        # Stage 5: d's FP16 significand, round bit and sticky bit.
        sp = Signal(4)
        m.d.comb += sp.eq(Mux(word.de, plans[1]["sp"], plans[0]["sp"]))
        dsig = Cat(word.d, Const(1, 1))
        top = Signal(12)  # the 11 kept bits at shift 13 + sp, and the round bit
        m.d.comb += top.eq(dsig[12:] >> sp)
        s5_q, s5_round = reg(m, en, top[1:], "s5_q", reset=True), reg(m, en, top[0], "s5_round", reset=True)
        s5_sticky = reg(m, en, word.ctz < sp + 12, "s5_sticky", reset=True)
        s5_base = reg(m, en, Mux(word.de, plans[1]["base"], plans[0]["base"]), "s5_base", reset=True, shape=5)
        s5_inf = reg(m, en, Mux(word.de, plans[1]["inf"], plans[0]["inf"]), "s5_inf", reset=True)
        s5_dzero = reg(m, en, s4_e < 8, "s5_dzero", reset=True)  # d < 2**-119: FP16 zero (and void blocks)
        s5_const = Signal(Q80_CONST)
        with m.If(en):
            m.d.sync += [s5_const.mi.eq(Mux(s4_void | word.void, 0, Cat(word.mi, Const(1, 1)))),
                         s5_const.rb.eq(s4_e + word.rb_off)]

        # Stage 6: round d to nearest even; a carry out of exponent 30 lands on Inf by itself.
        up = s5_round & (s5_sticky | s5_q[0])
        d16 = Signal(16)
        m.d.comb += d16.eq(Mux(s5_dzero, 0, Mux(s5_inf, FP16_INF, (s5_base << 10) + s5_q + up)))
        s6_header = reg(m, en, d16, "s6_header", reset=True, shape=16)
        m.d.comb += [self.header.eq(s6_header), self.const.eq(delay(m, en, s5_const, 1, "const", reset=True, names="{name}_d{k1}", shape=s5_const.shape()))]


class Q40Bf16BlockUnit(BlockUnit):
    """q4_0 block unit for BF16: signed max tree (per beat), ROM read and d's fields (1), d's FP16
    subnormal shift and the constants (1), d's rounding (1)."""

    fmt, const_layout, after_tree = "q4_0", Q40_CONST, 3

    def stages(self, m, p):
        en = self.en
        vmax = block_max(m, en, self, keep_sign=True)
        mag = vmax[:15]

        # Stage 4: ROM row by fraction (every non-void maximum is a normal BF16 number).
        m.submodules.rom = rom = Memory(shape=Q40_ROM, depth=128, init=q4_0_rom())
        rd = rom.read_port(domain="sync")
        m.d.comb += [rd.addr.eq(vmax[:7]), rd.en.eq(en)]
        e = vmax[7:15]
        # |d| = |max| / 8 exactly: FP16 biased exponent e16 = e - 115, significand = BF16's << 3.
        e16 = Signal(signed(RB_BITS))
        m.d.comb += e16.eq(e - 115)
        s4_e = reg(m, en, e, "s4_e", reset=True)
        s4_inf = reg(m, en, e16 >= 31, "s4_inf", reset=True)
        s4_normal = reg(m, en, e16 >= 1, "s4_normal", reset=True)
        s4_sh = reg(m, en, Mux(e16 <= -11, 12, 1 - e16)[:4], "s4_sh", reset=True, shape=4)  # into the subnormals
        s4_sig = reg(m, en, Cat(Const(0, 3), vmax[:7], e != 0), "s4_sig", reset=True, shape=11)
        s4_efield = reg(m, en, e16[:5], "s4_efield", reset=True, shape=5)
        s4_neg = reg(m, en, ~vmax[15], "s4_neg", reset=True)
        s4_zero = reg(m, en, mag == 0, "s4_zero", reset=True)
        s4_void = reg(m, en, (mag != 0) & (mag <= Q40_VOID_MAX), "s4_void", reset=True)
        word = rd.data

        # Stage 5: d's FP16 subnormal significand and its rounding increment (round bit
        # sig[sh - 1], sticky bits sig[:sh - 1], sh in 1..12); the lane constants. The increment
        # is added in a stage of its own: shifter, round decision and adder in one stage are 7
        # LUT levels.
        sh = s4_sh
        sub = Signal(11)
        m.d.comb += sub.eq(s4_sig >> sh)
        rbit = Cat(Const(0, 1), s4_sig).bit_select(sh, 1)
        low = any_below(Cat(Const(0, 1), s4_sig), sh)
        s5_sub = reg(m, en, sub, "s5_sub", reset=True, shape=11)
        s5_up = reg(m, en, rbit & (low | sub[0]), "s5_up", reset=True)
        s5_normal_mag = reg(m, en, Cat(s4_sig[:10], s4_efield), "s5_normal_mag", reset=True, shape=15)
        s5_inf = reg(m, en, s4_inf, "s5_inf", reset=True)
        s5_normal = reg(m, en, s4_normal, "s5_normal", reset=True)
        s5_neg = reg(m, en, s4_neg, "s5_neg", reset=True)
        const = Signal(Q40_CONST)
        with m.If(en):
            m.d.sync += [const.mi.eq(Mux(s4_zero | s4_void, 0, Cat(word.mi, Const(1, 1)))),
                         const.rb.eq(s4_e + word.rb_off), const.neg.eq(s4_neg), const.void.eq(s4_void)]

        # Stage 6: the FP16 d field: normal, Inf, or subnormal rounded to nearest even.
        # An expression rather than If assignments (lib/bits.py leading_zeros says why).
        d_mag = Mux(s5_inf, FP16_INF, Mux(s5_normal, s5_normal_mag, s5_sub + s5_up))[:15]
        header = reg(m, en, Cat(d_mag, s5_neg), "s6_header", reset=True, shape=16)
        m.d.comb += [self.header.eq(header), self.const.eq(delay(m, en, const, 1, "const", reset=True, names="{name}_d{k1}", shape=const.shape()))]
