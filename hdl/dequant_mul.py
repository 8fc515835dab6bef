"""q8_0 and q4_0 element arithmetic: FP16 of ``d * c`` for a signed code ``c``, ``|c| <= 128``.

``d * c`` is exact in fp32 (11 x 8 bits), so ggml's fp32 result rounds once, to FP16. Mirrors
``dequant_model.mul_element``:

* ``P = sig_d * |c|`` (< 2**18) sits at grid position ``g_d``; multiplying in radix 4 with the block's
  ``3 * sig_d`` precomputed leaves one 4:1 mux per partial product and two adds (one for q4_0).
  The multiplier is 11 x 8 bits: four 13-bit LUT adds cost less than tying up a DSP48E2 per lane.
* when ``P >= 1024`` its leading one is ``sh`` (0..7) bits above bit 10, and ``sh`` bits are rounded
  off (RNE); a subnormal ``d`` keeps ``sh = 0``: its product is already on the 2**-24 grid.
* FP16 encoding is ``((g_d + sh) << 10) + sig + round_up``, normal and subnormal alike, with a carry
  to 2048 moving into the exponent; reaching the Inf pattern saturates to 65504.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from kvpath.config import BLOCK_ELEMS

from .dequant_fields import MAX_FINITE, decode
from .dequant_pipe import msb_index, prefix_or, reg, select


class MulEngine(wiring.Component):
    """``lanes`` products of a beat: ``value[i] = FP16(d[block(i)] * c[i])``, ``latency`` enabled
    cycles after ``d`` and ``codes`` are presented; ``sat[i]`` marks a value saturated to 65504.

    ``fmt`` is ``"q8_0"`` (codes are int8 bytes) or ``"q4_0"`` (codes are nibbles, ``c = q - 8``).
    Lane ``i`` belongs to block ``i // 32`` of the beat.
    """

    def __init__(self, fmt: str, lanes: int):
        if fmt not in ("q8_0", "q4_0"):
            raise ValueError(f"MulEngine handles q8_0 and q4_0, not {fmt!r}")
        self.fmt = fmt
        self.lanes = lanes
        self.blocks = max(1, lanes // BLOCK_ELEMS)
        self.code_bits = 8 if fmt == "q8_0" else 4
        # q4_0's |c| <= 8 needs two radix-4 digits and one add; q8_0's four digits need two.
        self.latency = 5 if fmt == "q8_0" else 4
        super().__init__({
            "en": In(1),
            "d": In(data.ArrayLayout(unsigned(16), self.blocks)),
            "codes": In(data.ArrayLayout(unsigned(self.code_bits), lanes)),
            "value": Out(data.ArrayLayout(unsigned(16), lanes)),
            "sat": Out(unsigned(lanes)),
        })

    def _magnitude(self, m: Module, code):
        """``(|c|, c < 0)`` of a stored code."""
        if self.fmt == "q8_0":
            neg = code[7]
            return Mux(neg, -code.as_signed(), code)[0:8], neg
        # c = q - 8: q >= 8 gives q - 8 (its low 3 bits), q < 8 gives 8 - q.
        neg = ~code[3]
        return Mux(neg, 8 - code, code[0:3])[0:4], neg

    def elaborate(self, platform):
        m = Module()
        en = self.en
        q8 = self.fmt == "q8_0"

        # Stage 1: block fields and 3 * sig; each lane's |c| and sign.
        blk = []
        for b in range(self.blocks):
            f = decode(m, self.d[b])
            sig = reg(m, en, f.sig, name=f"sig{b}")
            sig3 = reg(m, en, f.sig + (f.sig << 1), name=f"sig3_{b}")
            blk.append(dict(s=reg(m, en, f.s, name=f"s{b}"), sig=sig, sig3=sig3,
                            g=reg(m, en, f.g, name=f"g{b}")))

        for i in range(self.lanes):
            b = blk[i // BLOCK_ELEMS]
            mag, neg = self._magnitude(m, self.codes[i])
            mag = reg(m, en, mag, name=f"mag{i}")
            sign1 = reg(m, en, neg, name=f"neg{i}")

            # Stage 2: radix-4 partial products and the first adds.
            def pp(k):
                digit = mag[2 * k:2 * k + 2]
                return Mux(digit[1], Mux(digit[0], b["sig3"], b["sig"] << 1),
                           Mux(digit[0], b["sig"], 0))
            sign = reg(m, en, b["s"] ^ sign1, name=f"sign{i}")
            zero = reg(m, en, (mag == 0) | (b["sig"] == 0), name=f"zero{i}")
            g = reg(m, en, b["g"], name=f"g{i}")
            if q8:
                lo = reg(m, en, pp(0) + (pp(1) << 2), name=f"plo{i}")
                hi = reg(m, en, pp(2) + (pp(3) << 2), name=f"phi{i}")
                # Stage 3: the product.
                prod = Signal(18, name=f"prod{i}")
                m.d.comb += prod.eq(lo + (hi << 4))
                sign, zero, g = (reg(m, en, v, name=f"{n}{i}_3") for n, v in
                                 (("sign", sign), ("zero", zero), ("g", g)))
                hi_bits = 8
            else:
                prod = Signal(14, name=f"prod{i}")
                m.d.comb += prod.eq(pp(0) + (pp(1) << 2))
                hi_bits = 4  # 2047 * 8 < 2**14
            # With the product, the normalizing shift: the leading one's height above bit 10.
            p = reg(m, en, prod, name=f"p{i}")
            sh = reg(m, en, msb_index(m, prod[10:10 + hi_bits], name=f"lead{i}")[0], name=f"sh{i}")

            # Next stage: keep 11 bits from the leading one (or from bit 0 below 1024).
            shifted = (p >> sh)[0:11]
            rbit = select(sh, [Const(0, 1)] + [p[k] for k in range(hi_bits - 1)])
            sticky = select(sh, [Const(0, 1)] + prefix_or(p[0:hi_bits - 2]))
            sig_n = reg(m, en, shifted, name=f"sig{i}")
            rb = reg(m, en, rbit, name=f"r{i}")
            st = reg(m, en, sticky, name=f"st{i}")
            pos = reg(m, en, g + sh, name=f"pos{i}")
            sign, zero = (reg(m, en, v, name=f"{n}{i}_4") for n, v in (("sign", sign), ("zero", zero)))

            # Last stage: round to nearest even, encode, saturate.
            inc = rb & (st | sig_n[0])
            enc = Signal(16, name=f"enc{i}")
            m.d.comb += enc.eq((pos << 10) + sig_n + inc)
            sat = enc >= 0x7C00
            mag_out = Mux(zero, 0, Mux(sat, MAX_FINITE, enc[0:15]))
            with m.If(en):
                m.d.sync += [
                    self.value[i].eq(Cat(mag_out, sign)),
                    self.sat[i].eq(sat & ~zero),
                ]
        return m
