"""Small building blocks of the dequantizer's enable-gated pipelines.

Every datapath register in the dequantizer loads only when the pipeline enable is high, so a stalled
output freezes the whole pipeline in place and no unit needs handshakes. Datapath registers have no
reset: their contents are don't-care until a valid bit (which does reset) says otherwise.
"""

from amaranth.hdl import Cat, Const, Module, Signal, Value


def reg(m: Module, en, value, name: str | None = None) -> Signal:
    """``value`` registered when ``en`` is high."""
    value = Value.cast(value)
    r = Signal(value.shape(), name=name, reset_less=True)
    with m.If(en):
        m.d.sync += r.eq(value)
    return r


def delay(m: Module, en, value, cycles: int, name: str = "dly") -> Value:
    """``value`` as it was ``cycles`` enabled cycles ago."""
    for k in range(cycles):
        value = reg(m, en, value, name=f"{name}_{k}")
    return Value.cast(value)


def msb_index(m: Module, value, name: str = "lead") -> tuple[Signal, Signal]:
    """Index of the leading one of ``value`` and a flag that ``value`` is zero (index 0 then)."""
    value = Value.cast(value)
    width = len(value)
    idx = Signal(range(max(2, width)), name=name)
    zero = Signal(name=f"{name}_zero")
    m.d.comb += zero.eq(value == 0)
    for bit in range(width):  # later assignments win: the highest set bit
        with m.If(value[bit]):
            m.d.comb += idx.eq(bit)
    return idx, zero


def prefix_or(value) -> list[Value]:
    """``out[k] = OR(value[0:k])`` for k = 0..len(value)."""
    value = Value.cast(value)
    out = [Const(0, 1)]
    for k in range(len(value)):
        out.append(out[-1] | value[k])
    return out


def select(index, options: list) -> Value:
    """``options[index]`` for 1-bit options, as a mux tree (an index past the end reads 0)."""
    return Cat(*options, Const(0, 1)).bit_select(index, 1)
