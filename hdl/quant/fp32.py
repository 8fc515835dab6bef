"""Arithmetic shared by the q8_0 and q4_0 datapaths: ggml's fp32 rounding, done in integers.

ggml computes ``p = fl32(x * id)`` with ``x`` an FP16 element and ``id`` a 24-bit fp32 reciprocal.
``ProductFront`` reproduces that product bit for bit: it normalizes ``x`` (so subnormals need no
special case later), multiplies the 11-bit significand by ``id``'s 24-bit significand in one DSP, and
rounds the 35-bit product to 24 bits with round-to-nearest-even at the position fp32 would use. The
result leaves as a fixed window ``w`` plus a small per-element shift ``r``; each format's tail turns
that into its code.

The rest are pieces both block units need: the reduction to the element of largest magnitude,
FP16 normalization, and the integer long division that fills the reciprocal ROMs. Every register
here resets (``hdl/lib/pipe.py``: chains of reset-less ones would become SRL LUTs).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from kvpath.config import BLOCK_ELEMS, BlockFormat, get_format
from kvpath.hdl.lib.bits import leading_zeros
from kvpath.hdl.lib.pipe import Pipe, reg
from kvpath.hdl.quant.contract import BlockUnitSignature, LaneUnitSignature

FRAC_BITS = 10  # FP16 fraction field
EXP_BITS = 5
SIG_BITS = 24  # fp32 significand, hidden bit included
PRODUCT_BITS = 11 + SIG_BITS
# The rounded significand sits in product bits [10, 35) or [11, 36); the window starts at bit 10 so
# both land in it unshifted, and one carry-out bit is kept.
WINDOW_LSB = 10
WINDOW_BITS = PRODUCT_BITS + 1 - WINDOW_LSB


# --- integer models used to build ROM contents (no floating point involved) -------------------

def round_div(num: int, den: int, bits: int = SIG_BITS) -> tuple[int, int]:
    """``num / den`` rounded to ``bits`` significant bits, ties to even, as ``(sig, exp)``.

    ``sig * 2**exp`` is the rounded value and ``2**(bits-1) <= sig < 2**bits``; this is exactly
    what an IEEE binary32 division returns when the result is a normal number.
    """
    if num <= 0 or den <= 0:
        raise ValueError("round_div takes positive integers")
    exp = num.bit_length() - den.bit_length() - bits
    while True:
        q, r = divmod(num << -exp, den) if exp < 0 else divmod(num, den << exp)
        if q >= 1 << bits:
            exp += 1
        elif q < 1 << (bits - 1):
            exp -= 1
        else:
            break
    if 2 * r > den or (2 * r == den and q & 1):
        q += 1
        if q == 1 << bits:
            q >>= 1
            exp += 1
    return q, exp


def trailing_zeros(value: int) -> int:
    return (value & -value).bit_length() - 1


# --- small combinational helpers ---------------------------------------------------------------

def fp16_significand(m: Module, x, frac_bits: int = FRAC_BITS,
                     exp_bits: int = EXP_BITS) -> tuple[Signal, Signal]:
    """The integer significand (hidden bit included) and the effective exponent (1 for
    subnormals) of ``x``: ``|x| == mx * 2**(ee - 25)`` for every finite FP16 ``x``. BF16 passes
    its field widths (7, 8): then ``|x| == mx * 2**(ee - 134)``.
    """
    exp = x[frac_bits:frac_bits + exp_bits]
    mx = Signal(frac_bits + 1)
    ee = Signal(exp_bits)
    m.d.comb += [
        mx.eq(Cat(x[:frac_bits], exp != 0)),
        ee.eq(Mux(exp == 0, 1, exp)),
    ]
    return mx, ee


# --- the block reduction ----------------------------------------------------------------------

class MaxMagnitudeTree(wiring.Component):
    """The block element of largest magnitude, the first one on ties (numpy argmax order), from the
    block's beats as they come (``beat``, ``take``, ``first`` as in ``BlockUnitSignature``).

    A beat goes through a binary tree whose left subtree always holds the lower indices, so taking
    the right operand only when it is strictly larger keeps the first of equal magnitudes; a
    pipeline register follows every ``levels_per_stage`` levels (one compare carry chain plus a 2:1
    mux per level). A last register joins a block's beats in order, the running value as the left
    operand. ``max`` holds the block's maximum ``latency`` enabled cycles after its last beat. With
    ``keep_sign`` off only the magnitude travels, which is all q8_0 needs.
    """

    def __init__(self, keep_sign: bool, levels_per_stage: int = 2, lanes: int = BLOCK_ELEMS):
        self.keep_sign, self.levels_per_stage, self.lanes = keep_sign, levels_per_stage, lanes
        self.latency = self.stages(lanes, levels_per_stage)
        width = 16 if keep_sign else 15
        super().__init__({
            "en": In(1),
            "beat": In(unsigned(16)).array(lanes),
            "take": In(1),
            "first": In(1),
            "max": Out(width),
        })

    @staticmethod
    def stages(lanes: int, levels_per_stage: int = 2) -> int:
        """The register the beat enters (it comes from the input sanitizer, combinational), the
        tree's registers over it, then the register joining the beats."""
        return 1 + -(-(lanes - 1).bit_length() // levels_per_stage) + 1

    def elaborate(self, platform):
        m = Module()
        width = len(self.max)
        layer = []
        for k, x in enumerate(self.beat):
            layer.append(reg(m, self.en, x[:width], f"leaf{k}", reset=True))
        take = reg(m, self.en, self.take, "leaf_take", reset=True)
        first = reg(m, self.en, self.first, "leaf_first", reset=True)
        level = 0
        while len(layer) > 1:
            nxt = []
            for k in range(0, len(layer), 2):
                left, right = layer[k], layer[k + 1]
                v = Signal(width, name=f"l{level + 1}n{k // 2}")
                m.d.comb += v.eq(Mux(right[:15] > left[:15], right, left))
                nxt.append(v)
            layer = nxt
            level += 1
            if level % self.levels_per_stage == 0 or len(layer) == 1:
                layer = [reg(m, self.en, v, f"s{level}n{k}", reset=True) for k, v in enumerate(layer)]
                take = reg(m, self.en, take, f"s{level}_take", reset=True)
                first = reg(m, self.en, first, f"s{level}_first", reset=True)
        beat_max = layer[0]
        acc = Signal(width, name="block_max")
        join = Mux(beat_max[:15] > acc[:15], beat_max, acc)  # a Mux, not an If: see lib/bits.py
        m.d.sync += acc.eq(Mux(self.en & take, Mux(first, beat_max, join), acc))
        m.d.comb += self.max.eq(acc)
        return m


def block_max(m: Module, en, unit, keep_sign: bool):
    """The largest-magnitude element of the block that block unit ``unit`` is given
    (``MaxMagnitudeTree`` as submodule ``tree``), ``MaxMagnitudeTree.stages(unit.lanes)`` enabled
    cycles after the block's last beat."""
    m.submodules.tree = tree = MaxMagnitudeTree(keep_sign=keep_sign, lanes=unit.lanes)
    m.d.comb += [tree.en.eq(en), tree.take.eq(unit.take), tree.first.eq(unit.first)]
    for k in range(unit.lanes):
        m.d.comb += tree.beat[k].eq(unit.beat[k])
    return tree.max


class BlockUnit(wiring.Component):
    """Base of the per-beat block units that start with the block's largest magnitude
    (``block_max``): the signature follows from class attributes (the format's name, the
    layout of the lane constants) and ``lanes``; the latency is the tree's stages for ``lanes``
    plus ``after_tree``. ``stages(m, p)`` builds the pipeline with ``p``, the unit's registers
    (enabled by ``en``, reset: ``hdl/lib/pipe.py``)."""

    fmt: str
    const_layout: data.Layout
    after_tree: int

    def __init__(self, lanes: int = BLOCK_ELEMS):
        self.lanes = lanes
        self.latency = MaxMagnitudeTree.stages(lanes) + self.after_tree
        super().__init__(BlockUnitSignature(get_format(self.fmt), self.const_layout, lanes))

    def elaborate(self, platform):
        m = Module()
        self.stages(m, Pipe(m, self.en, reset=True))
        return m

    def stages(self, m: Module, p: Pipe) -> None:
        raise NotImplementedError


def normalized_max(m: Module, en, unit, keep_sign: bool):
    """The tree stages of the q8_0 and q4_0 block units and the start of the next: the block maximum,
    its integer significand and effective exponent, and the significand's leading zeros."""
    vmax = block_max(m, en, unit, keep_sign)
    mx, ea = fp16_significand(m, vmax)
    return vmax, mx, ea, leading_zeros(m, mx, 11)


def reciprocal_rom(m: Module, p, s4_mx, s4_lz, s4_ea, layout, rom_entry):
    """Stage 5 of the q8_0 and q4_0 block units: the 1024-word ROM (submodule ``rom``) read with the
    normalized maximum's fraction, and its exponent; returns ``(rom word, s5_ean)``."""
    m.submodules.rom = rom = Memory(shape=layout, depth=1024, init=[rom_entry(f) for f in range(1024)])
    rd = rom.read_port(domain="sync")
    mxn = Signal(11)
    m.d.comb += [mxn.eq(s4_mx << s4_lz), rd.addr.eq(mxn[:10]), rd.en.eq(p.en)]
    ean = Signal(signed(7))
    m.d.comb += ean.eq(s4_ea - s4_lz)
    return rd.data, p.reg(ean, "s5_ean", signed(7))


# --- the per-element product ------------------------------------------------------------------

class ProductFront(wiring.Component):
    """``fl32(x * id)`` for one element, as ggml's fp32 multiply rounds it.

    Inputs (one element per enabled cycle): ``x`` (sanitized FP16), ``mi`` (id's 24-bit
    significand, 0 when id is 0), ``rb`` (the block's shift base) and ``neg`` (id's sign).

    Outputs, ``latency`` enabled cycles later: ``w``, product bits [10, 36) after rounding; the
    rounded product equals ``w * 2**(ee_n + k_block)`` where ``ee_n`` is x's exponent after
    normalization, so the format tail only needs ``r = rb - ee_n`` to align it; ``r`` is given
    modulo 16 with ``far`` set when it is negative or at least ``r_limit`` (the product is then too
    small to reach any code boundary, by the format's own bound); ``sign`` and ``zero`` (x or id
    is zero).

    Rounding: normalized significands give a product in [2**33, 2**35), so fp32 keeps bits
    [10, 34] or, when bit 34 is set, [11, 35]. Half an ulp is added at that position, and a tie
    (all bits below the kept LSB zero after the add) clears the kept LSB: round to nearest even.
    """

    latency = 6

    # Element fields (fraction bits, exponent bits) and the shift base's width per element type.
    # A BF16 significand has 8 bits, so the product has 32 and the window starts at bit 7: the
    # window ``w`` then means the same as for FP16 and every format tail works unchanged. BF16's
    # exponent range needs a wider ``rb``.
    ELEM_FIELDS = {"fp16": (FRAC_BITS, EXP_BITS, 8), "bf16": (7, 8, 10)}

    def __init__(self, r_limit: int, elem: str = "fp16"):
        if not 0 < r_limit <= 16:
            raise ValueError("r_limit must be in 1..16")
        if elem not in self.ELEM_FIELDS:
            raise ValueError(f"ProductFront has no {elem!r} element type")
        self.r_limit = r_limit
        self.frac_bits, self.exp_bits, rb_bits = self.ELEM_FIELDS[elem]
        super().__init__({
            "en": In(1),
            "x": In(16),
            "mi": In(SIG_BITS),
            "rb": In(signed(rb_bits)),
            "neg": In(1),
            "w": Out(WINDOW_BITS),
            "r": Out(4),
            "far": Out(1),
            "sign": Out(1),
            "zero": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        en = self.en

        def stage(**values):
            return {name: reg(m, en, v, name, reset=True) for name, v in values.items()}

        # F1: unpack and count leading zeros of the significand.
        sig_bits, rb_bits = self.frac_bits + 1, len(self.rb)
        mx, ee = fp16_significand(m, self.x, self.frac_bits, self.exp_bits)
        lz = leading_zeros(m, mx, sig_bits)
        rbe = Signal(signed(rb_bits))
        m.d.comb += rbe.eq(self.rb - ee)
        s1 = stage(s1_mx=mx, s1_lz=lz, s1_rbe=rbe, s1_sign=self.x[15] ^ self.neg,
                   s1_zero=(mx == 0) | (self.mi == 0), s1_mi=self.mi)

        # F2: normalize; the exponent shift joins the alignment shift.
        mxn = Signal(sig_bits)
        r_full = Signal(signed(rb_bits))
        m.d.comb += [mxn.eq(s1["s1_mx"] << s1["s1_lz"]), r_full.eq(s1["s1_rbe"] + s1["s1_lz"])]
        s2 = stage(s2_mxn=mxn, s2_r=r_full, s2_sign=s1["s1_sign"], s2_zero=s1["s1_zero"],
                   s2_mi=s1["s1_mi"])

        # F3: multiplier operand registers (a DSP's A/B registers); range check of r.
        far = Signal()
        m.d.comb += far.eq(s2["s2_r"][rb_bits - 1] | (s2["s2_r"] >= self.r_limit))
        s3 = stage(s3_a=s2["s2_mi"], s3_b=s2["s2_mxn"], s3_r=s2["s2_r"][:4], s3_far=far,
                   s3_sign=s2["s2_sign"], s3_zero=s2["s2_zero"])

        # F4: the product; F5: plus half an ulp at the fp32 position.
        product_bits, window_lsb = sig_bits + SIG_BITS, sig_bits - 1
        prod = Signal(product_bits)
        m.d.comb += prod.eq(s3["s3_a"] * s3["s3_b"])
        s4 = stage(s4_p=prod, s4_r=s3["s3_r"], s4_far=s3["s3_far"], s4_sign=s3["s3_sign"],
                   s4_zero=s3["s3_zero"])
        p4 = s4["s4_p"]
        wide = p4[product_bits - 1]
        rounded = Signal(product_bits + 1)
        m.d.comb += rounded.eq(p4 + Cat(Const(0, window_lsb - 1), ~wide, wide))
        s5 = stage(s5_p=rounded, s5_wide=wide, s5_r=s4["s4_r"], s5_far=s4["s4_far"],
                   s5_sign=s4["s4_sign"], s5_zero=s4["s4_zero"])

        # F6: ties to even, and drop the bit below the kept LSB when the wide position applies.
        p, wide6 = s5["s5_p"], s5["s5_wide"]
        tie = Signal()
        w = Signal(WINDOW_BITS)
        # One expression for w rather than If assignments or a partial override, either of which
        # becomes an always block (lib/bits.py leading_zeros says why that matters).
        keep0 = ~wide6 & ~tie
        keep1 = ~(wide6 & tie)
        m.d.comb += [
            tie.eq(Mux(wide6, p[:window_lsb + 1] == 0, p[:window_lsb] == 0)),
            w.eq(Cat(p[window_lsb] & keep0, p[window_lsb + 1] & keep1, p[window_lsb + 2:])),
        ]
        s6 = stage(s6_w=w, s6_r=s5["s5_r"], s6_far=s5["s5_far"], s6_sign=s5["s5_sign"],
                   s6_zero=s5["s5_zero"])

        m.d.comb += [
            self.w.eq(s6["s6_w"]),
            self.r.eq(s6["s6_r"]),
            self.far.eq(s6["s6_far"]),
            self.sign.eq(s6["s6_sign"]),
            self.zero.eq(s6["s6_zero"]),
        ]
        return m


class FrontLaneUnit(wiring.Component):
    """Base of the q8_0 and q4_0 lane units: a ``ProductFront`` (submodule ``front``), then the
    format's two-stage ``tail(m, front)`` from the product window to the code. ``elem="bf16"`` takes
    BF16 elements with the block unit's BF16 constants; the window means the same for both."""

    latency = ProductFront.latency + 2
    fmt: BlockFormat
    r_limit: int

    def __init__(self, elem: str, const_layout):
        self.elem = elem
        super().__init__(LaneUnitSignature(self.fmt, const_layout))

    def neg(self):
        """The sign of the block's reciprocal (0 where it is always positive)."""
        return 0

    def elaborate(self, platform):
        m = Module()
        m.submodules.front = front = ProductFront(self.r_limit, self.elem)
        m.d.comb += [
            front.en.eq(self.en),
            front.x.eq(self.x),
            front.mi.eq(self.const.mi),
            front.rb.eq(self.const.rb),
            front.neg.eq(self.neg()),
        ]
        self.tail(m, front)
        return m

    def tail(self, m: Module, front: ProductFront) -> None:
        raise NotImplementedError


def front_units(lane: type, block_fp16: type, const_fp16, block_bf16: type, const_bf16) -> dict:
    """``UnitTable.units`` of a format whose one lane unit class (a ``FrontLaneUnit``) serves both
    element types with the block unit's constants."""
    return {
        "fp16": (const_fp16, block_fp16, lambda: lane("fp16", const_fp16)),
        "bf16": (const_bf16, block_bf16, lambda: lane("bf16", const_bf16)),
    }
