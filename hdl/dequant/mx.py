"""The read path for the MX formats: E8M0-scaled blocks in, FP16 or BF16 elements out.

Same ports, stream layout and flow control as ``dequantizer.Dequantizer`` (see there): a holding
register hands an input beat out as output beats, every datapath register loads on
``en = ~o.valid | o.ready``, valid bits carry bubbles, the output payload is a register.

The element value is ``sig * 2**(E - 127 + off)`` with a small integer ``sig`` (at most 8 bits), so
the output needs no multiplier: its exponent is an add, and only results in the output type's
subnormal range round (RNE), by a right shift of ``sig``. Per lane, after stage 1 picks the code:

* decode: ``sig``, its leading-one index ``bl``, ``ex = E - 127 + off``; the output's biased
  exponent ``b + bias`` with ``b = ex + bl``, and the right shift ``max(bl, 1 - bias - ex)``
  of ``sig << (frac + 1)`` that leaves the output significand plus one round bit;
* shift, with the sticky bit;
* round to nearest even, add the exponent field (a carry moves into it), saturate, encode.

``kvpath.golden.mx.dequantize_blocks`` is the specification. Counters (32 bits, wrapping):
``saturated_count`` counts outputs saturated to the type's largest finite value;
``nonfinite_count`` counts NaN scale bytes (0xFF; the block reads as +0) and E4M3 NaN element codes
(the element reads as +0), both when the beat leaves stage 1.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from kvpath.config import BLOCK_ELEMS, DEQUANT_LANES, ELEM_BITS, check_elem, get_format
from kvpath.golden.mx import E4M3_NAN, FP4_HALF_UNITS, SCALE_BIAS, SCALE_NAN
from kvpath.elements import element as elem_type

from kvpath.hdl.lib.counter import EventCounter
from kvpath.hdl.lib.pipe import msb_index, reg
from kvpath.packing import code_offset

EXP = signed(12)  # every exponent sum below stays well inside +/-2**11
SIG_BITS = 8  # mxint8's |q| <= 128
# Element value relative to the scale: off = the element's own exponent of its integer sig.
OFFSET = {"mxfp4": -1, "mxint8": -6}


class MXDequantizer(wiring.Component):
    """Dequantizer for an MX ``fmt`` emitting ``lanes`` values of type ``elem`` per beat."""

    ENGINE_STAGES = 3  # decode, shift, round/encode (the last is the output register)

    def __init__(self, fmt: str, lanes: int, elem: str = "fp16"):
        self.format = get_format(fmt)
        if self.format.family != "mx":
            raise ValueError(f"MXDequantizer handles the MX formats, not {fmt!r}")
        if lanes not in DEQUANT_LANES:
            raise ValueError(f"dequantizer lanes must be one of {DEQUANT_LANES}, got {lanes}")
        self.elem = check_elem(elem)
        self.et = elem_type(elem)
        self.lanes = lanes
        self.blocks_per_beat = max(1, lanes // BLOCK_ELEMS)
        self.beats_per_block = max(1, BLOCK_ELEMS // lanes)
        self.latency = 2 + self.ENGINE_STAGES  # holding register, stage 1, engine
        super().__init__({
            "i": In(stream.Signature(unsigned(8 * self.format.block_bytes * self.blocks_per_beat))),
            "o": Out(stream.Signature(data.ArrayLayout(unsigned(ELEM_BITS), lanes))),
            "saturated_count": Out(32),
            "nonfinite_count": Out(32),
        })

    def _block_codes(self, block) -> list:
        """The block's 32 stored codes, element order."""
        f = self.format
        return [block[code_offset(f, e):][:f.code_bits] for e in range(BLOCK_ELEMS)]

    def _decode(self, m: Module, code):
        """``(sign, sig, bl, off, nan)`` of one element code; ``bl`` = leading-one index of ``sig``."""
        name = self.format.name
        if name == "mxfp4":
            idx = code[:3]
            sig = Array(Const(v, 4) for v in FP4_HALF_UNITS)[idx]
            bl = Array(Const(max(v.bit_length() - 1, 0), 2) for v in FP4_HALF_UNITS)[idx]
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
        f, et = self.format, self.et
        lanes = self.lanes
        m.submodules.sat_counter = sat_ctr = EventCounter(lanes)
        nan_elems = lanes if f.name == "mxfp8_e4m3" else 0
        m.submodules.nonfinite_counter = nf_ctr = EventCounter(self.blocks_per_beat + nan_elems)
        m.d.comb += [self.saturated_count.eq(sat_ctr.count), self.nonfinite_count.eq(nf_ctr.count)]

        en = Signal()
        m.d.comb += en.eq(~self.o.valid | self.o.ready)

        # Holding register: one input beat, handed out as beats_per_block output beats.
        hold = Signal.like(self.i.payload, reset_less=True)
        held = Signal()
        beat = Signal(range(self.beats_per_block))
        last = beat == self.beats_per_block - 1
        take = held & en
        m.d.comb += self.i.ready.eq(~held | (en & last))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [hold.eq(self.i.payload), held.eq(1), beat.eq(0)]
        with m.Elif(take):
            with m.If(last):
                m.d.sync += held.eq(0)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        # Stage 1: each block's scale byte, this beat's codes.
        block_bits = 8 * f.block_bytes
        scales, codes = [], []
        for b in range(self.blocks_per_beat):
            block = hold[block_bits * b:block_bits * (b + 1)]
            scales.append(reg(m, en, block[:8], name=f"scale{b}"))
            bc = self._block_codes(block)
            if lanes >= BLOCK_ELEMS:
                codes += [reg(m, en, bc[e], name=f"c{b}_{e}") for e in range(BLOCK_ELEMS)]
            else:
                for e in range(lanes):
                    pick = Array(bc[k * lanes + e] for k in range(self.beats_per_block))[beat]
                    codes.append(reg(m, en, pick, name=f"c{e}"))
        first = Signal()  # stage 1 holds the first beat of a block: its scale counts once
        valid = Signal()
        with m.If(en):
            m.d.sync += [valid.eq(held), first.eq(take & (beat == 0))]
        scale_nan = [s == SCALE_NAN for s in scales]

        # Engine.
        width = et.frac_bits + 1 + SIG_BITS  # sig << (frac + 1)
        exp_cap = (1 << (15 - et.frac_bits)) - 1  # an exponent field this large always saturates
        values, sats, elem_nan = [], [], []
        for i in range(lanes):
            blk = i // BLOCK_ELEMS
            sign, sig, bl, off, nan = self._decode(m, codes[i])
            elem_nan.append(nan)
            ex = Signal(EXP, name=f"ex{i}")
            m.d.comb += ex.eq(scales[blk] - SCALE_BIAS + off)
            field = Signal(EXP, name=f"field{i}")  # the output's exponent field before saturation
            m.d.comb += field.eq(ex + bl + et.bias - 1)
            amount = Signal(EXP, name=f"amount{i}")
            m.d.comb += amount.eq(Mux(bl > 1 - et.bias - ex, bl, 1 - et.bias - ex))
            cleared = scale_nan[blk] | nan  # reads as +0
            # Decode stage.
            d_sig = reg(m, en, sig, name=f"d_sig{i}")
            d_amount = reg(m, en, Mux(amount > width, width, amount)[:width.bit_length()], name=f"d_amt{i}")
            d_field = reg(m, en, Mux(field < 0, 0, Mux(field > exp_cap, exp_cap, field))[:15 - et.frac_bits],
                          name=f"d_field{i}")
            d_sign = reg(m, en, sign & ~cleared, name=f"d_sign{i}")
            d_zero = reg(m, en, cleared | (sig == 0), name=f"d_zero{i}")  # a zero sig keeps its sign
            # Shift stage.
            operand = Cat(Const(0, et.frac_bits + 1), d_sig)
            kept = Signal(width, name=f"kept{i}")
            m.d.comb += kept.eq(operand >> d_amount)
            dropped = operand & ~(Const((1 << width) - 1, width) << d_amount)[:width]
            s_kept = reg(m, en, kept, name=f"s_kept{i}")
            s_sticky = reg(m, en, dropped.any(), name=f"s_sticky{i}")
            s_field = reg(m, en, d_field, name=f"s_field{i}")
            s_sign = reg(m, en, d_sign, name=f"s_sign{i}")
            s_zero = reg(m, en, d_zero, name=f"s_zero{i}")
            # Round and encode: the significand's hidden bit adds the last one to the field.
            half, rbit = s_kept[1:], s_kept[0]
            n = half + (rbit & (s_sticky | half[0]))
            enc = Signal(17, name=f"enc{i}")
            m.d.comb += enc.eq((s_field << et.frac_bits) + n)
            sat = enc > et.max_finite
            mag = Mux(s_zero, 0, Mux(sat, et.max_finite, enc[:15]))
            values.append(reg(m, en, Cat(mag, s_sign), name=f"value{i}"))
            sats.append(reg(m, en, sat & ~s_zero, name=f"sat{i}"))

        # Valid chain through the engine; its last register is the output payload.
        chain = [valid]
        for k in range(self.ENGINE_STAGES):
            nxt = Signal(name=f"valid_{k + 2}")
            with m.If(en):
                m.d.sync += nxt.eq(chain[-1])
            chain.append(nxt)
        m.d.comb += self.o.valid.eq(chain[-1])
        for i in range(lanes):
            m.d.comb += self.o.payload[i].eq(values[i])

        # Saturations count when their beat enters the output register; non-finite bytes when
        # their beat leaves stage 1 (a stalled beat is counted once, when it moves).
        entered = Signal()
        m.d.sync += entered.eq(en & chain[-2])
        m.d.comb += [sat_ctr.events.eq(Cat(*sats)), sat_ctr.fire.eq(entered)]
        nf_events = [s & first for s in scale_nan] + (elem_nan if nan_elems else [])
        m.d.comb += [nf_ctr.events.eq(Cat(*nf_events)), nf_ctr.fire.eq(valid & en)]
        return m
