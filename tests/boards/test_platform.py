"""The Amaranth platform: part mapping and the fan, checked without Vivado."""

from amaranth import Elaboratable, Module, Signal
from amaranth.back import verilog
from amaranth.lib import io

from kvpath.boards.kv260.platform import KV260Platform
from kvpath.boards.kv260.ports import parse_verilog_ports


def test_part_and_family():
    p = KV260Platform()
    assert p.family == "ultrascaleplus"       # amaranth's own mapping of the xck26 device
    assert p.toolchain == "Vivado"
    assert p._part == p.part == "xck26-sfvc784-2LV-c"
    assert p.default_clk is None               # the PL clock is the PS's pl_clk0


def test_fan_resource():
    pin, attrs, active_low = KV260Platform().fan_constraints()
    assert (pin, active_low) == ("A12", True)
    assert attrs["IOSTANDARD"] == "LVCMOS33"


class _FanOn(Elaboratable):
    def elaborate(self, platform):
        m = Module()
        m.submodules.fan = fan = io.Buffer("o", platform.request("fan", 0, dir="-"))
        m.d.comb += fan.o.eq(1)
        return m


class _FakeTop(Elaboratable):
    """A few kvpath_axi_top ports, to see what Amaranth's Verilog looks like to the port parser."""

    def __init__(self):
        self.aclk = Signal()
        self.s_axil_wdata = Signal(32)
        self.m_axi0_araddr = Signal(40)
        self.irq = Signal()

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.m_axi0_araddr.eq(self.s_axil_wdata), self.irq.eq(self.s_axil_wdata[0])]
        return m


def test_amaranth_plans_a_vivado_build_without_running_it():
    plan = KV260Platform().build(_FanOn(), name="fan_only", do_build=False)
    assert "create_project -force -name fan_only -part xck26-sfvc784-2LV-c" in plan.files["fan_only.tcl"]
    xdc = plan.files["fan_only.xdc"]
    assert "set_property LOC A12" in xdc and 'IOSTANDARD "LVCMOS33"' in xdc
    # PinsN: "fan on" (logical 1) must reach the active-low pin inverted
    assert ".o(1'h0)" in plan.files["fan_only.v"]


def test_port_parser_reads_amaranth_verilog():
    top = _FakeTop()
    text = verilog.convert(top, name="kvpath_axi_top",
                           ports=[top.s_axil_wdata, top.m_axi0_araddr, top.irq])
    ports = {p.name: (p.direction, p.width) for p in parse_verilog_ports(text)}
    assert ports == {"s_axil_wdata": ("input", 32), "m_axi0_araddr": ("output", 40), "irq": ("output", 1)}
