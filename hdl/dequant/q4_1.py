"""q4_1 element arithmetic: FP16 (or BF16) of ``fl32(d*q + m)``, a double rounding (fp32, then FP16).

Mirrors ``dequant_model.q41_block`` / ``q41_element``, where the window placement and why it is
exact are documented. Per block (5 stages): ``d``'s significand and ``m`` are placed in a 41-bit
fixed-point window chosen from the exponent difference, so that the sum for any of the 16 codes is
exact or carries a sticky bit strictly below fp32's guard bit, and the tables ``T[j] = m + j*d`` and
``V[j] = 4*j*d`` are formed, signs included. Per element (7 stages): one add ``T[q&3] + V[q>>2]``,
the floor of its magnitude, a 23-bit leading-one search in three 8-bit groups (with the 2**-24
floor OR-ed in as a one-hot bit), a shift by 0/8/16 (the group) then by 0..7 (within it), the fp32
rounding and the FP16 rounding of that, and the encoding with saturation.

Two arrangements of the same element pipeline:

* per lane: each lane runs the pipeline on its own code (``q`` a signal);
* table: each block runs it for the 15 non-zero codes as constants (code 0 is ``m`` itself), which
  folds the code multiplexers away, and every lane picks its result with a 16:1 mux. That trades
  32 pipelines per block for 15 plus 32 muxes, and wins from 16 lanes up (yosys synth_xilinx on
  the 16-lane engine: 6081 LUTs as a table against 6341 per lane).

BF16 output (``elem="bf16"``, ``dequant_model.q41_element(..., "bf16")``) uses the same windows and
sums. Its results are all normal BF16 numbers, so the shift is the sum's true leading one (no
2**-24 floor), the second rounding keeps 8 bits instead of 11, the exponent field is offset by
``BF16_POS`` (folded into the block's ``base``), and nothing saturates. Code 0 (``d*0 + m``) is no
longer a plain copy of ``m``: the block converts ``m`` to BF16 (normalize, round 11 bits to 8) in B2
and B3.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from kvpath.config import BLOCK_ELEMS, check_elem

from kvpath.golden.ggml import dequant_steps as model
from kvpath.hdl.dequant.fields import MAX_FINITE, decode, fraction_lead, normalize, sanitize
from kvpath.hdl.lib.bits import msb_index
from kvpath.hdl.lib.pipe import delay, reg

BLOCK_STAGES = 5
LANE_STAGES = 7
SUM = model.SUM_BITS + 1  # signed sum width


class Q41Engine(wiring.Component):
    """``lanes`` values of a beat: ``value[i] = FP16(fl32(d*q[i] + m))`` of lane ``i``'s block
    (``i // 32``), ``latency`` enabled cycles after ``d``, ``m`` and ``codes`` are presented.
    ``table`` selects the arrangement (default: table when ``lanes >= 16``); ``elem`` the output
    element type (``"fp16"`` or ``"bf16"``; same latency)."""

    field_rule = staticmethod(sanitize)

    def __init__(self, fmt: str, lanes: int, elem: str = "fp16", table: bool | None = None):
        if fmt != "q4_1":
            raise ValueError(f"Q41Engine handles q4_1, not {fmt!r}")
        self.elem = check_elem(elem)
        self.saturates = elem == "fp16"  # BF16 results from FP16 scales stay below 2**21
        self.lanes = lanes
        self.blocks = max(1, lanes // BLOCK_ELEMS)
        self.table = lanes >= 16 if table is None else table
        self.latency = BLOCK_STAGES + LANE_STAGES + (1 if self.table else 0)
        super().__init__({
            "en": In(1),
            "d": In(unsigned(16)).array(self.blocks),
            "m": In(unsigned(16)).array(self.blocks),
            "codes": In(unsigned(4)).array(lanes),
            "value": Out(unsigned(16)).array(lanes),
            "sat": Out(1).array(lanes),
        })

    # --- per block ---------------------------------------------------------------------------

    def _block(self, m: Module, en, d_bits, m_bits, b: int) -> list[dict]:
        """Block constants; returns them as seen at each lane stage (index 0 = lane stage 1 input)."""
        r = lambda v, n: reg(m, en, v, name=f"b{b}_{n}", reset=False)  # noqa: E731
        bf16 = self.elem == "bf16"

        # B1: fields and exponent difference.
        fd, fm = decode(m, d_bits), decode(m, m_bits)
        sd, sm, sigd, sigm = r(fd.s, "sd"), r(fm.s, "sm"), r(fd.sig, "sigd"), r(fm.sig, "sigm")
        gd, gm = r(fd.g, "gd"), r(fm.g, "gm")
        delta = r(fd.g - fm.g, "delta")
        mb = r(m_bits, "mbits")

        # B2: window placement.
        far_a = delta >= 2
        far_b = delta <= -6
        pos_delta = Mux(delta[-1], 0, delta)
        neg_delta = Mux(delta[-1], -delta, 0)
        base = Signal(signed(7), name=f"b{b}_base_c")
        kx = Signal(signed(7), name=f"b{b}_kx_c")
        ky = Signal(signed(7), name=f"b{b}_ky_c")
        # Expressions rather than If assignments (lib/bits.py leading_zeros says why).
        m.d.comb += [
            base.eq(Mux(far_a, gd - 16, Mux(far_b, gm - 21, Mux(delta[-1], gd, gm) - 10))),
            kx.eq(Mux(far_a, 24, Mux(far_b, 29 + delta, 18 + pos_delta))),
            ky.eq(Mux(far_a, 24 - delta, Mux(far_b, 29, 18 + neg_delta))),
        ]
        base2, kx2, ky2 = r(base, "base"), r(kx, "kx"), r(ky + 5, "ky5")
        sd2, sm2, sigd2, sigm2, mb2 = (r(v, n + "2") for v, n in
                                       ((sd, "sd"), (sm, "sm"), (sigd, "sigd"), (sigm, "sigm"), (mb, "mb")))
        if bf16:
            # m alone (code 0) as BF16: the normalizing shift is found here, applied and rounded in B3.
            m_lead2 = r(fraction_lead(m, mb, name=f"b{b}_mnorm"), "mlead")

        # B3: shift the significands into the window. m's bits below the fixed point's LSB
        # (ky < 0, at most 5) leave as a sticky flag; the floor is taken with m's sign in B4.
        dsh = r((sigd2 << kx2[0:5])[0:35], "dsh")  # kx is 0..24
        wide = (sigm2 << ky2[0:6])[0:46]
        ysh = r(wide[5:46], "ysh")
        sticky_y = r(wide[0:5].any(), "sticky_y")
        sd3, sm3, mb3, base3 = (r(v, n + "3") for v, n in ((sd2, "sd"), (sm2, "sm"), (mb2, "mb"),
                                                            (base2, "base")))
        if bf16:
            m_sig, m_pos = normalize(m, mb2, m_lead2, name=f"b{b}_mnorm")
            m_inc = m_sig[2] & (m_sig[0:2].any() | m_sig[3])  # RNE of 11 bits to 8
            mb3 = r(Cat(((m_pos << 7) + m_sig[3:11] + m_inc)[0:15], sm2), "mb_bf16")
            # The exponent field offset rides on base, so each element adds only its shift.
            base3 = r(base2 + model.BF16_POS, "base_bf16")
        dzero3 = r(sigd2 == 0, "dzero")
        mzero3 = r(sigm2 == 0, "mzero")

        # B4: 3 * d and m's signed floor (-y - frac floors to ~y + 1 - sticky).
        d3 = r(dsh + (dsh << 1), "d3")
        d1 = r(dsh, "d1")
        yfx = r(_negate_if(sm3, ysh, sm3 & ~sticky_y), "yfx")
        k4 = {n: r(v, n + "4") for n, v in (("sd", sd3), ("sm", sm3), ("mb", mb3), ("base", base3),
                                            ("dzero", dzero3), ("mzero", mzero3),
                                            ("sticky_y", sticky_y))}

        # B5: T[j] = m + sd*j*d (j = 0..3) and V[j] = sd*4*j*d, so that d*q + m = T[q&3] + V[q>>2]
        # is one add per element.
        sd4 = k4["sd"]
        t = [r(yfx, "t0")] + [r(yfx + _complement_if(sd4, x) + sd4, f"t{j}")
                              for j, x in ((1, d1), (2, d1 << 1), (3, d3))]
        v1 = r(_negate_if(sd4, d1 << 2, sd4), "v1")
        v = [Const(0, 1), v1, v1 << 1, r(_negate_if(sd4, d3 << 2, sd4), "v3")]
        c = {n: r(val, n + "5") for n, val in k4.items()}
        c["t"], c["v"] = t, v
        # The FP16 quantum's floor (2**-24) as a window shift: a one-hot bit OR-ed into the
        # leading-one search makes it return max(lead, floor). Only the near case ever needs it.
        if not bf16:
            floor = -k4["base"]
            c["floor"] = r(Mux(floor > 0, Const(1, 23) << floor[0:5], 0)[0:23], "floor")
        # The FP16 value when d*q is zero: m itself, or a zero that is -0 only if both addends are.
        c["bypass"] = r(Mux(k4["mzero"], Cat(Const(0, 15), k4["sd"] & k4["sm"]), k4["mb"]), "byp")

        # The constants each lane stage reads, delayed along with the lanes.
        stages = [c]
        for k in range(1, LANE_STAGES):
            prev = stages[-1]
            nxt = {}
            for n in ("sd", "sticky_y", "base", "floor", "dzero", "bypass"):
                if bf16 and n == "floor":
                    continue
                nxt[n] = reg(m, en, prev[n], name=f"b{b}_{n}_l{k}", reset=False)
            stages.append(nxt)
        return stages

    # --- per element -------------------------------------------------------------------------

    def _element(self, m: Module, en, cs: list[dict], q, name: str):
        """One element pipeline for code ``q``; returns registered ``(value, sat)``."""
        r = lambda v, n: reg(m, en, v, name=f"{name}_{n}", reset=False)  # noqa: E731
        bf16 = self.elem == "bf16"
        c = cs[0]
        q = Cat(q)  # a Const or a 4-bit signal

        # L1: the exact (or floor + sticky) fixed-point sum.
        tj = _pick(c["t"], q[0:2])
        vj = _pick(c["v"], q[2:4])
        s1 = r((tj + vj)[0:SUM].as_signed(), "s")
        byp1 = r((q == 0) | c["dzero"], "byp")

        # L2: floor of |sum|.
        c = cs[1]
        neg = s1[-1]
        mag = r(_negate_if(neg, s1, neg & ~c["sticky_y"])[0:model.SUM_BITS], "v")
        neg2, byp2 = r(neg, "neg2"), r(byp1, "byp2")

        # L3: the window shift is the leading one of the sum (searched only where a non-zero sum
        # can have it), never below the 2**-24 grid. Searched per 8-bit group here; the group
        # picks the coarse shift in L4 and its local index is the fine shift.
        c = cs[2]
        lead_bits = mag[model.LEAD_LO:model.SUM_BITS]
        search = Cat(lead_bits if bf16 else lead_bits | c["floor"], Const(0, 1))
        groups = []
        for k in range(3):
            idx, none = msb_index(m, search[8 * k:8 * k + 8], name=f"{name}_lead{k}")
            groups.append((r(~none, f"any{k}"), r(idx, f"idx{k}")))
        zero = mag[model.LEAD_LO:model.SUM_BITS] == 0
        mag4, zero4, neg4, byp4 = r(mag, "v3"), r(zero, "zero3"), r(neg2, "neg3"), r(byp2, "byp3")

        # L4: coarse shift by 0, 8 or 16 of V << 6 (window bits sh-14 .. sh+10 are V6 bits
        # sh .. sh+24); the FP16 LSB's grid position.
        c = cs[3]
        (any0, idx0), (any1, idx1), (any2, idx2) = groups
        coarse = Cat(~any2 & any1, any2)
        fine = Mux(any2, idx2, Mux(any1, idx1, idx0))
        v6 = Cat(Const(0, 6), mag4, Const(0, 1))
        w1 = r(Mux(coarse[1], v6[16:48], Mux(coarse[0], v6[8:40], v6[0:32])), "w1")
        st1 = r(Mux(coarse[1], v6[0:16].any(), Mux(coarse[0], v6[0:8].any(), 0)), "st1")
        pos5 = r((c["base"] + Cat(fine, coarse))[0:8 if bf16 else 6], "pos4")
        fine5, zero5, neg5, byp5 = (r(v, n) for v, n in ((fine, "fine5"), (zero4, "zero5"),
                                                         (neg4, "neg5"), (byp4, "byp5")))

        # L5: fine shift by 0..7 and the sticky of everything below the guard bit.
        c = cs[4]
        z = r((w1 >> fine5)[0:25], "z")
        below = Signal(8, name=f"{name}_below")
        for k in range(8):
            m.d.comb += below[k].eq(w1[0:k].any() if k else 0)
        st6 = r(below.bit_select(fine5, 1) | st1 | c["sticky_y"], "st6")
        pos6, zero6, neg6, byp6 = (r(v, n) for v, n in ((pos5, "pos6"), (zero5, "zero6"),
                                                        (neg5, "neg6"), (byp5, "byp6")))

        # L6: round to fp32 (24 bits: down to mid's LSB), then that to FP16 (BF16); encode.
        sig_bits = 8 if bf16 else 11
        low = 24 - sig_bits
        sig, rb, mid, gb = z[low + 1:25], z[low], z[1:low], z[0]
        up32 = gb & (st6 | mid[0])
        carry = up32 & mid.all()  # the fp32 round-up ripples into the target's round bit
        inc = Mux(carry, rb | sig[0], rb & (mid.any() | up32 | sig[0]))
        enc = r(((pos6 << (sig_bits - 1)) + sig + inc)[0:17], "enc")
        zero7, neg7, byp7 = r(zero6, "zero7"), r(neg6, "neg7"), r(byp6, "byp7")

        # L7: saturate, pick the zero and bypass cases. BF16 results stay below 2**21.
        c = cs[6]
        sat = Const(0, 1) if bf16 else enc >= 0x7C00
        normal = Cat(Mux(sat, MAX_FINITE, enc[0:15]), neg7)
        value = r(Mux(byp7, c["bypass"], Mux(zero7, 0, normal)), "value")
        satr = r(sat & ~zero7 & ~byp7, "sat")
        return value, satr

    def elaborate(self, platform):
        m = Module()
        en = self.en
        consts = [self._block(m, en, self.d[b], self.m[b], b) for b in range(self.blocks)]
        codes = [delay(m, en, self.codes[i], BLOCK_STAGES, name=f"code{i}", reset=False) for i in range(self.lanes)]
        if not self.table:
            for i in range(self.lanes):
                value, sat = self._element(m, en, consts[i // BLOCK_ELEMS], codes[i], f"e{i}")
                m.d.comb += [self.value[i].eq(value), self.sat[i].eq(sat)]
            return m
        tables = []
        for b in range(self.blocks):
            # Code 0 gives d*0 + m: the bypass value, no arithmetic.
            zero = (delay(m, en, consts[b][LANE_STAGES - 1]["bypass"], 1, name=f"b{b}_k0", reset=False), Const(0, 1))
            entries = [zero] + [self._element(m, en, consts[b], Const(k, 4), f"b{b}_k{k}")
                                for k in range(1, 16)]
            tables.append(entries)
        for i in range(self.lanes):
            entries = tables[i // BLOCK_ELEMS]
            code = delay(m, en, codes[i], LANE_STAGES, name=f"code{i}_l", reset=False)
            value = _pick([e[0] for e in entries], code)
            sat = _pick([e[1] for e in entries], code)
            with m.If(en):
                m.d.sync += [self.value[i].eq(value), self.sat[i].eq(sat)]
        return m


def _complement_if(neg, x):
    """``neg ? ~x : x``, signed, one bit wider than ``x``."""
    x = Value.cast(x)
    wide = Cat(x, x[-1] if x.shape().signed else Const(0, 1)).as_signed()
    return wide ^ neg.replicate(len(wide)).as_signed()


def _negate_if(neg, x, carry_in):
    """``neg ? ~x + carry_in : x`` as one add (the complement folds into the adder's LUTs);
    ``carry_in`` must be 0 whenever ``neg`` is 0."""
    return _complement_if(neg, x) + carry_in


def _pick(options: list, index):
    """``options[index]`` as a balanced mux tree over the bits of ``index``."""
    level = list(options)
    for k in range(len(index)):
        level = [Mux(index[k], level[j + 1], level[j]) for j in range(0, len(level), 2)]
    return level[0]
