"""A pipelined non-restoring integer divider with a fixed latency and no handshake.

Floating-point formats need correctly rounded quotients; digit-by-digit division yields the exact
quotient and remainder, from which guard and sticky bits follow directly, where an approximate
reciprocal would need a further correction step to become exact.
"""

from math import ceil

from amaranth.hdl import Cat, Const, EnableInserter, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from kvpath.hdl.lib.bits import lookup

__all__ = ["Divider"]


class Divider(wiring.Component):
    """``quot = num // den`` and ``rem = num % den``, valid when ``num < den << quot_bits``.

    The quotient is produced MSB first, ``steps_per_stage`` bits per pipeline stage, so the latency
    is ``ceil(quot_bits / steps_per_stage)`` enabled cycles; registers update only when ``en`` is
    high.

    Either operand may be an int instead of a port (``num=`` / ``den=``): a constant divisor
    narrows every step to the divisor's width, and a constant dividend needs no pipeline registers.
    Feeding constants through the ports instead would keep both costs, because the pipeline
    registers reset to zero and so are not constant to the synthesizer.
    Results are unspecified when ``num >= den << quot_bits`` or ``den == 0``.

    The pipeline registers have a synchronous reset that nothing relies on, so that synthesis
    keeps the quotient's delay chains in flip-flops rather than shift-register LUTs.
    """

    def __init__(self, num_bits: int, den_bits: int, quot_bits: int, *, steps_per_stage: int = 1,
                 num: int | None = None, den: int | None = None):
        if steps_per_stage < 1 or quot_bits < 1 or num_bits < quot_bits:
            raise ValueError("need steps_per_stage >= 1 and 1 <= quot_bits <= num_bits")
        if num is not None and not 0 <= num < 1 << num_bits:
            raise ValueError(f"constant dividend {num} does not fit {num_bits} bits")
        if den is not None and not 0 < den < 1 << den_bits:
            raise ValueError(f"constant divisor {den} does not fit {den_bits} bits")
        self.num_bits, self.den_bits, self.quot_bits = num_bits, den_bits, quot_bits
        self.steps_per_stage = steps_per_stage
        self.num_const, self.den_const = num, den
        self.latency = self.stages(quot_bits, steps_per_stage)
        members = {"en": In(1), "quot": Out(quot_bits), "rem": Out(den_bits)}
        if num is None:
            members["num"] = In(num_bits)
        if den is None:
            members["den"] = In(den_bits)
        super().__init__(members)

    @staticmethod
    def stages(quot_bits: int, steps_per_stage: int) -> int:
        """The latency of a divider producing ``quot_bits`` bits, without building one."""
        return ceil(quot_bits / steps_per_stage)

    def elaborate(self, platform):
        m = Module()
        qb, db = self.quot_bits, self.den_bits
        num = Const(self.num_const, self.num_bits) if self.num_const is not None else self.num
        den = Const(self.den_const, db) if self.den_const is not None else self.den

        # Non-restoring form: the partial remainder R lies in [-den, den) and each step computes
        # 2R + bit -+ den by R's sign, which equals the restoring divider's trial subtraction;
        # the quotient bit is that result's sign. Choosing the operand by sign folds into the
        # adder's per-bit LUT, where a restoring divider also needs a LUT per bit for its mux.
        w = db + 2  # 2R + bit in [-2 den, 2 den)
        top = num[qb:]
        rem = Cat(top[:db] if len(top) > db else top, Const(0, 2)).as_signed()
        rem = rem[:w].as_signed() if len(rem) > w else rem
        pending = [num[i] for i in reversed(range(qb))]  # dividend bits still to shift in
        quot = []  # MSB first
        # A small constant divisor makes each step a function of few bits: a LUT6 then takes
        # the remainder and as many dividend bits as fit, with no carry chain at all.
        group = 6 - db if self.den_const is not None and db < 6 else 0
        for stage in range(self.latency):
            left = min(self.steps_per_stage, len(pending))
            while left:
                if group:
                    g = min(group, left)
                    rem, bits = self._table_steps(m, [pending.pop(0) for _ in range(g)], rem,
                                                  len(quot))
                    quot.extend(bits)
                    left -= g
                    continue
                trial = Cat(pending.pop(0), rem[:w - 1])  # 2R + bit, w bits two's complement
                neg = rem[w - 1] if len(rem) >= w else Const(0, 1)
                step = Signal(signed(w), name=f"rem{len(quot)}")
                # trial - den = trial + ~den + 1; trial + den: flip den's bits and the carry-in.
                flip = Cat(*([~neg] * w))
                m.d.comb += step.eq((trial + (Cat(den, Const(0, 2)) ^ flip) + ~neg)[:w])
                rem = step
                quot.append(~step[w - 1])
                left -= 1
            rem_r = Signal(signed(w), name=f"rem_s{stage}")
            quot_r = Signal(unsigned(len(quot)), name=f"quot_s{stage}")
            m.d.sync += [rem_r.eq(rem), quot_r.eq(Cat(*reversed(quot)))]
            rem = rem_r
            quot = [quot_r[i] for i in reversed(range(len(quot)))]
            if pending and self.num_const is None:
                low_r = Signal(unsigned(len(pending)), name=f"num_s{stage}")
                m.d.sync += low_r.eq(Cat(*reversed(pending)))
                pending = [low_r[i] for i in reversed(range(len(pending)))]
            if self.den_const is None and (pending or stage == self.latency - 1):
                den_r = Signal(unsigned(db), name=f"den_s{stage}")
                m.d.sync += den_r.eq(den)
                den = den_r
        # A negative final remainder is the restoring one minus den.
        m.d.comb += [self.quot.eq(Cat(*reversed(quot))),
                     self.rem.eq(Mux(rem[w - 1], rem + den, rem)[:db])]
        return EnableInserter({"sync": self.en})(m)

    def _table_steps(self, m, bits, rem, index):
        """``len(bits)`` restoring steps by a divisor constant, as one lookup table.

        Returns the new remainder, kept non-negative and ``w`` bits wide like the
        non-restoring one, and the quotient bits MSB first.
        """
        db, den, g = self.den_bits, self.den_const, len(bits)
        w = db + 2
        table = []
        for key in range(1 << (db + g)):
            r, q = key >> g, 0
            for i in reversed(range(g)):
                r = 2 * r + (key >> i & 1)
                q = 2 * q + (r >= den)
                r -= den if r >= den else 0
            table.append(r | q << db)  # remainders >= den are unreachable; the entry is harmless
        out = Signal(db + g, name=f"tab{index}")
        m.d.comb += out.eq(lookup(Cat(*reversed(bits), rem[:db]), table, db + g))
        new_rem = Signal(signed(w), name=f"rem{index + g - 1}")
        m.d.comb += new_rem.eq(out[:db])
        return new_rem, [out[db + i] for i in reversed(range(g))]
