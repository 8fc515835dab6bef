"""MX datapaths (mxfp4, mxint8, mxfp8_e4m3) for the quantizer: no multiplier, no divider.

The shared scale is a power of two, so quantizing an element is a float-to-float conversion with an
exponent offset: a barrel shift of the element's significand by an amount computed from its exponent
and the block's scale byte, then rounding. ``kvpath.golden.mx`` is the specification; the stage
comments below name the golden model's quantities.

Block unit (latency ``MaxMagnitudeTree.stages(lanes) + 2``): amax by comparator tree, beat by beat
as the block comes in, then (1) its
binade ``floor(log2 amax)`` (the exponent field, or a leading-one index for subnormal maxima) and
(2) the scale byte ``E = clamp(floor(log2 amax) - emax + 127, 0, 254)``, 0 for an all-zero block.

Lane unit (latency 5): (1) decode the element and start the shift amount's sums; (2) finish and
clamp the shift amount; (3) shift, keeping a round/sticky pair; (4) the rounding's first half (the
rounded magnitude, or mxfp4's threshold comparisons); (5) saturate and encode. Each stage stays
within 6 LUT levels, the KV260 target; latency costs only a few flip-flops per lane.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring

from kvpath.config import BLOCK_ELEMS, check_elem, get_format
from kvpath.golden.mx import E4M3_MAX, EMAX, FP4_THRESHOLDS_Q, SCALE_BIAS
from kvpath.elements import element as elem_type

from kvpath.hdl.lib.bits import any_below, msb_index
from kvpath.hdl.lib.pipe import reg
from kvpath.hdl.quant.fp32 import MaxMagnitudeTree, block_max
from kvpath.hdl.quant.contract import BlockUnitSignature, FormatDatapath, LaneUnitSignature

CONST_LAYOUT = data.StructLayout({"scale": unsigned(8)})  # the block's E8M0 byte E (X = E - 127)
SHIFT = signed(12)  # holds every exponent difference of an 8-bit E and an 8-bit element exponent
# Left-shift headroom of the lane's shifter: the element grid's step can be at most this many
# binades below an element's LSB (the block's amax bounds t = |x| / 2**X).
GUARD = {"mxfp4": 4, "mxint8": 7, "mxfp8_e4m3": 4}


class MXBlockUnit(wiring.Component):
    def __init__(self, fmt: str, elem: str, lanes: int = BLOCK_ELEMS):
        self.fmt = get_format(fmt)
        self.et = elem_type(elem)
        self.emax = EMAX[self.fmt.name]
        self.lanes = lanes
        self.latency = MaxMagnitudeTree.stages(lanes) + 2
        super().__init__(BlockUnitSignature(self.fmt, CONST_LAYOUT, lanes))

    def elaborate(self, platform):
        m = Module()
        et, en = self.et, self.en
        amax = block_max(m, en, self, keep_sign=False)
        e, f = amax[et.frac_bits:15], amax[:et.frac_bits]
        lead, _ = msb_index(m, f, name="amax_lead")
        # Stage 1: floor(log2 amax) + bias: the exponent field, or (leading one + 1 - frac) for a
        # subnormal.
        binade = reg(m, en, Mux(e != 0, e, lead + 1 - et.frac_bits), name="binade", reset=True)
        zero = reg(m, en, amax == 0, name="amax_zero", reset=True)
        # Stage 2: the scale byte.
        scale = Signal(SHIFT)
        m.d.comb += scale.eq(binade - et.bias - self.emax + SCALE_BIAS)
        clamped = Mux(scale < 0, 0, Mux(scale > 254, 254, scale))
        byte = reg(m, en, Mux(zero, 0, clamped[:8]), name="scale_byte", reset=True)
        m.d.comb += [self.header.eq(byte), self.const.scale.eq(byte)]
        return m


class MXLaneUnit(wiring.Component):
    latency = 5

    def __init__(self, fmt: str, elem: str):
        self.fmt = get_format(fmt)
        self.et = elem_type(elem)
        super().__init__(LaneUnitSignature(self.fmt, CONST_LAYOUT))

    def elaborate(self, platform):
        m = Module()
        et, en, name = self.et, self.en, self.fmt.name
        x, scale = self.x, self.const.scale
        guard = GUARD[name]
        e, f = x[et.frac_bits:15], x[:et.frac_bits]
        mant = Cat(f, e != 0)  # golden m
        ee = Mux(e == 0, 1, e)  # golden ee
        width = et.frac_bits + 1 + guard  # of the shifted operand m << guard

        # Stages 1-2: the right shift of (m << guard) that leaves the kept bits (plus a round bit
        # for the RNE formats) above the point, clamped to [0, width].
        # t = m * 2**k with k = ee - E + (127 - bias - frac).
        kbase = SCALE_BIAS - et.bias - et.frac_bits
        s1_scale_ee = reg(m, en, scale - ee, name="s1_scale_ee", reset=True)  # signed
        s1_mant = reg(m, en, mant, name="s1_mant", reset=True)
        s1_sign = reg(m, en, x[15], name="s1_sign", reset=True)
        t_shift = Signal(SHIFT)
        exp_field = Signal(range(17))  # mxfp8_e4m3: max(b + 6, 0), clamped at 16 (always saturates)
        if name == "mxfp4":
            # floor(4t) and its sticky bits: shift by -(k + 2).
            m.d.comb += t_shift.eq(s1_scale_ee - kbase - 2 + guard)
        elif name == "mxint8":
            # floor(128t): 64t with one round bit.
            m.d.comb += t_shift.eq(s1_scale_ee - kbase - 6 - 1 + guard)
        else:
            # E4M3: t's binade b = ee - lz - E + (127 - bias); quantum exponent max(b, -6) - 3.
            # N = rne(m * 2**(lz - r)), r = frac - 3 + max(0, -6 - b), one round bit below N: a
            # right shift by frac - 4 + guard - lz, plus -6 - b when b < -6, where lz cancels and
            # the shift is frac - 10 + guard - ee + E - (127 - bias).
            lead, _ = msb_index(m, mant, name="x_lead")
            s1_lz = reg(m, en, et.frac_bits - lead, name="s1_lz", reset=True)
            s1_b = reg(m, en, ee - (et.frac_bits - lead) - scale + (SCALE_BIAS - et.bias), name="s1_b", reset=True)
            normal_shift = et.frac_bits - 4 + guard - s1_lz
            tiny_shift = s1_scale_ee + (et.frac_bits - 10 + guard - (SCALE_BIAS - et.bias))
            m.d.comb += t_shift.eq(Mux(s1_b < -6, tiny_shift, normal_shift))
            e6 = s1_b + 6
            m.d.comb += exp_field.eq(Mux(e6 < 0, 0, Mux(e6 > 16, 16, e6)))
        amount = Mux(t_shift < 0, 0, Mux(t_shift > width, width, t_shift))[:width.bit_length()]
        s2_amount = reg(m, en, amount, name="s2_amount", reset=True)
        s2_mant = reg(m, en, s1_mant, name="s2_mant", reset=True)
        s2_sign = reg(m, en, s1_sign, name="s2_sign", reset=True)
        s2_exp = reg(m, en, exp_field, name="s2_exp", reset=True)

        # Stage 3: shift; the bits shifted out are the sticky bit.
        operand = Cat(Const(0, guard), s2_mant)
        kept = Signal(width)
        m.d.comb += kept.eq(operand >> s2_amount)
        s3_kept = reg(m, en, kept, name="s3_kept", reset=True)
        s3_sticky = reg(m, en, any_below(operand, s2_amount), name="s3_sticky", reset=True)
        s3_sign = reg(m, en, s2_sign, name="s3_sign", reset=True)
        s3_exp = reg(m, en, s2_exp, name="s3_exp", reset=True)
        s3_zero = reg(m, en, s2_mant == 0, name="s3_zero", reset=True)

        # Stages 4-5: round onto the grid, saturate, encode.
        code = Signal(self.fmt.code_bits)
        s4_sign = reg(m, en, s3_sign, name="s4_sign", reset=True)
        if name == "mxfp4":
            # 2 floor(4t) + sticky: 4t > thr <=> v > 2 thr. The comparisons are monotone in v, so
            # the magnitude is the number that hold.
            v = Cat(s3_sticky, s3_kept)
            s4_above = reg(m, en, Cat(*[v > 2 * thr for thr in FP4_THRESHOLDS_Q]), name="s4_above", reset=True)
            mag = sum((s4_above[i] for i in range(len(FP4_THRESHOLDS_Q))), Const(0, 3))[:3]
            m.d.comb += code.eq(Cat(mag, s4_sign & (mag != 0)))
        else:
            half, rbit = s3_kept[1:], s3_kept[0]
            s4_rounded = reg(m, en, (half + (rbit & (s3_sticky | half[0])))[:width], name="s4_rounded", reset=True)
            if name == "mxint8":
                limit = Mux(s4_sign, 128, 127)
                q = Mux(s4_rounded > limit, limit, s4_rounded)[:8]
                m.d.comb += code.eq(Mux(s4_sign, -q, q)[:8])
            else:
                s4_exp = reg(m, en, s3_exp, name="s4_exp", reset=True)
                s4_zero = reg(m, en, s3_zero, name="s4_zero", reset=True)
                pattern = Signal(9)
                m.d.comb += pattern.eq((s4_exp << 3) + s4_rounded[:5])
                mag = Mux(s4_zero, 0, Mux(pattern > E4M3_MAX, E4M3_MAX, pattern))[:7]
                m.d.comb += code.eq(Cat(mag, s4_sign))
        m.d.comb += self.code.eq(reg(m, en, code, name="code", reset=True))
        return m


class MXDatapath(FormatDatapath):
    const_layout = CONST_LAYOUT

    def __init__(self, fmt: str, elem: str = "fp16"):
        self.fmt = get_format(fmt)
        if self.fmt.family != "mx":
            raise ValueError(f"MXDatapath handles the MX formats, not {fmt!r}")
        self.elem = check_elem(elem)

    def block_unit(self, lanes: int = BLOCK_ELEMS):
        return MXBlockUnit(self.fmt.name, self.elem, lanes)

    def lane_unit(self):
        return MXLaneUnit(self.fmt.name, self.elem)
