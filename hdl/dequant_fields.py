"""FP16 scale fields as the dequantizer reads them: sanitizing and decoding.

A block's ``d`` (and q4_1's ``m``) may hold any bit pattern, including Inf and NaN from a corrupt or
foreign cache image. kvpath's rule replaces them before use: +/-Inf -> +/-65504, NaN -> +0, and
counts each replaced field.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data

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
