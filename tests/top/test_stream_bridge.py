"""The DMA stream bridge (hdl/top/stream_bridge.py, docs/kv260.md "The stream path").

* The framing rules in Python (``frame`` / ``unframe``, header bit positions): what the driver and
  the testbenches rely on.
* ``HeaderStrip`` and ``HeaderInsert`` on Icarus (sim/top/tb_stream_bridge.py: random tags,
  vectors and framings, random pauses on both sides, every beat compared exactly).
* ``kvpath_axi_top`` with ``dma_bridge=True``: its ports (the engine's K/V ports replaced by
  ``s_axis_dma``/``m_axis_dma``, nothing else changed), the KV260 contract and block-design TCL
  for it under the Vivado stubs, and one Icarus run end to end through the framing against the
  golden model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest

from kvpath import layout
from kvpath.boards.kv260 import vivado_tcl
from kvpath.boards.kv260.params import BoardParams
from kvpath.boards.kv260.ports import check_contract, parse_verilog_ports, reference_ports
from kvpath.config import KVPathConfig
from kvpath.hdl.generate import MODULES, write_verilog
from kvpath.hdl.top.axi_top import KVPathAxiTop
from kvpath.hdl.top.stream_bridge import (BEATS_OFFSET, LAST_BIT, FramingError, HeaderInsert, dma_layout, frame,
                                          header_layout, pack_header, unframe, unpack_header)
from kvpath.sim.lib.runner import run_cocotb

SEED = int(os.environ.get("KVPATH_SEED", "1"))
TOP = MODULES["axi_top"]
CONFIG = KVPathConfig(fmt="q8_0", max_layers=2, max_kv_heads=2, max_head_dim=64, kv_max_tokens=16, read_ports=2)
SEGMENT = CONFIG.max_head_dim // CONFIG.dequant_lanes   # what the top gives HeaderInsert: one vector


# --- the framing in Python -----------------------------------------------------------------------

def test_header_bits():
    assert pack_header(0x5, 3, True) == 0x5 | 3 << 40 | 1 << 56
    assert (BEATS_OFFSET, LAST_BIT) == (40, 56)
    assert unpack_header(pack_header((1 << 40) - 1, 0xFFFF, False) | 0xAB << 64) == ((1 << 40) - 1, 0xFFFF, False)
    hl = header_layout(layout.read_tag(CONFIG))
    assert hl.size == 64 and hl["tag"].offset == 0 and hl["beats"].offset == 40 and hl["last"].offset == 56
    with pytest.raises(ValueError, match="does not fit"):
        header_layout(41)
    with pytest.raises(ValueError, match="cannot carry"):
        dma_layout(32)


def test_frame_round_trip_and_segments():
    tag = layout.pack(layout.kv_tag(CONFIG), append=1, kv=1, head=1, layer=0, seq=0)
    vec = [(0x100 + k, tag, k == 3) for k in range(4)]
    words = frame(vec)
    assert words == [pack_header(tag, 4, True), 0x100, 0x101, 0x102, 0x103]
    assert unframe(words) == vec
    # A READ's last beat with read_tag.error: its own one-beat segment, so every TUSER survives.
    rt = layout.read_tag(CONFIG)
    read = [(k, layout.pack(rt, pos=7 + k // 4), False) for k in range(8)]
    read[-1] = (7, layout.pack(rt, pos=8, error=1), True)
    words = frame(read, SEGMENT)
    assert [unpack_header(w) for w in (words[0], words[5], words[9])] == [
        (layout.pack(rt, pos=7), 4, False), (layout.pack(rt, pos=8), 3, False),
        (layout.pack(rt, pos=8, error=1), 1, True)]
    assert unframe(words) == read
    # The cap splits a long run; a run without TLAST ends with last = 0.
    run = [(k, 9, False) for k in range(5)]
    assert [unpack_header(w)[1:] for w in frame(run, 2)[::3]] == [(2, False), (2, False), (1, False)]
    assert unframe(frame(run, 2)) == run
    with pytest.raises(FramingError, match="announces 4 beats, only 2 follow"):
        unframe(words[:3])
    with pytest.raises(FramingError, match="count of 0"):
        unframe([pack_header(1, 0, True), 5])


# --- the adapters on Icarus ----------------------------------------------------------------------

def _env(config=CONFIG, segment=SEGMENT):
    return {"KVPATH_KVC_CONFIG": json.dumps(dataclasses.asdict(config)), "KVPATH_SEED": str(SEED),
            "KVPATH_BRIDGE_SEGMENT": str(segment), "KVPATH_KVC_PAUSES": "mixed"}


# The top's configuration (16 lanes each way, a 4-beat cap), and unequal widths (8 lanes = 128-bit
# TDATA in, 32 lanes = 512-bit out) with a 3-beat cap, so vectors split across segments.
ADAPTER_CASES = [(CONFIG, SEGMENT),
                 (dataclasses.replace(CONFIG, quant_lanes=8, dequant_lanes=32, max_head_dim=128), 3)]


@pytest.mark.parametrize("config, segment", ADAPTER_CASES, ids=["16x16-cap4", "8x32-cap3"])
def test_adapters_icarus(build_root, config, segment):
    from kvpath.sim.top.tb_stream_bridge import BridgePair

    name = f"bridge_pair_{config.quant_lanes}x{config.dequant_lanes}_{segment}"
    verilog = write_verilog(BridgePair(config, segment), "kvpath_bridge_pair",
                            build_root / name / "kvpath_bridge_pair.v")
    start = time.perf_counter()
    tests = os.environ.get("KVPATH_BRIDGE_TESTS", "strip_exact,insert_exact").split(",")
    times = run_cocotb(verilog=verilog, toplevel="kvpath_bridge_pair", test_module="kvpath.sim.top.tb_stream_bridge",
                       simulator="icarus", build_dir=build_root / f"{name}_icarus", quiet=True, testcase=tests,
                       extra_env=_env(config, segment))
    print(f"bridge adapters {name} icarus seed={SEED}: build {times['build_s']:.1f} s, run {times['run_s']:.1f} s, "
          f"total {time.perf_counter() - start:.1f} s")


def test_insert_refuses_bad_cap():
    from kvpath.hdl.ddr.read_port import out_layout

    with pytest.raises(ValueError, match="max_segment=0"):
        HeaderInsert(out_layout(CONFIG), 0)


# --- the top with the bridge ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def bridged(build_root):
    top = KVPathAxiTop(CONFIG, dma_bridge=True)
    return top, write_verilog(top, TOP, build_root / "axi_top_dma" / f"{TOP}.v")


def test_bridged_ports(bridged, build_root):
    top, verilog = bridged
    got = {p.name: (p.direction, p.width) for p in parse_verilog_ports(verilog.read_text(), TOP)}
    plain = {p.name: (p.direction, p.width) for p in parse_verilog_ports(
        write_verilog(KVPathAxiTop(CONFIG), TOP, build_root / "axi_top_plain" / f"{TOP}.v").read_text(), TOP)}
    removed = {n for n in plain if n.startswith(("s_axis_kv_", "m_axis_kv0_"))}
    added = {n: got[n] for n in set(got) - set(plain)}
    assert set(plain) - set(got) == removed and {n: plain[n] for n in set(plain) & set(got)} == \
        {n: got[n] for n in set(plain) & set(got)}
    w_in, w_out = 16 * CONFIG.quant_lanes, 16 * CONFIG.dequant_lanes
    assert added == {"s_axis_dma_tdata": ("input", w_in), "s_axis_dma_tlast": ("input", 1),
                     "s_axis_dma_tvalid": ("input", 1), "s_axis_dma_tready": ("output", 1),
                     "m_axis_dma_tdata": ("output", w_out), "m_axis_dma_tlast": ("output", 1),
                     "m_axis_dma_tkeep": ("output", w_out // 8),
                     "m_axis_dma_tvalid": ("output", 1), "m_axis_dma_tready": ("input", 1)}


def test_bridged_ports_meet_the_kv260_contract(bridged, tmp_path):
    from tests.boards.support import require_tool, run_stub
    from tests.boards.test_vivado_tcl import port_counts

    _, verilog = bridged
    ports = parse_verilog_ports(verilog.read_text(), TOP)
    check_contract(ports, CONFIG.read_ports)
    ref = {(p.name, p.direction) for p in reference_ports(CONFIG.read_ports, dma_bridge=True)}
    assert ref == {(p.name, p.direction) for p in ports}
    require_tool("tclsh", "tcl")
    tcl = vivado_tcl.generate_tcl(BoardParams(n_masters=CONFIG.read_ports, dma_bridge=True), ports,
                                  [f"rtl/{TOP}.v"])
    run = run_stub(tmp_path, tcl, ports)
    assert run.rc == 0, run.stderr
    counts = port_counts(run, ports)
    assert {k: v for k, v in counts.items() if v != 1} == {}
    with pytest.raises(vivado_tcl.TclGenError, match="has the DMA bridge"):
        vivado_tcl.generate_tcl(BoardParams(n_masters=CONFIG.read_ports), ports, [f"rtl/{TOP}.v"])
    assert any(a[:4] == ["-type", "ip", "-vlnv", "xilinx.com:ip:axi_dma"] for a in run.of("create_bd_cell"))


def test_bridged_top_icarus(bridged, build_root):
    _, verilog = bridged
    start = time.perf_counter()
    times = run_cocotb(verilog=verilog, toplevel=TOP, test_module="kvpath.sim.top.tb_stream_bridge",
                       simulator="icarus", build_dir=build_root / "axi_top_dma_icarus", quiet=True,
                       testcase="dma_bridge_top", extra_env=_env())
    print(f"{TOP} (dma_bridge) icarus seed={SEED}: build {times['build_s']:.1f} s, run {times['run_s']:.1f} s, "
          f"total {time.perf_counter() - start:.1f} s")
