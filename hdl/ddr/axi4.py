"""AXI4 master port signatures (flow seen from the master).

A component exposes ``axi: Out(AXI4Signature(...))``; Amaranth flattens it to ``axi__awaddr`` etc.
in Verilog, which is what cocotbext-axi's ``AxiBus.from_prefix(dut, "axi_")`` looks for. Member
names are the AXI names with no prefix so that code reads like the specification (``axi.awvalid``).

Three variants share one member table: write-only (AW, W, B), read-only (AR, R) and full. The
write and read channel sets are disjoint, so a writer and a reader can share one full HP port
(:func:`connect_split`): AXI allows the write and read halves of a master to be independent.

Left out on purpose: AxUSER/WUSER/RUSER/BUSER and AxREGION (the Zynq HP ports have no user
signals and one region), WID (AXI3 only; the PS converts AXI4 to AXI3 itself).
"""

from __future__ import annotations

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AXI4Signature", "connect_split", "RESP_OKAY", "RESP_EXOKAY", "RESP_SLVERR", "RESP_DECERR",
           "BURST_INCR"]

RESP_OKAY, RESP_EXOKAY, RESP_SLVERR, RESP_DECERR = 0, 1, 2, 3
BURST_INCR = 0b01

# (name, direction seen from the master, width: int or the name of a parameter)
_AW = (("awid", Out, "id"), ("awaddr", Out, "addr"), ("awlen", Out, 8), ("awsize", Out, 3),
       ("awburst", Out, 2), ("awlock", Out, 1), ("awcache", Out, 4), ("awprot", Out, 3),
       ("awqos", Out, 4), ("awvalid", Out, 1), ("awready", In, 1))
_W = (("wdata", Out, "data"), ("wstrb", Out, "strb"), ("wlast", Out, 1), ("wvalid", Out, 1),
      ("wready", In, 1))
_B = (("bid", In, "id"), ("bresp", In, 2), ("bvalid", In, 1), ("bready", Out, 1))
_AR = (("arid", Out, "id"), ("araddr", Out, "addr"), ("arlen", Out, 8), ("arsize", Out, 3),
       ("arburst", Out, 2), ("arlock", Out, 1), ("arcache", Out, 4), ("arprot", Out, 3),
       ("arqos", Out, 4), ("arvalid", Out, 1), ("arready", In, 1))
_R = (("rid", In, "id"), ("rdata", In, "data"), ("rresp", In, 2), ("rlast", In, 1), ("rvalid", In, 1),
      ("rready", Out, 1))

WRITE_CHANNELS = _AW + _W + _B
READ_CHANNELS = _AR + _R


class AXI4Signature(wiring.Signature):
    """An AXI4 master port: ``write`` selects AW/W/B, ``read`` selects AR/R.

    ``data_width`` is in bits (a power of two, 8 to 1024); ``id_width`` >= 1 (cocotbext-axi needs
    the ID signals to exist even when the IDs are constant).
    """

    def __init__(self, *, addr_width: int = 40, data_width: int = 128, id_width: int = 1,
                 write: bool = True, read: bool = True):
        if not (write or read):
            raise ValueError("an AXI4 port needs the write channels, the read channels or both")
        if data_width < 8 or data_width > 1024 or data_width & (data_width - 1):
            raise ValueError(f"data_width must be a power of two from 8 to 1024, got {data_width}")
        if not 12 <= addr_width <= 64:
            raise ValueError(f"addr_width must be 12..64 (bursts are checked against 4 KiB pages), got {addr_width}")
        if id_width < 1:
            raise ValueError("id_width must be >= 1")
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        self.write, self.read = write, read
        widths = {"addr": addr_width, "data": data_width, "strb": data_width // 8, "id": id_width}
        table = (WRITE_CHANNELS if write else ()) + (READ_CHANNELS if read else ())
        super().__init__({name: direction(widths.get(w, w)) for name, direction, w in table})

    def __eq__(self, other):
        return (type(other) is type(self) and
                (self.addr_width, self.data_width, self.id_width, self.write, self.read) ==
                (other.addr_width, other.data_width, other.id_width, other.write, other.read))

    def __hash__(self):
        return hash((self.addr_width, self.data_width, self.id_width, self.write, self.read))

    def __repr__(self):
        kind = {(True, True): "", (True, False): ", write only", (False, True): ", read only"}
        return (f"AXI4Signature(addr={self.addr_width}, data={self.data_width}, id={self.id_width}"
                f"{kind[(self.write, self.read)]})")


def connect_split(m, port, *, write=None, read=None):
    """Drive the full master ``port`` from a write-only and/or a read-only master interface.

    ``port`` is the shared master (for instance a component's ``Out(AXI4Signature())`` member);
    ``write``/``read`` are the movers' ``axi`` members. A half given as None is tied off (VALIDs
    and READYs low), so an unused half never hangs the interconnect.
    """
    for table, src in ((WRITE_CHANNELS, write), (READ_CHANNELS, read)):
        for name, direction, _ in table:
            outer = getattr(port, name)
            if src is None:
                if direction is Out:
                    m.d.comb += outer.eq(0)
            elif direction is Out:
                m.d.comb += outer.eq(getattr(src, name))
            else:
                m.d.comb += getattr(src, name).eq(outer)
