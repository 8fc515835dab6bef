"""Pipeline registers: the one helper every enable-gated datapath in hdl/ builds its stages with.

A datapath register loads only on cycles its stage enable is high, so a stalled output freezes the
whole pipeline in place and no unit needs handshakes. ``en=None`` means every cycle: for modules
whose enable comes from an ``EnableInserter`` around them.

**Reset policy** -- every register states it (``reset=``, or the ``Pipe`` that makes it):

* ``reset=False``: no reset. For datapath contents, which mean nothing until a valid bit (which
  does reset) says otherwise. The cheapest register; synthesis may pack a chain of them into a
  shift-register LUT (SRL).
* ``reset=True``: synchronous reset to the init value. For valid bits and state; and for datapath
  registers where a chain of three or more would otherwise become SRL LUTs, because LUTs, not
  flip-flops, are the scarce resource on the XCK26 (the quantizers' datapaths use it throughout).

A register takes the value's shape as a plain value unless ``shape`` is given (pass a ``lib.data``
layout there to keep field access on the register), and the name it is given: stage prefixes (``s4_``, ``d_``...) in the names are how the
pipelines are read in waveforms and in the generated Verilog.
"""

from amaranth.hdl import Module, Signal, Value


def reg(m: Module, en, value, name: str | None = None, *, reset: bool, shape=None) -> Signal:
    """``value`` registered on the enabled cycles of ``sync``."""
    value = Value.cast(value)
    r = Signal(value.shape() if shape is None else shape, name=name, reset_less=not reset)
    if en is None:
        m.d.sync += r.eq(value)
    else:
        with m.If(en):
            m.d.sync += r.eq(value)
    return r


def delay(m: Module, en, value, cycles: int, name: str = "dly", *, reset: bool,
          names: str = "{name}_{k}", shape=None):
    """``value`` as it was ``cycles`` enabled cycles ago; register ``k`` (from 0) is named
    ``names.format(name=name, k=k, k1=k + 1)``."""
    for k in range(cycles):
        value = reg(m, en, value, names.format(name=name, k=k, k1=k + 1), reset=reset, shape=shape)
    return value


class Pipe:
    """``reg`` and ``delay`` bound to one module, one enable and one reset policy: for units whose
    every register shares them."""

    def __init__(self, m: Module, en, *, reset: bool, delay_names: str = "{name}_{k}"):
        self.m, self.en, self.reset, self.delay_names = m, en, reset, delay_names

    def reg(self, value, name: str, shape=None) -> Signal:
        return reg(self.m, self.en, value, name, reset=self.reset, shape=shape)

    def delay(self, value, cycles: int, name: str, shape=None):
        return delay(self.m, self.en, value, cycles, name, reset=self.reset, names=self.delay_names,
                     shape=shape)
