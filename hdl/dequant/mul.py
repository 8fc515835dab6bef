"""q8_0 and q4_0 element arithmetic: FP16 (or BF16) of ``d * c`` for a signed code ``c``, ``|c| <= 128``.

``d * c`` is exact in fp32 (11 x 8 bits), so ggml's fp32 result rounds once, to FP16. Mirrors
``dequant_model.mul_element``:

* ``P = sig_d * |c|`` (< 2**18) sits at grid position ``g_d``; multiplying in radix 4 with the block's
  ``3 * sig_d`` precomputed leaves one 4:1 mux per partial product and two adds (one for q4_0).
  The multiplier is 11 x 8 bits: four 13-bit LUT adds cost less than tying up a DSP48E2 per lane.
* when ``P >= 1024`` its leading one is ``sh`` (0..7) bits above bit 10, and ``sh`` bits are rounded
  off (RNE); a subnormal ``d`` keeps ``sh = 0``: its product is already on the 2**-24 grid.
* FP16 encoding is ``((g_d + sh) << 10) + sig + round_up``, normal and subnormal alike, with a carry
  to 2048 moving into the exponent; reaching the Inf pattern saturates to 65504.

BF16 output (``dequant_model.mul_element_bf16``) normalizes ``d`` (a subnormal's significand shifted
up to [1024, 2048), its exponent lowered; one extra block stage finds the shift), so every non-zero product
has its leading one at bit ``10 + sh`` and the same ``sh`` search applies; 8 bits are kept from
there (``sh + 3`` rounded off). The result is always a normal BF16 number below 2**21, so there is no
subnormal case and no saturation (``sat`` is constant 0).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from kvpath.config import BLOCK_ELEMS, check_elem

from kvpath.hdl.dequant.fields import MAX_FINITE, decode, fraction_lead, normalize, sanitize
from kvpath.hdl.lib.bits import msb_index, prefix_or, select
from kvpath.hdl.lib.pipe import reg


class MulEngine(wiring.Component):
    """``lanes`` products of a beat: ``value[i] = FP16(d[block(i)] * c[i])`` (BF16 for
    ``elem="bf16"``), ``latency`` enabled cycles after ``d`` and ``codes`` are presented; ``sat[i]``
    marks a value saturated to 65504.

    ``fmt`` is ``"q8_0"`` (codes are int8 bytes) or ``"q4_0"`` (codes are nibbles, ``c = q - 8``).
    Lane ``i`` belongs to block ``i // 32`` of the beat.
    """

    def __init__(self, fmt: str, lanes: int, elem: str = "fp16"):
        if fmt not in ("q8_0", "q4_0"):
            raise ValueError(f"MulEngine handles q8_0 and q4_0, not {fmt!r}")
        self.fmt = fmt
        self.elem = check_elem(elem)
        self.lanes = lanes
        self.blocks = max(1, lanes // BLOCK_ELEMS)
        self.code_bits = 8 if fmt == "q8_0" else 4
        # q4_0's |c| <= 8 needs two radix-4 digits and one add; q8_0's four digits need two.
        # BF16 normalizes d in a stage of its own before 3 * sig.
        self.latency = (5 if fmt == "q8_0" else 4) + (elem == "bf16")
        self.saturates = elem == "fp16"  # BF16 results from FP16 scales stay below 2**21
        super().__init__({
            "en": In(1),
            "d": In(unsigned(16)).array(self.blocks),
            "codes": In(unsigned(self.code_bits)).array(lanes),
            "value": Out(unsigned(16)).array(lanes),
            "sat": Out(1).array(lanes),
        })

    field_rule = staticmethod(sanitize)

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
        bf16 = self.elem == "bf16"

        # Stage 1: block fields and 3 * sig; each lane's |c| and sign.
        blk = []
        for b in range(self.blocks):
            f = decode(m, self.d[b])
            d_s, d_sig, d_g = f.s, f.sig, f.g
            if bf16:
                # An extra stage finds the leading one of d's fraction; the shift that normalizes
                # d then shares stage 1 with 3 * sig, and ``g`` carries the BF16 exponent base.
                d0 = reg(m, en, self.d[b], name=f"d{b}_n", reset=False)
                lead = reg(m, en, fraction_lead(m, self.d[b], name=f"norm{b}"), name=f"lead{b}_n", reset=False)
                d_sig, d_g = normalize(m, d0, lead, name=f"norm{b}")
                d_s = d0[15]
            sig = reg(m, en, d_sig, name=f"sig{b}", reset=False)
            sig3 = reg(m, en, d_sig + (d_sig << 1), name=f"sig3_{b}", reset=False)
            blk.append(dict(s=reg(m, en, d_s, name=f"s{b}", reset=False), sig=sig, sig3=sig3,
                            g=reg(m, en, d_g, name=f"g{b}", reset=False)))

        for i in range(self.lanes):
            b = blk[i // BLOCK_ELEMS]
            code = reg(m, en, self.codes[i], name=f"code{i}", reset=False) if bf16 else self.codes[i]
            mag, neg = self._magnitude(m, code)
            mag = reg(m, en, mag, name=f"mag{i}", reset=False)
            sign1 = reg(m, en, neg, name=f"neg{i}", reset=False)

            # Stage 2: radix-4 partial products and the first adds.
            def pp(k):
                digit = mag[2 * k:2 * k + 2]
                return Mux(digit[1], Mux(digit[0], b["sig3"], b["sig"] << 1),
                           Mux(digit[0], b["sig"], 0))
            sign = reg(m, en, b["s"] ^ sign1, name=f"sign{i}", reset=False)
            zero = reg(m, en, (mag == 0) | (b["sig"] == 0), name=f"zero{i}", reset=False)
            g = reg(m, en, b["g"], name=f"g{i}", reset=False)
            if q8:
                lo = reg(m, en, pp(0) + (pp(1) << 2), name=f"plo{i}", reset=False)
                hi = reg(m, en, pp(2) + (pp(3) << 2), name=f"phi{i}", reset=False)
                # Stage 3: the product.
                prod = Signal(18, name=f"prod{i}")
                m.d.comb += prod.eq(lo + (hi << 4))
                sign, zero, g = (reg(m, en, v, name=f"{n}{i}_3", reset=False) for n, v in
                                 (("sign", sign), ("zero", zero), ("g", g)))
                hi_bits = 8
            else:
                prod = Signal(14, name=f"prod{i}")
                m.d.comb += prod.eq(pp(0) + (pp(1) << 2))
                hi_bits = 4  # 2047 * 8 < 2**14
            # With the product, the normalizing shift: the leading one's height above bit 10.
            p = reg(m, en, prod, name=f"p{i}", reset=False)
            sh = reg(m, en, msb_index(m, prod[10:10 + hi_bits], name=f"lead{i}")[0], name=f"sh{i}", reset=False)

            # Next stage: keep 11 bits from the leading one (or from bit 0 below 1024); BF16
            # keeps 8, and its d is normalized, so the leading one is always at 10 + sh.
            if bf16:
                shifted = (p[3:] >> sh)[0:8]
                rbit = select(sh, [p[k + 2] for k in range(hi_bits)])
                sticky = select(sh, prefix_or(p[0:hi_bits + 1])[2:])
            else:
                shifted = (p >> sh)[0:11]
                rbit = select(sh, [Const(0, 1)] + [p[k] for k in range(hi_bits - 1)])
                sticky = select(sh, [Const(0, 1)] + prefix_or(p[0:hi_bits - 2]))
            sig_n = reg(m, en, shifted, name=f"sig{i}", reset=False)
            rb = reg(m, en, rbit, name=f"r{i}", reset=False)
            st = reg(m, en, sticky, name=f"st{i}", reset=False)
            pos = reg(m, en, g + sh, name=f"pos{i}", reset=False)
            sign, zero = (reg(m, en, v, name=f"{n}{i}_4", reset=False) for n, v in (("sign", sign), ("zero", zero)))

            # Last stage: round to nearest even, encode, saturate (BF16 cannot overflow).
            inc = rb & (st | sig_n[0])
            enc = Signal(16, name=f"enc{i}")
            if bf16:
                m.d.comb += enc.eq((pos << 7) + sig_n + inc)
                sat = Const(0, 1)
            else:
                m.d.comb += enc.eq((pos << 10) + sig_n + inc)
                sat = enc >= 0x7C00
            mag_out = Mux(zero, 0, Mux(sat, MAX_FINITE, enc[0:15]))
            with m.If(en):
                m.d.sync += [
                    self.value[i].eq(Cat(mag_out, sign)),
                    self.sat[i].eq(sat & ~zero),
                ]
        return m
