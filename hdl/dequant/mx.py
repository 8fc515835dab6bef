"""MX engine of the read path (mxfp4, mxint8, mxfp8_e4m3): E8M0-scaled codes to FP16 or BF16.

Plugs into the dequantizer's frame (``frame.py``, contract in ``contract.py``): the frame registers
each block's scale byte ``e`` and the beat's codes; this engine turns them into elements.

The element value is ``sig * 2**(E - 127 + off)`` with a small integer ``sig`` (at most 8 bits), so
the output needs no multiplier: its exponent is an add, and only results in the output type's
subnormal range round (RNE), by a right shift of ``sig``. Per lane:

* decode: ``sig``, its leading-one index ``bl``, ``ex = E - 127 + off``; the output's biased
  exponent ``b + bias`` with ``b = ex + bl``, and the right shift ``max(bl, 1 - bias - ex)``
  of ``sig << (frac + 1)`` that leaves the output significand plus one round bit;
* shift, with the sticky bit;
* round to nearest even, add the exponent field (a carry moves into it), saturate, encode.

``kvpath.golden.mx.dequantize_blocks`` is the specification. A NaN scale byte (0xFF) makes its
block read as +0 and an E4M3 NaN code its element (``code_nan`` tells the frame, which counts both).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from kvpath.config import BLOCK_ELEMS, check_elem, get_format
from kvpath.elements import element
from kvpath.golden.mx import E4M3_NAN, FP4_HALF_UNITS, SCALE_BIAS, SCALE_NAN
from kvpath.hdl.lib.bits import lookup, msb_index
from kvpath.hdl.lib.pipe import reg

EXP = signed(12)  # every exponent sum below stays well inside +/-2**11
SIG_BITS = 8  # mxint8's |q| <= 128
# Element value relative to the scale: off = the element's own exponent of its integer sig.
OFFSET = {"mxfp4": -1, "mxint8": -6}


class MXEngine(wiring.Component):
    """``lanes`` elements of a beat: ``value[i]`` = code ``i`` times ``2**(e[block(i)] - 127)``."""

    latency = 3  # decode, shift, round/encode (the last is the output register)
    saturates = True

    def __init__(self, fmt: str, lanes: int, elem: str = "fp16"):
        self.format = get_format(fmt)
        if self.format.family != "mx":
            raise ValueError(f"MXEngine handles the MX formats, not {fmt!r}")
        self.et = element(check_elem(elem))
        self.lanes = lanes
        self.blocks = max(1, lanes // BLOCK_ELEMS)
        members = {
            "en": In(1),
            # Arrays of ports, not one wide port: every lane's logic then reads a net of its own, which
            # keeps event-driven simulators (Icarus) from re-running all lanes on each lane's change.
            "e": In(unsigned(8)).array(self.blocks),
            "codes": In(unsigned(self.format.code_bits)).array(lanes),
            "value": Out(unsigned(16)).array(lanes),
            "sat": Out(1).array(lanes),
        }
        if self.format.name == "mxfp8_e4m3":
            members["code_nan"] = Out(1).array(lanes)
        super().__init__(members)

    @staticmethod
    def field_rule(m: Module, bits):
        """E8M0 is read as it is; 0xFF is NaN."""
        return bits, bits == SCALE_NAN

    def _decode(self, m: Module, code):
        """``(sign, sig, bl, off, nan)`` of one element code; ``bl`` = leading-one index of ``sig``."""
        name = self.format.name
        if name == "mxfp4":
            idx = code[:3]
            sig = lookup(idx, list(FP4_HALF_UNITS), 4)
            bl = lookup(idx, [max(v.bit_length() - 1, 0) for v in FP4_HALF_UNITS], 2)
            # ggml reads code 8 (-0) as +0.
            return code[3] & (idx != 0), sig, bl, OFFSET[name], Const(0, 1)
        if name == "mxint8":
            sign = code[7]
            sig = Signal(SIG_BITS)
            m.d.comb += sig.eq(Mux(sign, -code.as_signed(), code)[:SIG_BITS])
            bl, _ = msb_index(m, sig)
            return sign, sig, bl, OFFSET[name], Const(0, 1)
        e, f = code[3:7], code[:3]
        sig = Cat(f, e != 0)
        lead, _ = msb_index(m, f)
        bl = Mux(e != 0, 3, lead)
        off = Mux(e == 0, 1, e) - 10
        return code[7], sig, bl, off, code[:7] == E4M3_NAN

    def elaborate(self, platform):
        m = Module()
        en, et = self.en, self.et
        width = et.frac_bits + 1 + SIG_BITS  # sig << (frac + 1)
        exp_cap = (1 << (15 - et.frac_bits)) - 1  # an exponent field this large always saturates
        scale_nan = [self.e[b] == SCALE_NAN for b in range(self.blocks)]
        elem_nan = []
        for i in range(self.lanes):
            blk = i // BLOCK_ELEMS
            sign, sig, bl, off, nan = self._decode(m, self.codes[i])
            elem_nan.append(nan)
            ex = Signal(EXP, name=f"ex{i}")
            m.d.comb += ex.eq(self.e[blk] - SCALE_BIAS + off)
            field = Signal(EXP, name=f"field{i}")  # the output's exponent field before saturation
            m.d.comb += field.eq(ex + bl + et.bias - 1)
            amount = Signal(EXP, name=f"amount{i}")
            m.d.comb += amount.eq(Mux(bl > 1 - et.bias - ex, bl, 1 - et.bias - ex))
            cleared = scale_nan[blk] | nan  # reads as +0
            # Decode stage.
            d_sig = reg(m, en, sig, name=f"d_sig{i}", reset=False)
            d_amount = reg(m, en, Mux(amount > width, width, amount)[:width.bit_length()], name=f"d_amt{i}", reset=False)
            d_field = reg(m, en, Mux(field < 0, 0, Mux(field > exp_cap, exp_cap, field))[:15 - et.frac_bits],
                          name=f"d_field{i}", reset=False)
            d_sign = reg(m, en, sign & ~cleared, name=f"d_sign{i}", reset=False)
            d_zero = reg(m, en, cleared | (sig == 0), name=f"d_zero{i}", reset=False)  # a zero sig keeps its sign
            # Shift stage.
            operand = Cat(Const(0, et.frac_bits + 1), d_sig)
            kept = Signal(width, name=f"kept{i}")
            m.d.comb += kept.eq(operand >> d_amount)
            dropped = operand & ~(Const((1 << width) - 1, width) << d_amount)[:width]
            s_kept = reg(m, en, kept, name=f"s_kept{i}", reset=False)
            s_sticky = reg(m, en, dropped.any(), name=f"s_sticky{i}", reset=False)
            s_field = reg(m, en, d_field, name=f"s_field{i}", reset=False)
            s_sign = reg(m, en, d_sign, name=f"s_sign{i}", reset=False)
            s_zero = reg(m, en, d_zero, name=f"s_zero{i}", reset=False)
            # Round and encode: the significand's hidden bit adds the last one to the field.
            half, rbit = s_kept[1:], s_kept[0]
            n = half + (rbit & (s_sticky | half[0]))
            enc = Signal(17, name=f"enc{i}")
            m.d.comb += enc.eq((s_field << et.frac_bits) + n)
            sat = enc > et.max_finite
            mag = Mux(s_zero, 0, Mux(sat, et.max_finite, enc[:15]))
            m.d.comb += [self.value[i].eq(reg(m, en, Cat(mag, s_sign), name=f"value{i}", reset=False)),
                         self.sat[i].eq(reg(m, en, sat & ~s_zero, name=f"sat{i}", reset=False))]
        if hasattr(self, "code_nan"):
            m.d.comb += [self.code_nan[i].eq(nan) for i, nan in enumerate(elem_nan)]
        return m
