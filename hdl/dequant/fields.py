"""FP16 scale fields as the dequantizer reads them: sanitizing and decoding.

A block's ``d`` (and q4_1's ``m``) may hold any bit pattern, including Inf and NaN from a corrupt or
foreign cache image. kvpath's rule replaces them before use: +/-Inf -> +/-65504, NaN -> +0, and
counts each replaced field.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data

from kvpath.golden.ggml.dequant_steps import BF16_POS
from kvpath.hdl.lib.bits import msb_index

MAX_FINITE = 0x7BFF


class Fields(data.Struct):
    """A sanitized FP16 field: ``value = (-1)**s * sig * 2**(g - 24)``.

    ``g = max(e, 1) - 1`` puts every FP16 value on the 2**-24 grid, normal or subnormal alike.
    """

    s: 1
    sig: 11
    g: 5


def sanitize(m: Module, bits) -> tuple[Value, Value]:
    """``(sanitized bits, non-finite flag)`` of a 16-bit FP16 pattern."""
    bits = Value.cast(bits)
    nonfinite = bits[10:15].all()
    nan = nonfinite & bits[0:10].any()
    clean = Signal(16)
    m.d.comb += clean.eq(Mux(nan, 0, Mux(nonfinite, Cat(Const(MAX_FINITE, 15), bits[15]), bits)))
    return clean, nonfinite


def decode(m: Module, bits) -> Fields:
    """Fields of a sanitized FP16 pattern."""
    bits = Value.cast(bits)
    f = Signal(Fields)
    e = bits[10:15]
    normal = e.any()
    m.d.comb += [
        f.s.eq(bits[15]),
        f.sig.eq(Cat(bits[0:10], normal)),
        f.g.eq(Mux(normal, e - 1, 0)),
    ]
    return f


def fraction_lead(m: Module, bits, name: str = "norm") -> Signal:
    """Index of the leading one of an FP16 pattern's fraction: ``normalize``'s shift, searched one
    stage ahead so that search and shift do not stack up in one clock."""
    lead, _ = msb_index(m, Value.cast(bits)[0:10], name=f"{name}_lead")
    return lead


def normalize(m: Module, bits, lead, name: str = "norm") -> tuple[Signal, Signal]:
    """``(sig_n, pos)`` of a sanitized FP16 pattern for BF16 output: ``sig_n`` in [1024, 2048) (0 for
    zero) and ``pos`` the BF16 exponent field minus one, so ``|value| = sig_n * 2**(pos - BF16_POS - 24)``.
    ``lead`` is ``fraction_lead(bits)``.

    FP16 subnormals are normal in BF16: the fraction is shifted up until its leading one reaches
    bit 10 and the exponent is lowered by as much. Normal and subnormal are computed side by side
    from the raw bits and picked by the exponent field.
    """
    bits = Value.cast(bits)
    frac, e = bits[0:10], bits[10:15]
    normal = e.any()
    sig_n = Signal(11, name=f"{name}_sig")
    pos = Signal(8, name=f"{name}_pos")
    m.d.comb += [
        sig_n.eq(Mux(normal, Cat(frac, Const(1, 1)), ((frac << 10) >> lead)[0:11])),
        # Normal: g = e - 1 with the leading one at bit 10; subnormal: g = 0, leading one at ``lead``.
        pos.eq(Mux(normal, e + (BF16_POS - 1), lead + (BF16_POS - 10))),
    ]
    return sig_n, pos
