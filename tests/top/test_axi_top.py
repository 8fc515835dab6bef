"""The flat Vivado top ``kvpath_axi_top`` (hdl/top/axi_top.py).

* Its Verilog header against what ``KVCacheTop``'s signature and the stream layouts
  (``kv_layout``, ``out_layout``) say the flat ports must be, name by name, with direction and width.
* The same ports against the KV260 board contract (boards/kv260/ports.py) and through the
  block-design TCL under the Vivado stubs (tests/boards/support.py).
* A cocotb smoke run on Icarus through the flat names only: ``aresetn`` held low and released,
  registers over AXI-Lite, two tokens of K/V vectors, READs on both read ports, all checked
  against the golden model with the KV cache testbench's helpers (sim/top/tb_kvcache.py). The
  cocotb tests live in this module (``test_module="tests.top.test_axi_top"``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time

import cocotb
import pytest
from amaranth.hdl import Shape
from amaranth.lib import data, stream, wiring
from cocotb.triggers import ClockCycles, RisingEdge

from kvpath import layout
from kvpath.boards.kv260 import ports as board
from kvpath.boards.kv260 import vivado_tcl
from kvpath.boards.kv260.params import BoardParams
from kvpath.boards.kv260.ports import check_contract, parse_verilog_ports, reference_ports
from kvpath.config import KVPathConfig
from kvpath.hdl.ddr.axi4 import AXI4Signature
from kvpath.hdl.ddr.engine import kv_layout
from kvpath.hdl.ddr.read_port import out_layout
from kvpath.hdl.generate import MODULES, write_verilog
from kvpath.hdl.static.write_port import ScaleWrite
from kvpath.hdl.top import axi_top
from kvpath.hdl.top.axi_top import RESET_STAGES, KVPathAxiTop
from kvpath.sim.lib.runner import run_cocotb
from kvpath.sim.top.tb_kvcache import TB, default_cache

SEED = int(os.environ.get("KVPATH_SEED", "1"))
TOP = MODULES["axi_top"]
# Two layers (one per policy class), two KV heads, head_dim 64, two read ports (so m_axi1 and
# m_axis_kv1 exist and are driven).
CONFIG = KVPathConfig(fmt="q8_0", max_layers=2, max_kv_heads=2, max_head_dim=64, kv_max_tokens=16,
                      read_ports=2)


# --- ports ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generated(build_root):
    """(KVPathAxiTop(CONFIG), the Verilog file it was converted to)."""
    top = KVPathAxiTop(CONFIG)
    return top, write_verilog(top, TOP, build_root / "axi_top" / f"{TOP}.v")


def expected_ports(top: KVPathAxiTop) -> dict[str, tuple[str, int]]:
    """name -> (direction, width) from the engine's own signature and layouts, by the naming rules of
    docs/kv260.md (not from the flat top's code)."""
    c = top.config
    direction = {wiring.Flow.In: "input", wiring.Flow.Out: "output"}
    ports = {"aclk": ("input", 1), "aresetn": ("input", 1),
             "s_axil_awprot": ("input", 3), "s_axil_arprot": ("input", 3)}
    streams = {}
    for name, member in top.kvcache.signature.members.items():
        if member.is_port:
            width = 16 if name in ("s_axil_awaddr", "s_axil_araddr") else Shape.cast(member.shape).width
            ports[name] = (direction[member.flow], width)
        elif isinstance(member.signature, stream.Signature):
            prefix = "s_axis_" if member.flow == wiring.Flow.In else "m_axis_"
            flat = name if name.startswith(("s_axis_", "m_axis_")) else prefix + name
            shape = member.signature.members["payload"].shape
            streams[flat] = shape
            fwd, back = direction[member.flow], direction[member.flow.flip()]
            if isinstance(shape, data.StructLayout) and set(dict(shape)) == {"data", "user", "last"}:
                for field, axis in (("data", "tdata"), ("user", "tuser"), ("last", "tlast")):
                    ports[f"{flat}_{axis}"] = (fwd, shape[field].width)
            else:
                ports[f"{flat}_tdata"] = (fwd, Shape.cast(shape).width)
            ports[f"{flat}_tvalid"] = (fwd, 1)
            ports[f"{flat}_tready"] = (back, 1)
        else:
            assert isinstance(member.signature, AXI4Signature), name
            for sig, sub in member.signature.members.items():
                assert member.flow == wiring.Flow.Out, name
                ports[f"{name}_{sig}"] = (direction[sub.flow], Shape.cast(sub.shape).width)
    # The layouts the brief names: K/V in, dequantized rows out.
    assert streams["s_axis_kv"] == kv_layout(c)
    assert all(streams[f"m_axis_kv{p}"] == out_layout(c) for p in range(c.read_ports))
    return ports


def test_verilog_ports_follow_the_signature(generated):
    top, verilog = generated
    got = {p.name: (p.direction, p.width) for p in parse_verilog_ports(verilog.read_text(), TOP)}
    want = expected_ports(top)
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    wrong = {n: (got[n], want[n]) for n in set(got) & set(want) if got[n] != want[n]}
    assert not missing and not extra and not wrong, (
        f"{TOP}: missing {missing}, unexpected {extra}, (got, want) {wrong}")
    # And the component's own signature says the same (no port added by the conversion).
    sig = {n: ("input" if m.flow == wiring.Flow.In else "output", Shape.cast(m.shape).width)
           for n, m in top.signature.members.items()}
    assert sig == got
    # A few spot checks of the rules on this configuration.
    assert got["s_axis_kv_tdata"] == ("input", 16 * CONFIG.quant_lanes)
    assert got["m_axis_kv1_tuser"] == ("output", 33)            # read_tag: pos (32), error
    assert got["s_axis_cmd_tdata"] == ("input", 64)
    assert got["m_axi1_araddr"] == ("output", CONFIG.addr_width) and "m_axi1_awaddr" not in got


def test_ports_meet_the_kv260_contract(generated, tmp_path):
    from tests.boards.support import require_tool, run_stub
    from tests.boards.test_vivado_tcl import port_counts

    _, verilog = generated
    # The board flow writes the generator's names down again (it imports no other part of kvpath).
    assert (board.TOP, board.CLOCK, board.RESET, board.AXIL_ADDR_WIDTH) == \
        (TOP, axi_top.CLOCK, axi_top.RESET, axi_top.AXIL_ADDR_WIDTH)
    ports = parse_verilog_ports(verilog.read_text(), TOP)
    check_contract(ports, CONFIG.read_ports)
    # The written-down contract has the same ports, in the same directions.
    ref = {(p.name, p.direction) for p in reference_ports(CONFIG.read_ports)}
    assert ref == {(p.name, p.direction) for p in ports}
    # The block-design TCL built from the real ports runs to the end under the stubs, and connects
    # every port once.
    require_tool("tclsh", "tcl")
    tcl = vivado_tcl.generate_tcl(BoardParams(n_masters=CONFIG.read_ports), ports, [f"rtl/{TOP}.v"])
    run = run_stub(tmp_path, tcl, ports)
    assert run.rc == 0, run.stderr
    counts = port_counts(run, ports)
    assert {k: v for k, v in counts.items() if v != 1} == {}


def test_generate_refuses_the_top_for_formats_the_engine_lacks(tmp_path):
    """``engine_top=True`` passes the engine's reason on (``kvpath build``): here a bus wider than
    the format's blocks, which the engine does not support; by default ``kvpath generate`` then just
    writes no kvpath_axi_top."""
    from kvpath.hdl.generate import generate

    with pytest.raises(NotImplementedError, match="byte bus"):
        generate(KVPathConfig(fmt="q4_0", bus_bytes=32, max_layers=2), tmp_path / "refused", engine_top=True)
    assert not (tmp_path / "refused").exists()


# --- cocotb smoke run ----------------------------------------------------------------------------

def test_icarus_smoke(generated, build_root):
    _, verilog = generated
    build_dir = build_root / "axi_top_icarus"
    start = time.perf_counter()
    times = run_cocotb(verilog=verilog, toplevel=TOP, test_module="tests.top.test_axi_top", simulator="icarus",
                       build_dir=build_dir, quiet=True,
                       extra_env={"KVPATH_KVC_CONFIG": json.dumps(dataclasses.asdict(CONFIG)),
                                  "KVPATH_SEED": str(SEED), "KVPATH_KVC_PAUSES": "mixed"})
    print(f"{TOP} icarus seed={SEED}: build {times['build_s']:.1f} s, run {times['run_s']:.1f} s, "
          f"total {time.perf_counter() - start:.1f} s")


class _AresetnAsRst:
    """``aresetn`` as the active-high ``rst`` that ``TB.reset`` drives and the stream sources read
    (X counts as reset)."""

    def __init__(self, aresetn):
        self.aresetn = aresetn

    @property
    def value(self) -> bool:
        v = self.aresetn.value
        return not v.is_resolvable or not v

    @value.setter
    def value(self, rst) -> None:
        self.aresetn.value = 0 if rst else 1


class _Payload:
    """A stream payload spread over ``tdata``/``tuser``/``tlast`` by its layout's field offsets
    (worked out here, not with the top's ``axis_fields``): reads and writes the packed integer the
    lib.stream endpoints use."""

    def __init__(self, dut, flat: str, shape):
        if isinstance(shape, data.StructLayout) and set(dict(shape)) == {"data", "user", "last"}:
            fields = [(f"t{name}", shape[name].offset, shape[name].width) for name in ("data", "user", "last")]
        else:
            fields = [("tdata", 0, Shape.cast(shape).width)]
        self.parts = [(getattr(dut, f"{flat}_{suffix}"), offset, width) for suffix, offset, width in fields]

    @property
    def value(self) -> int:
        return sum(int(h.value) << offset for h, offset, _ in self.parts)

    @value.setter
    def value(self, v: int) -> None:
        for h, offset, width in self.parts:
            h.value = (int(v) >> offset) & ((1 << width) - 1)


class FlatDut:
    """kvpath_axi_top under the names of kvpath_kvcache, so that the KV cache testbench
    (tb_kvcache.TB, Cache) drives it unchanged: ``clk`` is ``aclk``; ``rst`` is the design's
    synchronized reset (the top's internal net ``rst``, which the AXI models and checkers watch);
    ``m_axi<n>__<sig>`` is ``m_axi<n>_<sig>``; ``<stream>__valid/__ready/__payload`` are the flat
    ``<stream>_t*`` ports. Everything else is the top's own handle."""

    def __init__(self, dut, config: KVPathConfig):
        self._dut = dut
        self.clk, self.rst = dut.aclk, dut.rst
        for name in dir(dut):
            m = re.match(r"^(m_axi\d+)_(\w+)$", name)
            if m:
                setattr(self, f"{m.group(1)}__{m.group(2)}", getattr(dut, name))
        streams = {"s_axis_kv": ("s_axis_kv", kv_layout(config)),
                   "s_axis_cmd": ("s_axis_cmd", layout.command(config)),
                   "memset": ("s_axis_memset", ScaleWrite)}
        streams.update({f"m_axis_kv{p}": (f"m_axis_kv{p}", out_layout(config)) for p in range(config.read_ports)})
        for inner, (flat, shape) in streams.items():
            setattr(self, f"{inner}__valid", getattr(dut, f"{flat}_tvalid"))
            setattr(self, f"{inner}__ready", getattr(dut, f"{flat}_tready"))
            setattr(self, f"{inner}__payload", _Payload(dut, flat, shape))

    def __getattr__(self, name):
        return getattr(self._dut, name)

    def __dir__(self):
        return sorted(set(self.__dict__) | set(dir(self._dut)))


class FlatTB(TB):
    """tb_kvcache.TB on kvpath_axi_top through ``FlatDut``; only the reset is its own: ``aresetn``."""

    def __init__(self, dut):
        self.top = dut
        super().__init__(FlatDut(dut, KVPathConfig(**json.loads(os.environ["KVPATH_KVC_CONFIG"]))))

    async def reset(self):
        """First on its own: aresetn low for a few clocks, in which no VALID or READY may leave the
        design, then high, after which the design leaves reset RESET_STAGES clocks later (the
        register block's ARREADY, high whenever it holds no read data, shows when). Then TB's own
        reset sequence, with aresetn for rst."""
        top, c = self.top, self.config
        inputs = ["s_axis_kv_tvalid", "s_axis_cmd_tvalid", "s_axis_memset_tvalid"] + \
                 [f"m_axis_kv{p}_tready" for p in range(c.read_ports)]
        for name in inputs:
            getattr(top, name).value = 0
        top.aresetn.value = 0
        await ClockCycles(top.aclk, 5)
        watched = ["s_axis_cmd_tready", "s_axis_kv_tready", "s_axis_memset_tready", "s_axil_awready",
                   "s_axil_wready", "s_axil_arready", "m_axi0_awvalid", "m_axi0_wvalid"] + \
                  [f"m_axi{n}_arvalid" for n in range(c.read_ports)] + \
                  [f"m_axis_kv{p}_tvalid" for p in range(c.read_ports)]
        held = {n: str(getattr(top, n).value) for n in watched}
        assert set(held.values()) == {"0"}, self.ctx(f"handshake signals under aresetn: {held}")
        top.aresetn.value = 1
        cycles = 0
        while not top.s_axil_arready.value:
            await RisingEdge(top.aclk)
            cycles += 1
            assert cycles < 20, self.ctx("s_axil_arready never rose after aresetn did")
        assert cycles >= RESET_STAGES, self.ctx(f"s_axil_arready rose {cycles} clocks after aresetn")
        top._log.info(f"s_axil_arready rose {cycles} clocks after aresetn")
        self.dut.rst = _AresetnAsRst(top.aresetn)
        try:
            await super().reset()
        finally:
            self.dut.rst = top.rst


@cocotb.test()
async def axi_top_smoke(dut):
    """Reset, registers, two tokens of K/V on s_axis_kv, the DDR image and READs on both ports
    against the golden model; then aresetn again clears the counters."""
    tb = FlatTB(dut)
    await tb.reset()
    c = tb.config
    cache = default_cache(tb, c.max_head_dim)
    await cache.program()                          # HEAD_DIM, region and layer tables, rings, CLEARs
    assert await tb.read("HEAD_DIM") == c.max_head_dim, tb.ctx("HEAD_DIM read back")
    await tb.write("CTRL", 1)
    for _ in range(2):
        cache.send_token()
    await cache.settle("two tokens")
    cache.check_image("two tokens")
    await cache.read_and_check(0, 0, 0, "READ on port 0 via s_axis_cmd")
    await cache.read_and_check(1, 1, 1, "READ on port 1 via the CMD register", via_register=True,
                               port=c.read_ports - 1)
    assert cache.beats_checked > 0 and await tb.read("DDR_ERRORS") == 0, tb.ctx("READ beats / DDR errors")
    tb.check.assert_clean(tb.ctx(""))
    # aresetn reaches the whole design: the counters start again from 0.
    assert await tb.read("VECTORS_WRITTEN") == cache.written > 0, tb.ctx("VECTORS_WRITTEN")
    dut.aresetn.value = 0
    await ClockCycles(dut.aclk, 4)
    dut.aresetn.value = 1
    await ClockCycles(dut.aclk, RESET_STAGES + 2)
    assert await tb.read("VECTORS_WRITTEN") == 0, tb.ctx("VECTORS_WRITTEN after aresetn")
    dut._log.info(f"{TOP}: {cache.written} rows written, {cache.beats_checked} READ beats checked")
