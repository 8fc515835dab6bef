"""Static-scale dequantizer: one beat of codes in, one beat of elements out.

Stream ``i`` carries ``lanes`` codes (lane ``k`` at bits ``[k*code_bits, ...)``, two's complement)
and the beat's context; stream ``o`` carries ``lanes`` FP16/BF16 patterns and the context, passed
through. The scales come from a ``ScaleCache`` copy through the ``scales`` port, read in the cycle
the beat is accepted.

Arithmetic (kvpath.golden.static): ``P = |c| * sig_scale`` is exact and the value is
``P * 2**(ee - bias - frac)``. With ``L = bit_length(P)`` the result's exponent field less one is
``r = L + ee - frac - 2``: when ``r >= 1`` the value is normal and its pattern is
``(r << frac) + RNE(top frac+1 bits of P)`` (a rounding carry moves into the exponent by itself);
otherwise it is ``P << (ee - 1)``, exact, because a scale is on the element's subnormal grid. A
pattern beyond the largest finite value saturates to it. Sign = sign(code) XOR sign(scale).

Pipeline (``latency`` = 6): accept (cache row) | S1 (cache data, multiply) | S2 (leading one) | S3
(normalize, exponent, subnormal pattern) | S4 (round, overflow test) | S5 (saturate, encode) | output
register (flow control as every static datapath, ``datapath.py``). Each stage stays within 6 LUT
levels on the XCK26 (``kvpath synth``).

Counters: ``saturated_count`` (elements saturated), ``nonfinite_count`` (elements whose scale was
Inf/NaN, treated as +0: impossible behind ``ScaleCache``, which refuses such writes),
``context_error_count`` (beats with a bad context: all elements +0).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data

from kvpath.config import DEFAULT, DEQUANT_LANES, ELEM_BITS, KVPathConfig, get_format
from kvpath.elements import element

from kvpath.hdl.lib.counter import EventCounter
from kvpath.hdl.lib.bits import msb_index
from kvpath.hdl.lib.pipe import reg
from kvpath.hdl.static.cache import finite_half
from kvpath.hdl.static.datapath import StaticDatapath, decode

class StaticDequantizer(StaticDatapath):
    def __init__(self, fmt: str, lanes: int, elem: str = "fp16", config: KVPathConfig = DEFAULT):
        super().__init__(fmt, lanes, elem, config, allowed_lanes=DEQUANT_LANES, what="dequantizer",
                         data_in={"codes": unsigned(lanes * get_format(fmt).code_bits)},
                         data_out={"elems": data.ArrayLayout(unsigned(ELEM_BITS), lanes)},
                         counters=("saturated_count", "nonfinite_count", "context_error_count"), latency=6)

    def elaborate(self, platform):
        m = Module()
        lanes, elem, bits = self.lanes, self.elem, self.fmt.code_bits
        frac, exp = element(elem).frac_bits, element(elem).exp_bits
        en, accept, (out_valid, out_reg) = self.stage_enable(m)
        ok0 = self.read_scales(m, en, accept)
        v1 = reg(m, en, accept, "s1_valid", reset=True)
        codes1 = reg(m, en, self.i.payload.codes, "s1_codes", reset=False)
        ok1 = reg(m, en, ok0, "s1_ok", reset=False)
        ctx1 = reg(m, en, self.i.payload.ctx, "s1_ctx", reset=False)

        # S1: sign-magnitude code times the scale's significand, exact.
        pw = bits + frac + 1
        p2, ee2, neg2, bad2 = [], [], [], []
        for k in range(lanes):
            s_bits = self.scales.data[k if self.scope == "channel" else 0]
            good = finite_half(m, s_bits, elem)
            ss, ms, es = decode(m, s_bits, elem, f"scale{k}")
            c = codes1[k * bits:(k + 1) * bits]
            cneg = c[bits - 1]
            mag = Signal(bits, name=f"mag{k}")
            m.d.comb += mag.eq(Mux(cneg, -c.as_signed(), c))
            p = Signal(pw, name=f"p{k}")
            m.d.comb += p.eq(mag * Mux(good, ms, 0))
            p2.append(reg(m, en, p, f"s2_p{k}", reset=False))
            ee2.append(reg(m, en, es, f"s2_ee{k}", reset=False))
            neg2.append(reg(m, en, cneg ^ (ss & good), f"s2_neg{k}", reset=False))
            bad2.append(reg(m, en, ~good, f"s2_bad{k}", reset=False))
        v2, ok2, ctx2 = reg(m, en, v1, "s2_valid", reset=True), reg(m, en, ok1, "s2_ok", reset=False), reg(m, en, ctx1, "s2_ctx", reset=False)

        # S2: leading one of P (a mux tree) and the left shift that brings it to the top.
        shift3, zero3, p3, ee3, neg3, bad3 = [], [], [], [], [], []
        for k in range(lanes):
            # Padded at the bottom to a power of two, the shift ``pw - 1 - lead`` is ``~lead``: no adder.
            span = 1 << (pw - 1).bit_length()
            lead, zero = msb_index(m, Cat(Const(0, span - pw), p2[k]), name=f"lead{k}")
            shift3.append(reg(m, en, ~lead, f"s3_shift{k}", reset=False))
            zero3.append(reg(m, en, zero, f"s3_zero{k}", reset=False))
            p3.append(reg(m, en, p2[k], f"s3_p{k}", reset=False))
            ee3.append(reg(m, en, ee2[k], f"s3_ee{k}", reset=False))
            neg3.append(reg(m, en, neg2[k], f"s3_neg{k}", reset=False))
            bad3.append(reg(m, en, bad2[k], f"s3_bad{k}", reset=False))
        v3, ok3, ctx3 = reg(m, en, v2, "s3_valid", reset=True), reg(m, en, ok2, "s3_ok", reset=False), reg(m, en, ctx2, "s3_ctx", reset=False)

        # S3: normalize (the top bit of pn is P's leading one), the exponent ``r = L + ee - frac - 2``
        # (``L - 1 = pw - 1 - shift``) and the subnormal pattern.
        pn4, r4, sub4, zero4, ee4, neg4, bad4 = [], [], [], [], [], [], []
        for k in range(lanes):
            pn = Signal(pw, name=f"pn{k}")
            m.d.comb += pn.eq(p3[k] << shift3[k])
            r = Signal(range(-(frac + 2) - pw, (1 << exp) + pw + 1), name=f"r{k}")
            m.d.comb += r.eq(pw - 1 - shift3[k] + ee3[k] - frac - 1)
            sub = Signal(frac + 1, name=f"sub{k}")
            m.d.comb += sub.eq(p3[k][:frac + 1] << (ee3[k] - 1)[:(frac + 1).bit_length()])
            pn4.append(reg(m, en, pn, f"s4_pn{k}", reset=False))
            r4.append(reg(m, en, r, f"s4_r{k}", reset=False))
            sub4.append(reg(m, en, sub, f"s4_sub{k}", reset=False))
            zero4.append(reg(m, en, zero3[k], f"s4_zero{k}", reset=False))
            neg4.append(reg(m, en, neg3[k], f"s4_neg{k}", reset=False))
            bad4.append(reg(m, en, bad3[k], f"s4_bad{k}", reset=False))
        v4, ok4, ctx4 = reg(m, en, v3, "s4_valid", reset=True), reg(m, en, ok3, "s4_ok", reset=False), reg(m, en, ctx3, "s4_ctx", reset=False)

        # S4: round to nearest even; saturation is decided from r and the rounding carry, without
        # waiting for the sum: the pattern's exponent field is ``r + 1 + carry`` and it overflows at
        # ``2**exp - 1`` (max finite is the largest pattern below it).
        below = pw - frac - 1  # bits under the kept significand (>= 3: codes have >= 4 bits)
        max_finite, top_exp = element(elem).max_finite, (1 << exp) - 1
        normal5, normal_ok5, over5, mag5, sign5, bad5 = [], [], [], [], [], []
        for k in range(lanes):
            pn, r = pn4[k], r4[k]
            top = pn[below:]
            guard = pn[below - 1]
            sticky = pn[:below - 1].any()
            n = Signal(frac + 2, name=f"n{k}")
            m.d.comb += n.eq(top + (guard & (sticky | top[0])))
            normal = Signal(frac + exp + 2, name=f"normal{k}")
            m.d.comb += normal.eq((r.as_unsigned()[:exp + 1] << frac) + n)
            is_normal = (r > 0) & ~zero4[k]
            carry = top.all() & guard
            over = is_normal & ((r >= top_exp - 1) | ((r == top_exp - 2) & carry))
            normal5.append(reg(m, en, normal[:15], f"s5_normal{k}", reset=False))
            normal_ok5.append(reg(m, en, is_normal, f"s5_is_normal{k}", reset=False))
            over5.append(reg(m, en, over, f"s5_over{k}", reset=False))
            mag5.append(reg(m, en, Mux(zero4[k], 0, sub4[k]), f"s5_sub{k}", reset=False))
            sign5.append(reg(m, en, neg4[k], f"s5_neg{k}", reset=False))
            bad5.append(reg(m, en, bad4[k], f"s5_bad{k}", reset=False))
        v5, ok5, ctx5 = reg(m, en, v4, "s5_valid", reset=True), reg(m, en, ok4, "s5_ok", reset=False), reg(m, en, ctx4, "s5_ctx", reset=False)

        # S5: saturate, encode, zero a bad context's beat.
        out, sat_flags, bad_flags = [], [], []
        for k in range(lanes):
            mag = Mux(normal_ok5[k], Mux(over5[k], max_finite, normal5[k]), mag5[k])
            out.append(Mux(ok5, Cat(mag[:15], sign5[k]), 0))
            sat_flags.append(over5[k] & ok5)
            bad_flags.append(bad5[k] & ok5)
        m.submodules.saturated = saturated = EventCounter(lanes)
        m.submodules.nonfinite = nonfinite = EventCounter(lanes)
        m.d.comb += [
            saturated.events.eq(Cat(*sat_flags)), saturated.fire.eq(v5),
            nonfinite.events.eq(Cat(*bad_flags)), nonfinite.fire.eq(v5),
            self.saturated_count.eq(saturated.count), self.nonfinite_count.eq(nonfinite.count),
        ]
        m.d.sync += out_valid.eq(v5)
        m.d.sync += [out_reg.elems[k].eq(out[k]) for k in range(lanes)]
        m.d.sync += out_reg.ctx.eq(ctx5)
        return m
