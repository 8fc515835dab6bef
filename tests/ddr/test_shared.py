"""A writer and a reader on one full AXI4 port (hdl/ddr/axi4.py connect_split), on Icarus."""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from kvpath.hdl.ddr.axi4 import AXI4Signature, connect_split
from kvpath.hdl.ddr.reader import BurstReader
from kvpath.hdl.ddr.writer import BurstWriter
from tests.ddr.support import run


class SharedPort(wiring.Component):
    """The shape of the DDR engine's port: one full HP master, the writer on AW/W/B, the reader on
    AR/R."""
    def __init__(self):
        self.w, self.r = BurstWriter(), BurstReader()
        super().__init__({
            "w_cmd": In(stream.Signature(self.w.cmd_layout)),
            "w_data": In(stream.Signature(self.w.data_layout)),
            "w_done": Out(stream.Signature(self.w.done_layout)),
            "w_drain": In(1),
            "r_cmd": In(stream.Signature(self.r.cmd_layout)),
            "r_data": Out(stream.Signature(self.r.data_layout)),
            "r_drain": In(1),
            "axi": Out(AXI4Signature()),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.w, m.submodules.r = self.w, self.r
        wiring.connect(m, wiring.flipped(self.w_cmd), self.w.cmd)
        wiring.connect(m, wiring.flipped(self.w_data), self.w.data)
        wiring.connect(m, self.w.done, wiring.flipped(self.w_done))
        wiring.connect(m, wiring.flipped(self.r_cmd), self.r.cmd)
        wiring.connect(m, self.r.data, wiring.flipped(self.r_data))
        m.d.comb += [self.w.drain.eq(self.w_drain), self.r.drain.eq(self.r_drain)]
        connect_split(m, self.axi, write=self.w.axi, read=self.r.axi)
        return m


def test_shared_port(build_root):
    run(SharedPort(), "kvpath_shared", "tb_shared", "icarus", build_root / "shared")


def test_signature_variants():
    full, wo, ro = AXI4Signature(), AXI4Signature(read=False), AXI4Signature(write=False)
    assert set(wo.members.keys()) | set(ro.members.keys()) == set(full.members.keys())
    assert not set(wo.members.keys()) & set(ro.members.keys())
    assert full == AXI4Signature() and full != wo
    assert BurstWriter().signature.members["axi"].signature == wo
