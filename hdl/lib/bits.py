"""Bit-level helpers the datapaths share: leading-one and leading-zero search, prefix ORs, dropped-bit
flags, mux selection and adder trees, each built for a short logic depth on 6-input LUTs."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value


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


def leading_zeros(m: Module, value, width: int) -> Signal:
    """Count of leading zeros of ``value[:width]`` (``width`` when it is zero)."""
    # A Mux chain, not If assignments: those become an always block that Icarus never runs while
    # its inputs keep their time-0 values (a constant first block then gave unknown bits).
    count = Const(width, range(width + 1))
    for bit in range(width):  # later (higher) bits take priority
        count = Mux(value[bit], width - 1 - bit, count)
    lz = Signal(range(width + 1))
    m.d.comb += lz.eq(count)
    return lz


def lookup(index, entries: list, width: int) -> Value:
    """``entries[index]`` as ``width``-bit words, 0 past the end (as an ``Array`` read gives). Ints
    become one constant, values one concatenation, read by a word select: an ``Array`` or a
    Switch becomes a case statement in an always block, which Icarus never runs while its inputs
    keep their time-0 values (tests/top/test_generated_verilog.py)."""
    index = Value.cast(index)
    pad = (1 << len(index)) - len(entries)
    if all(isinstance(e, int) for e in entries):
        words = Const(sum(e << (width * k) for k, e in enumerate(entries)), width * (len(entries) + pad))
    else:
        words = Cat(*entries, *([Const(0, width * pad)] if pad else []))
    return words.word_select(index, width)


def any_below(value, n):
    """Whether any of ``value``'s ``n`` lowest bits is set, as one OR of ``value[k] & (n > k)``:
    the bits a right shift by ``n`` drops. Prefix ORs selected by ``n`` map to a chain of LUTs
    one level per bit, and a mask ``(1 << n) - 1`` puts a carry chain and an AND before the OR."""
    return Cat(*[value[k] & (n > k) for k in range(len(value))]).any()


def tree_sum(values):
    """Sum of ``values`` as a balanced tree of adds."""
    while len(values) > 1:
        values = [values[k] + values[k + 1] if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
    return values[0]
