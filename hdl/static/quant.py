"""Static-scale quantizer (int8_ph, int4_ph, int8_pc, int4_pc): one beat in, one beat of codes out.

Stream ``i`` carries ``lanes`` elements (FP16 or BF16) and the beat's context (``context_layout``:
layer, head, kv, channel of lane 0); stream ``o`` carries the beat's codes (lane ``k`` at bits
``[k*code_bits, (k+1)*code_bits)``, so int4 lanes ``2j``/``2j+1`` share byte ``j``, low nibble first)
and the same context, passed through. The reciprocals come from a ``ScaleCache`` copy through the
``scales`` port, read in the cycle the beat is accepted.

Arithmetic (kvpath.golden.static): ``P = sig_x * sig_inv`` exact, ``q = floor(P * 2**-s + 1/2)``
computed as ``((P << 9) >> (s + 8) + 1) >> 1`` -- one right shifter serves both directions, because a
left shift by more than 8 always saturates a non-zero product -- then clamp to +-qmax and sign.

Pipeline (``latency`` = 5): accept (sanitize, cache row) | S1 (cache data, decode, multiply) | S2
(coarse shift by whole bytes, saturation beyond the window) | S3 (fine shift, round, clamp) | S4
(sign, pack) | output register; each stage stays within 6 LUT levels on the XCK26 (``kvpath synth``).
Flow control as every static datapath (``datapath.py``).

Counters (32 bit, wrapping, a few clocks behind): ``nonfinite_count`` (non-finite input elements,
sanitized to +-max finite / +0), ``saturated_count`` (codes clamped to +-qmax),
``context_error_count`` (beats with a context outside the configuration: codes 0).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data

from kvpath.config import DEFAULT, ELEM_BITS, QUANT_LANES, KVPathConfig, get_format
from kvpath.elements import element

from kvpath.hdl.lib.counter import EventCounter
from kvpath.hdl.lib.pipe import reg
from kvpath.hdl.quant.frame import sanitize
from kvpath.hdl.static.cache import finite_half
from kvpath.hdl.static.datapath import StaticDatapath, decode

QMAX = {8: 127, 4: 7}
LEFT = 9  # the product is pre-shifted left by this much; s < 1 - LEFT + 1 saturates


class StaticQuantizer(StaticDatapath):
    def __init__(self, fmt: str, lanes: int, elem: str = "fp16", config: KVPathConfig = DEFAULT):
        super().__init__(fmt, lanes, elem, config, allowed_lanes=QUANT_LANES, what="quantizer",
                         data_in={"elems": data.ArrayLayout(unsigned(ELEM_BITS), lanes)},
                         data_out={"codes": unsigned(lanes * get_format(fmt).code_bits)},
                         counters=("nonfinite_count", "saturated_count", "context_error_count"), latency=5)

    def elaborate(self, platform):
        m = Module()
        lanes, elem, bits = self.lanes, self.elem, self.fmt.code_bits
        frac = element(elem).frac_bits
        en, accept, (out_valid, out) = self.stage_enable(m)

        # Accept: sanitize, count non-finite inputs, address the cache.
        m.submodules.nonfinite = nonfinite = EventCounter(lanes)
        flags = []
        san = []
        for k in range(lanes):
            y, bad = sanitize(m, self.i.payload.elems[k], elem)
            san.append(y)
            flags.append(bad)
        m.d.comb += [nonfinite.events.eq(Cat(*flags)), nonfinite.fire.eq(accept),
                     self.nonfinite_count.eq(nonfinite.count)]
        ok0 = self.read_scales(m, en, accept)

        v1 = reg(m, en, accept, "s1_valid", reset=True)
        x1 = [reg(m, en, y, f"s1_x{k}", reset=False) for k, y in enumerate(san)]
        ok1 = reg(m, en, ok0, "s1_ok", reset=False)
        ctx1 = reg(m, en, self.i.payload.ctx, "s1_ctx", reset=False)

        # S1: decode, exact product, shift amount.
        const_s = 2 * (element(elem).bias + frac) + LEFT - 1  # u = s + LEFT - 1, s = const - ee_x - ee_i
        pw = 2 * (frac + 1)
        u_max = pw + LEFT + 1  # shifting (P << LEFT) by this much or more leaves 0
        p2, u2, neg2 = [], [], []
        for k in range(lanes):
            inv_bits = self.scales.data[k if self.scope == "channel" else 0]
            sx, mx, ex = decode(m, x1[k], elem, f"x{k}")
            si, mi, ei = decode(m, inv_bits, elem, f"inv{k}")
            inv_ok = finite_half(m, inv_bits, elem)  # never false behind ScaleCache; 0 if it were
            p = Signal(pw, name=f"p{k}")
            m.d.comb += p.eq(mx * Mux(inv_ok, mi, 0))
            u = Signal(range(-2 * (1 << len(ex)), const_s + 1), name=f"u{k}")
            m.d.comb += u.eq(const_s - ex - ei)
            p2.append(reg(m, en, p, f"s2_p{k}", reset=False))
            u2.append(reg(m, en, Mux(u < 0, 0, Mux(u > u_max, u_max, u))[:u_max.bit_length()], f"s2_u{k}", reset=False))
            neg2.append(reg(m, en, sx ^ si, f"s2_neg{k}", reset=False))
        v2, ok2, ctx2 = reg(m, en, v1, "s2_valid", reset=True), reg(m, en, ok1, "s2_ok", reset=False), reg(m, en, ctx1, "s2_ctx", reset=False)

        # S2: coarse shift by whole bytes. Only the code's ``bits`` low bits of ``a = (P << LEFT) >> u``
        # survive the clamp, plus whether any higher bit is set (``hi``). The coarse shift keeps a
        # window of ``bits + 7`` bits, enough for any fine shift; ``far`` says whether a bit beyond the
        # window is set: ``P >> (8 * uh + window - LEFT) != 0``, a suffix-OR of P picked by ``uh``, so
        # it never waits for the shifter. (At u = 0, where u < 0 was clamped, ``hi`` is ``P != 0``:
        # every non-zero product whose left shift would exceed LEFT saturates.)
        u_bits = u_max.bit_length()
        fine_bits = 3
        window = bits + (1 << fine_bits) - 1
        b3, ul3, far3, neg3 = [], [], [], []
        for k in range(lanes):
            uh = u2[k][fine_bits:]
            b = Signal(window, name=f"b{k}")
            m.d.comb += b.eq(((p2[k] << LEFT) >> Cat(Const(0, fine_bits), uh))[:window])
            suffix_any = [p2[k][j:].any() for j in range(pw)]
            picks = []
            for h in range(1 << (u_bits - fine_bits)):
                j = (h << fine_bits) + window - LEFT
                picks.append(suffix_any[max(j, 0)] if j < pw else Const(0, 1))
            far = Signal(name=f"far{k}")
            m.d.comb += far.eq(Cat(*picks).bit_select(uh, 1))
            b3.append(reg(m, en, b, f"s3_b{k}", reset=False))
            ul3.append(reg(m, en, u2[k][:fine_bits], f"s3_ul{k}", reset=False))
            far3.append(reg(m, en, far, f"s3_far{k}", reset=False))
            neg3.append(reg(m, en, neg2[k], f"s3_neg{k}", reset=False))
        v3, ok3, ctx3 = reg(m, en, v2, "s3_valid", reset=True), reg(m, en, ok2, "s3_ok", reset=False), reg(m, en, ctx2, "s3_ctx", reset=False)

        # S3: fine shift, round half away from zero, clamp. ``q = (a + 1) >> 1`` exceeds qmax exactly
        # when ``a >= 2 * qmax + 1 = 2**bits - 1``: a higher bit set, or the low bits all ones.
        qmax = QMAX[bits]
        q4, sat4, neg4 = [], [], []
        for k in range(lanes):
            a = Signal(bits, name=f"a{k}")
            m.d.comb += a.eq((b3[k] >> ul3[k])[:bits])
            above = Cat(*((b3[k][j:].any() if j < window else Const(0, 1))
                          for j in range(bits, bits + (1 << fine_bits))))
            sat = Signal(name=f"sat{k}")
            m.d.comb += sat.eq(far3[k] | above.bit_select(ul3[k], 1) | a.all())
            q = Signal(bits, name=f"qfull{k}")
            m.d.comb += q.eq((a + 1) >> 1)
            q4.append(reg(m, en, Mux(sat, qmax, q[:bits - 1]), f"s4_q{k}", reset=False))
            sat4.append(reg(m, en, sat, f"s4_sat{k}", reset=False))
            neg4.append(reg(m, en, neg3[k], f"s4_neg{k}", reset=False))
        v4, ok4, ctx4 = reg(m, en, v3, "s4_valid", reset=True), reg(m, en, ok3, "s4_ok", reset=False), reg(m, en, ctx3, "s4_ctx", reset=False)

        # S4: sign and pack into the output register; a bad context gives code 0.
        m.submodules.saturated = saturated = EventCounter(lanes)
        m.d.comb += [saturated.events.eq(Cat(*sat4) & Mux(ok4, (1 << lanes) - 1, 0)),
                     saturated.fire.eq(v4), self.saturated_count.eq(saturated.count)]
        codes = Cat(*(Mux(neg4[k], -q4[k], q4[k])[:bits] for k in range(lanes)))
        m.d.sync += [out_valid.eq(v4), out.codes.eq(Mux(ok4, codes, 0)), out.ctx.eq(ctx4)]
        return m
