"""The generated XDC and build TCL, run in tclsh against the Vivado stubs (tcl_stub.tcl).

These check the script's structure and its failure paths. They do not show that Vivado accepts the
block design: only a Vivado run can (docs/kv260.md).
"""

import re

import pytest
from tests.boards.support import run_stub

from kvpath.boards.kv260 import vivado_tcl as vt
from kvpath.boards.kv260.params import BoardParams
from kvpath.boards.kv260.ports import PortError, group, reference_ports

PS = "/zynq_ultra_ps_e_0"
KV = "/kvpath_0"
SRC = ["rtl/kvpath_axi_top.v"]


def script(params, ports):
    return vt.generate_tcl(params, ports, SRC)


def port_counts(run, ports):
    """How often each kvpath_axi_top port is connected (nets, interfaces, declared-open)."""
    _, intfs = group(ports)
    members = {i.name: [p.name for p in i.ports] for i in intfs}
    counts = {p.name: 0 for p in ports}
    for args in run.of("connect_bd_net"):
        for a in args:
            if a.startswith(KV + "/"):
                name = a.split("/")[2]
                assert name in counts, f"net to {a}, which is not a port of kvpath_axi_top"
                counts[name] += 1
    for args in run.of("connect_bd_intf_net"):
        for a in args:
            if a.startswith(KV + "/"):
                intf = a.split("/")[2]
                assert intf in members, f"interface net to {a}, which kvpath_axi_top does not have"
                for name in members[intf]:
                    counts[name] += 1
    for m in re.finditer(r"^KVPATH: open (\S+) ", run.stdout, re.M):
        counts[m.group(1)] += 1
    return counts


def ps_settings(run):
    props = {}
    for args in run.of("set_property"):
        if args[0] == "-dict" and args[2] == PS:
            items = args[1].split()
            props.update(dict(zip(items[::2], items[1::2])))
    return props


def test_xdc_constrains_the_fan_and_no_clock():
    xdc = vt.generate_xdc()
    lines = [l for l in xdc.splitlines() if l and not l.startswith("#")]
    assert "set_property PACKAGE_PIN A12 [get_ports {fan_en_b[0]}]" in lines
    assert "set_property IOSTANDARD LVCMOS33 [get_ports {fan_en_b[0]}]" in lines
    assert not any(l.startswith("create_clock") for l in lines)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_clean_run(tclsh, tmp_path, n):
    params = BoardParams(n_masters=n)
    ports = reference_ports(n, n_read_streams=2)
    run = run_stub(tmp_path, script(params, ports), ports)
    assert run.rc == 0, run.stderr

    # part and board
    (proj,) = run.of("create_project")
    assert proj[proj.index("-part") + 1] == "xck26-sfvc784-2LV-c"
    assert ["board_part", vt.BOARD_PART, "kvpath_kv260"] in run.of("set_property")
    assert any(a[0] == "board_connections" and a[1] == vt.BOARD_CONNECTIONS for a in run.of("set_property"))
    assert ["-type", "module", "-reference", "kvpath_axi_top", "kvpath_0"] in run.of("create_bd_cell")

    # every port of kvpath_axi_top exactly once
    counts = port_counts(run, ports)
    assert {k: v for k, v in counts.items() if v != 1} == {}

    # the clock reaches every AXI port that is in use
    (clk,) = [a for a in run.of("connect_bd_net") if a[:2] == ["-net", "pl_clk0"]]
    want = {f"{PS}/pl_clk0", f"{KV}/aclk", f"{PS}/maxihpm0_fpd_aclk"} | {f"{PS}/saxihp{i}_fpd_aclk" for i in range(n)}
    assert want <= set(clk)
    assert not any(f"saxihp{i}_fpd_aclk" in " ".join(clk) for i in range(n, 4))

    # masters to HP0..HP{n-1}, registers through the SmartConnect
    intf = run.of("connect_bd_intf_net")
    for i in range(n):
        assert [f"{KV}/m_axi{i}", f"{PS}/S_AXI_HP{i}_FPD"] in intf
    assert [f"{PS}/M_AXI_HPM0_FPD", "/ctrl_smc/S00_AXI"] in intf
    assert ["/ctrl_smc/M00_AXI", f"{KV}/s_axil"] in intf

    # stream inputs tied: tready high, the rest low
    ties = {a[2].removeprefix("/tie_"): a[1] for a in run.of("set_property")
            if a[0] == "-dict" and a[2].startswith("/tie_") and a[2] != "/tie_fan"}
    for name, setting in ties.items():
        assert setting.endswith("CONFIG.CONST_VAL " + ("1" if name.endswith("tready") else "0")), name
    assert "CONFIG.CONST_VAL 0" in [a[1] for a in run.of("set_property") if a[-1] == "/tie_fan"][0]

    # address map: exactly these segments, with these offsets and ranges
    got = {(a[a.index("-target_address_space") + 1], a[-1]): (int(a[a.index("-offset") + 1], 0),
                                                              int(a[a.index("-range") + 1], 0))
           for a in run.of("assign_bd_address")}
    want = {(f"{PS}/Data", f"{KV}/s_axil/reg0"): (0xA000_0000, 0x10000)}
    for i in range(n):
        want[(f"{KV}/m_axi{i}", f"{PS}/SAXIGP{i + 2}/HP{i}_DDR_LOW")] = (0, 0x8000_0000)
        want[(f"{KV}/m_axi{i}", f"{PS}/SAXIGP{i + 2}/HP{i}_DDR_HIGH")] = (0x8_0000_0000, 0x8_0000_0000)
    assert got == want
    assert len(run.of("assign_bd_address")) == len(want)

    # PS properties: known names only, and the ones that matter have the right values
    props = ps_settings(run)
    names = {k.removeprefix("CONFIG.") for k in props}
    assert names <= set(vt.KNOWN_PSU_PROPERTIES), names - set(vt.KNOWN_PSU_PROPERTIES)
    assert props["CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"] == "250"
    assert props["CONFIG.PSU__MAXIGP0__DATA_WIDTH"] == "32"
    for i in range(4):
        assert props[f"CONFIG.PSU__USE__S_AXI_GP{i + 2}"] == ("1" if i < n else "0")
        if i < n:
            assert props[f"CONFIG.PSU__SAXIGP{i + 2}__DATA_WIDTH"] == "128"

    # the board preset is applied to the PS, and the build ends in one bitstream
    assert any("apply_board_preset" in " ".join(a) for a in run.of("apply_bd_automation"))
    assert run.of("write_bitstream") == [["-force", str(tmp_path / "kvpath.bit")]]
    order = [c["cmd"] for c in run.calls]
    assert order.index("validate_bd_design") < order.index("launch_runs") < order.index("write_bitstream")


def test_parameters_reach_the_script(tclsh, tmp_path):
    params = BoardParams(n_masters=1, pl_clk_mhz=187.5, reg_base=0xA004_0000, reg_size=0x1000,
                         hpm0_width=128, app="kvtest")
    ports = reference_ports(1)
    run = run_stub(tmp_path, script(params, ports), ports)
    assert run.rc == 0, run.stderr
    props = ps_settings(run)
    assert props["CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"] == "187.5"
    assert props["CONFIG.PSU__MAXIGP0__DATA_WIDTH"] == "128"
    seg = [a for a in run.of("assign_bd_address") if a[-1] == f"{KV}/s_axil/reg0"][0]
    assert seg[seg.index("-offset") + 1] == "0xA0040000" and seg[seg.index("-range") + 1] == "0x1000"
    assert run.of("write_bitstream") == [["-force", str(tmp_path / "kvtest.bit")]]


MUTANTS = [
    # (what goes wrong in "Vivado", environment for the stub, exit code, words in stderr)
    ("board part not applied", {"KVB_STUB_OVERRIDE": "BOARD_PART xilinx.com:kv260_som:part0:1.3"}, 2,
     "board part is 'xilinx.com:kv260_som:part0:1.3'"),
    ("HP1 data width left at 64", {"KVB_STUB_OVERRIDE": "CONFIG.PSU__SAXIGP3__DATA_WIDTH 64"}, 2,
     "PSU__SAXIGP3__DATA_WIDTH is '64'"),
    ("PL clock far from 250 MHz", {"KVB_STUB_OVERRIDE": "CONFIG.PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ 214.28"}, 2,
     "pl_clk0 is 214.28 MHz"),
    ("module reference infers no m_axi1", {"KVB_STUB_EMPTY": f"get_bd_intf_pins:{KV}/m_axi1"}, 2,
     f"interface pin {KV}/m_axi1"),
    ("register window lands elsewhere",
     {"KVB_STUB_OVERRIDE": f"OFFSET@{PS}/Data/SEG_kvpath_0_s_axil_reg0 0xA0010000"}, 2,
     "offset of /zynq_ultra_ps_e_0/Data/SEG_kvpath_0_s_axil_reg0 is '0xA0010000'"),
    ("DDR high aperture smaller than expected",
     {"KVB_STUB_OVERRIDE": f"RANGE@{KV}/m_axi0/SEG_zynq_ultra_ps_e_0_SAXIGP2_HP0_DDR_HIGH 2G"}, 2,
     "range of"),
    ("kvpath IDs wider than the HP port", {"KVB_STUB_OVERRIDE": f"CONFIG.ID_WIDTH@{KV}/m_axi0 8"}, 2,
     "wider AXI ID"),
    ("PS cell not created", {"KVB_STUB_EMPTY": "create_bd_cell:/zynq_ultra_ps_e_0"}, 2, "PS cell"),
    ("implementation did not finish", {"KVB_STUB_OVERRIDE": "PROGRESS@/impl_1 50%"}, 2, "run impl_1 did not finish"),
    ("setup timing fails", {"KVB_STUB_SLACK": "-setup -0.042"}, 1, "TIMING FAILED: WNS -0.042"),
    ("hold timing fails", {"KVB_STUB_SLACK": "-hold -0.010"}, 1, "WHS -0.010"),
    ("design not timed", {"KVB_STUB_SLACK": "-setup inf"}, 2, "not timed"),
]


@pytest.mark.parametrize("what, env, rc, words", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_wrong_vivado_results_stop_the_script(tclsh, tmp_path, what, env, rc, words):
    params = BoardParams(n_masters=2)
    ports = reference_ports(2)
    run = run_stub(tmp_path, script(params, ports), ports, env)
    assert run.rc == rc, (run.rc, run.stderr)
    assert words in run.stderr
    assert run.of("write_bitstream") == []


def test_port_missing_from_the_verilog_stops_the_script(tclsh, tmp_path):
    params = BoardParams(n_masters=1)
    ports = reference_ports(1)
    verilog_ports = [p for p in ports if p.name != "m_axis_kv0_tready"]
    run = run_stub(tmp_path, script(params, ports), verilog_ports)
    assert run.rc == 2 and "pin /kvpath_0/m_axis_kv0_tready" in run.stderr


def test_missing_source_stops_the_script(tclsh, tmp_path):
    ports = reference_ports(1)
    run = run_stub(tmp_path, script(BoardParams(), ports), ports, sources=())
    assert run.rc == 2 and "missing Verilog source" in run.stderr
    assert run.of("add_files") == []


def test_generator_refuses_bad_inputs():
    ports = reference_ports(2)
    with pytest.raises(PortError, match="expected masters m_axi0..m_axi0"):
        vt.generate_tcl(BoardParams(n_masters=1), ports, SRC)
    with pytest.raises(vt.TclGenError, match="no Verilog sources"):
        vt.generate_tcl(BoardParams(n_masters=2), ports, [])
    with pytest.raises(vt.TclGenError, match="relative path"):
        vt.generate_tcl(BoardParams(n_masters=2), ports, ["rtl/my top.v"])
    with pytest.raises(vt.TclGenError, match="relative path"):
        vt.generate_tcl(BoardParams(n_masters=2), ports, ["/abs/top.v"])
    with pytest.raises(vt.TclGenError, match="jobs"):
        vt.generate_tcl(BoardParams(n_masters=2), ports, SRC, jobs=0)


def test_known_properties_cover_what_is_generated():
    for n in range(1, 5):
        for w in (32, 128):
            assert set(vt.ps_properties(BoardParams(n_masters=n, hpm0_width=w))) <= set(vt.KNOWN_PSU_PROPERTIES)


# --- the stream path: the AXI DMA and the engine's bridged streams ------------------------------

def dma_ports(n):
    return reference_ports(n, n_read_streams=2, dma_bridge=True)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_dma_bridge_block_design(tclsh, tmp_path, n):
    params = BoardParams(n_masters=n, dma_bridge=True)
    ports = dma_ports(n)
    run = run_stub(tmp_path, script(params, ports), ports)
    assert run.rc == 0, run.stderr
    hp = min(n, 3)
    shared = n == 4

    # every kvpath port once; the bridged streams by interface, not tied
    counts = port_counts(run, ports)
    assert {k: v for k, v in counts.items() if v != 1} == {}
    assert not any(a[2].startswith(("/tie_s_axis_dma", "/tie_m_axis_dma")) for a in run.of("set_property")
                   if a[0] == "-dict")

    # the DMA cell in direct register mode, every property read back
    assert ["-type", "ip", "-vlnv", "xilinx.com:ip:axi_dma", "kv_dma"] in run.of("create_bd_cell")
    (dma_dict,) = [a[1].split() for a in run.of("set_property") if a[0] == "-dict" and a[2] == "/kv_dma"]
    dma = dict(zip(dma_dict[::2], dma_dict[1::2]))
    want = {f"CONFIG.{k}": v for k, v in vt.dma_properties(256, 256).items()}
    assert dma == want
    assert dma["CONFIG.c_include_sg"] == "0" and dma["CONFIG.c_sg_length_width"] == "26"
    read_back = {a[0] for a in run.of("get_property") if a[1] == "/kv_dma"}
    assert read_back == set(want)
    (smc,) = [a[1] for a in run.of("set_property") if a[0] == "-dict" and a[2] == "/dma_smc"]
    assert smc == f"CONFIG.NUM_SI {3 if shared else 2} CONFIG.NUM_MI 1"
    (ctrl,) = [a[1] for a in run.of("set_property") if a[0] == "-dict" and a[2] == "/ctrl_smc"]
    assert ctrl == "CONFIG.NUM_SI 1 CONFIG.NUM_MI 2"

    # connections: control, streams, memory
    intf = run.of("connect_bd_intf_net")
    for pair in (["/ctrl_smc/M01_AXI", "/kv_dma/S_AXI_LITE"], ["/kv_dma/M_AXIS_MM2S", f"{KV}/s_axis_dma"],
                 [f"{KV}/m_axis_dma", "/kv_dma/S_AXIS_S2MM"], ["/kv_dma/M_AXI_MM2S", "/dma_smc/S00_AXI"],
                 ["/kv_dma/M_AXI_S2MM", "/dma_smc/S01_AXI"], ["/dma_smc/M00_AXI", f"{PS}/S_AXI_HP{hp}_FPD"]):
        assert pair in intf, pair
    if shared:
        assert [f"{KV}/m_axi3", "/dma_smc/S02_AXI"] in intf and [f"{KV}/m_axi3", f"{PS}/S_AXI_HP3_FPD"] not in intf
    hp_users = [a for a in intf if a[1] == f"{PS}/S_AXI_HP{hp}_FPD"]
    assert hp_users == [["/dma_smc/M00_AXI", f"{PS}/S_AXI_HP{hp}_FPD"]]

    # clock and reset on every DMA / SmartConnect pin; the DMA's HP port enabled at 128 bits
    (clk,) = [a for a in run.of("connect_bd_net") if a[:2] == ["-net", "pl_clk0"]]
    assert {"/kv_dma/s_axi_lite_aclk", "/kv_dma/m_axi_mm2s_aclk", "/kv_dma/m_axi_s2mm_aclk", "/dma_smc/aclk",
            f"{PS}/saxihp{hp}_fpd_aclk"} <= set(clk)
    assert clk.count(f"{PS}/saxihp{hp}_fpd_aclk") == 1
    (rst,) = [a for a in run.of("connect_bd_net") if a[:2] == ["-net", "pl_aresetn"]]
    assert {"/kv_dma/axi_resetn", "/dma_smc/aresetn"} <= set(rst)
    props = ps_settings(run)
    assert props[f"CONFIG.PSU__USE__S_AXI_GP{hp + 2}"] == "1"
    assert props[f"CONFIG.PSU__SAXIGP{hp + 2}__DATA_WIDTH"] == "128"
    assert "DMA interrupt kv_dma/mm2s_introut left open" in run.stdout

    # address map: the DMA registers at 0xA001_0000, both DMA masters see their HP port's DDR
    got = {(a[a.index("-target_address_space") + 1], a[-1]): (int(a[a.index("-offset") + 1], 0),
                                                              int(a[a.index("-range") + 1], 0))
           for a in run.of("assign_bd_address")}
    want = {(f"{PS}/Data", f"{KV}/s_axil/reg0"): (0xA000_0000, 0x10000),
            (f"{PS}/Data", "/kv_dma/S_AXI_LITE/Reg"): (0xA001_0000, 0x10000)}
    for i in range(n):
        want[(f"{KV}/m_axi{i}", f"{PS}/SAXIGP{i + 2}/HP{i}_DDR_LOW")] = (0, 0x8000_0000)
        want[(f"{KV}/m_axi{i}", f"{PS}/SAXIGP{i + 2}/HP{i}_DDR_HIGH")] = (0x8_0000_0000, 0x8_0000_0000)
    for space in ("Data_MM2S", "Data_S2MM"):
        want[(f"/kv_dma/{space}", f"{PS}/SAXIGP{hp + 2}/HP{hp}_DDR_LOW")] = (0, 0x8000_0000)
        want[(f"/kv_dma/{space}", f"{PS}/SAXIGP{hp + 2}/HP{hp}_DDR_HIGH")] = (0x8_0000_0000, 0x8_0000_0000)
    assert got == want and len(run.of("assign_bd_address")) == len(want)
    assert set(vt.ps_properties(params)) <= set(vt.KNOWN_PSU_PROPERTIES)


DMA_MUTANTS = [
    ("AXI DMA keeps its scatter-gather engine", {"KVB_STUB_OVERRIDE": "CONFIG.C_INCLUDE_SG@/kv_dma 1"}, 2,
     "AXI DMA c_include_sg is '1', expected '0'"),
    ("AXI DMA registers land elsewhere",
     {"KVB_STUB_OVERRIDE": f"OFFSET@{PS}/Data/SEG_kv_dma_S_AXI_LITE_Reg 0xA0020000"}, 2,
     "offset of /zynq_ultra_ps_e_0/Data/SEG_kv_dma_S_AXI_LITE_Reg is '0xA0020000'"),
    ("module reference infers no s_axis_dma", {"KVB_STUB_EMPTY": f"get_bd_intf_pins:{KV}/s_axis_dma"}, 2,
     f"interface pin {KV}/s_axis_dma"),
    ("DMA cell not created", {"KVB_STUB_EMPTY": "create_bd_cell:/kv_dma"}, 2, "expected exactly one AXI DMA cell"),
]


@pytest.mark.parametrize("what, env, rc, words", DMA_MUTANTS, ids=[m[0] for m in DMA_MUTANTS])
def test_wrong_dma_results_stop_the_script(tclsh, tmp_path, what, env, rc, words):
    params = BoardParams(n_masters=1, dma_bridge=True)
    ports = dma_ports(1)
    run = run_stub(tmp_path, script(params, ports), ports, env)
    assert run.rc == rc, (run.rc, run.stderr)
    assert words in run.stderr
    assert run.of("write_bitstream") == []


def test_dma_bridge_must_match_the_verilog():
    with pytest.raises(vt.TclGenError, match="lacks the DMA bridge"):
        vt.generate_tcl(BoardParams(dma_bridge=True), reference_ports(1), SRC)
    with pytest.raises(vt.TclGenError, match="has the DMA bridge"):
        vt.generate_tcl(BoardParams(), dma_ports(1), SRC)
