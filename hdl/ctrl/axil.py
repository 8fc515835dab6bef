"""AXI4-Lite slave ports as flat component members.

A nested ``s_axil`` interface would reach Verilog as ``s_axil__awaddr`` (Amaranth joins signature
paths with ``__``); flat members give ``s_axil_awaddr``, the names Vivado's interface inference and
cocotbext-axi's ``AxiLiteBus.from_prefix(dut, "s_axil")`` look for, with no wrapper to keep in sync.
"""

from __future__ import annotations

from amaranth.lib.wiring import In, Out

# (channel signal, direction seen from the slave, width or None for the data/address widths)
_SIGNALS = (
    ("awaddr", In, "addr"), ("awvalid", In, 1), ("awready", Out, 1),
    ("wdata", In, "data"), ("wstrb", In, "strb"), ("wvalid", In, 1), ("wready", Out, 1),
    ("bresp", Out, 2), ("bvalid", Out, 1), ("bready", In, 1),
    ("araddr", In, "addr"), ("arvalid", In, 1), ("arready", Out, 1),
    ("rdata", Out, "data"), ("rresp", Out, 2), ("rvalid", Out, 1), ("rready", In, 1),
)


def axil_slave_members(addr_width: int, data_width: int = 32, prefix: str = "s_axil") -> dict:
    widths = {"addr": addr_width, "data": data_width, "strb": data_width // 8}
    return {f"{prefix}_{name}": direction(widths.get(width, width)) for name, direction, width in _SIGNALS}


class AxiLitePort:
    """The flat members of ``component`` under ``prefix``, by their AXI names (``port.awaddr``)."""

    def __init__(self, component, prefix: str = "s_axil"):
        for name, _, _ in _SIGNALS:
            setattr(self, name, getattr(component, f"{prefix}_{name}"))
