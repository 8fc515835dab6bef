"""Small building blocks of the dequantizer's enable-gated pipelines.

Every datapath register in the dequantizer loads only when the pipeline enable is high, so a stalled
output freezes the whole pipeline in place and no unit needs handshakes. Datapath registers have no
reset: their contents are don't-care until a valid bit (which does reset) says otherwise.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value


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
    """Index of the leading one of ``value`` and a flag that ``value`` is zero (index 0 then).

    Built as a balanced tree over power-of-two halves (an if-chain would hand synthesis a priority
    chain as long as ``value``): the index's top bit says whether the upper half has a one, the
    rest come from that half or the lower one.
    """
    value = Value.cast(value)
    width = 1 << max(1, (len(value) - 1).bit_length())
    idx, zero = _msb_tree(Cat(value, Const(0, width - len(value))))
    out_idx = Signal(range(width), name=name)
    out_zero = Signal(name=f"{name}_zero")
    m.d.comb += [out_idx.eq(idx), out_zero.eq(zero)]
    return out_idx, out_zero


def _msb_tree(value) -> tuple[Value, Value]:
    if len(value) == 2:
        return value[1], ~value.any()
    half = len(value) // 2
    lo_idx, lo_zero = _msb_tree(value[:half])
    hi_idx, hi_zero = _msb_tree(value[half:])
    return Cat(Mux(hi_zero, lo_idx, hi_idx), ~hi_zero), lo_zero & hi_zero


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
