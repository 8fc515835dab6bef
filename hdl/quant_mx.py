"""MX datapaths (mxfp4, mxint8, mxfp8_e4m3) for the quantizer: no multiplier, no divider.

The shared scale is a power of two, so quantizing an element is a float-to-float conversion with an
exponent offset: a barrel shift of the element's significand by an amount computed from its exponent
and the block's scale byte, then rounding. ``kvpath.golden.mx`` is the specification; the stage
comments below name the golden model's quantities.

Block unit (latency ``MaxMagnitudeTree.latency + 1``): amax by comparator tree, then its binade
``floor(log2 amax)`` (the exponent field, or a leading-one index for subnormal maxima) and the
scale byte ``E = clamp(floor(log2 amax) - emax + 127, 0, 254)``, 0 for an all-zero block.

Lane unit (latency 3): (1) decode and compute the shift; (2) shift, keeping a round/sticky pair;
(3) round onto the element grid, saturate, encode.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring

from kvpath.config import check_elem, get_format
from kvpath.golden.mx import E4M3_MAX, EMAX, FP4_THRESHOLDS_Q, SCALE_BIAS
from kvpath.golden.mx_elem import elem_type

from .dequant_pipe import msb_index, reg
from .quant_fp32 import MaxMagnitudeTree
from .quant_units import BlockUnitSignature, FormatDatapath, LaneUnitSignature

CONST_LAYOUT = data.StructLayout({"scale": unsigned(8)})  # the block's E8M0 byte E (X = E - 127)
SHIFT = signed(12)  # holds every exponent difference of an 8-bit E and an 8-bit element exponent
# Left-shift headroom of the lane's shifter: the element grid's step can be at most this many
# binades below an element's LSB (the block's amax bounds t = |x| / 2**X).
GUARD = {"mxfp4": 4, "mxint8": 7, "mxfp8_e4m3": 4}


class MXBlockUnit(wiring.Component):
    def __init__(self, fmt: str, elem: str):
        self.fmt = get_format(fmt)
        self.et = elem_type(elem)
        self.emax = EMAX[self.fmt.name]
        self.tree = MaxMagnitudeTree(keep_sign=False)
        self.latency = self.tree.latency + 1
        super().__init__(BlockUnitSignature(self.fmt, CONST_LAYOUT))

    def elaborate(self, platform):
        m = Module()
        et, en = self.et, self.en
        m.submodules.tree = tree = self.tree
        m.d.comb += tree.en.eq(en)
        for k in range(len(self.block)):
            m.d.comb += tree.block[k].eq(self.block[k])
        amax = tree.max
        e, f = amax[et.frac:15], amax[:et.frac]
        lead, _ = msb_index(m, f, name="amax_lead")
        # floor(log2 amax) + bias: the exponent field, or (leading one + 1 - frac) for a subnormal.
        binade = Signal(SHIFT)
        m.d.comb += binade.eq(Mux(e != 0, e, lead + 1 - et.frac))
        scale = Signal(SHIFT)
        m.d.comb += scale.eq(binade - et.bias - self.emax + SCALE_BIAS)
        clamped = Mux(scale < 0, 0, Mux(scale > 254, 254, scale))
        byte = reg(m, en, Mux(amax == 0, 0, clamped[:8]), name="scale_byte")
        m.d.comb += [self.header.eq(byte), self.const.scale.eq(byte)]
        return m


class MXLaneUnit(wiring.Component):
    latency = 3

    def __init__(self, fmt: str, elem: str):
        self.fmt = get_format(fmt)
        self.et = elem_type(elem)
        super().__init__(LaneUnitSignature(self.fmt, CONST_LAYOUT))

    def elaborate(self, platform):
        m = Module()
        et, en, name = self.et, self.en, self.fmt.name
        x, scale = self.x, self.const.scale
        guard = GUARD[name]
        sign = x[15]
        e, f = x[et.frac:15], x[:et.frac]
        mant = Cat(f, e != 0)  # golden m
        ee = Mux(e == 0, 1, e)  # golden ee
        width = et.frac + 1 + guard  # of the shifted operand m << guard

        # Stage 1: the right shift of (m << guard) that leaves the kept bits (plus a round bit for
        # the RNE formats) above the point. t = m * 2**k with k = ee - E + (127 - bias - frac).
        kbase = SCALE_BIAS - et.bias - et.frac
        t_shift = Signal(SHIFT)
        exp_field = Signal(range(17))  # mxfp8_e4m3: max(b + 6, 0), clamped at 16 (always saturates)
        if name == "mxfp4":
            # floor(4t) and its sticky bits: shift by -(k + 2).
            m.d.comb += t_shift.eq(scale - ee - kbase - 2 + guard)
        elif name == "mxint8":
            # floor(128t): 64t with one round bit.
            m.d.comb += t_shift.eq(scale - ee - kbase - 6 - 1 + guard)
        else:
            # E4M3: t's binade b = ee - lz - E + (127 - bias); quantum exponent max(b, -6) - 3.
            lead, _ = msb_index(m, mant, name="x_lead")
            lz = et.frac - lead
            b = Signal(SHIFT)
            m.d.comb += b.eq(ee - lz - scale + (SCALE_BIAS - et.bias))
            extra = Mux(b < -6, -6 - b, 0)
            # N = rne(m * 2**(lz - r)), r = frac - 3 + extra; one round bit below N.
            m.d.comb += t_shift.eq(et.frac - 3 + extra - lz - 1 + guard)
            e6 = b + 6
            m.d.comb += exp_field.eq(Mux(e6 < 0, 0, Mux(e6 > 16, 16, e6)))
        amount = Mux(t_shift < 0, 0, Mux(t_shift > width, width, t_shift))[:width.bit_length()]
        s1_amount = reg(m, en, amount, name="s1_amount")
        s1_mant = reg(m, en, mant, name="s1_mant")
        s1_sign = reg(m, en, sign, name="s1_sign")
        s1_exp = reg(m, en, exp_field, name="s1_exp")

        # Stage 2: shift; the bits shifted out are the sticky bit.
        operand = Cat(Const(0, guard), s1_mant)
        kept = Signal(width)
        m.d.comb += kept.eq(operand >> s1_amount)
        dropped = operand & ~(Const((1 << width) - 1, width) << s1_amount)[:width]
        s2_kept = reg(m, en, kept, name="s2_kept")
        s2_sticky = reg(m, en, dropped.any(), name="s2_sticky")
        s2_sign = reg(m, en, s1_sign, name="s2_sign")
        s2_exp = reg(m, en, s1_exp, name="s2_exp")
        s2_zero = reg(m, en, s1_mant == 0, name="s2_zero")

        # Stage 3: round onto the grid, saturate, encode.
        code = Signal(self.fmt.code_bits)
        if name == "mxfp4":
            v = Cat(s2_sticky, s2_kept)  # 2 floor(4t) + sticky: 4t > thr <=> v > 2 thr
            mag = sum((v > 2 * thr for thr in FP4_THRESHOLDS_Q), Const(0, 3))[:3]
            m.d.comb += code.eq(Cat(mag, s2_sign & (mag != 0)))
        else:
            half, rbit = s2_kept[1:], s2_kept[0]
            rounded = Signal(width)
            m.d.comb += rounded.eq(half + (rbit & (s2_sticky | half[0])))
            if name == "mxint8":
                limit = Mux(s2_sign, 128, 127)
                q = Mux(rounded > limit, limit, rounded)[:8]
                m.d.comb += code.eq(Mux(s2_sign, -q, q)[:8])
            else:
                pattern = Signal(9)
                m.d.comb += pattern.eq((s2_exp << 3) + rounded[:5])
                mag = Mux(s2_zero, 0, Mux(pattern > E4M3_MAX, E4M3_MAX, pattern))[:7]
                m.d.comb += code.eq(Cat(mag, s2_sign))
        m.d.comb += self.code.eq(reg(m, en, code, name="code"))
        return m


class MXDatapath(FormatDatapath):
    const_layout = CONST_LAYOUT

    def __init__(self, fmt: str, elem: str = "fp16"):
        self.fmt = get_format(fmt)
        if self.fmt.family != "mx":
            raise ValueError(f"MXDatapath handles the MX formats, not {fmt!r}")
        self.elem = check_elem(elem)

    def block_unit(self):
        return MXBlockUnit(self.fmt.name, self.elem)

    def lane_unit(self):
        return MXLaneUnit(self.fmt.name, self.elem)
