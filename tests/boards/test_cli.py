"""``kvpath build --board kv260`` and ``kvpath program`` as a user runs them: a synthetic Verilog
top from the port contract (reference_ports; not the engine's Verilog), a fake board tree, and the
repository's own register map and driver for the bitstream check."""

import json
import os
import shutil

import pytest

from kvpath.boards.kv260.ports import TOP, check_contract, parse_verilog_ports, reference_ports
from kvpath.cli import main
from kvpath.config import KVPathConfig
from kvpath.hdl import generate as hdl_generate
from kvpath.regmap import build_map
from kvpath.regmap.json_map import to_dict
from tests.boards.support import BASE, FakeBoard, burn_identity, fake_uio, verilog_for


@pytest.fixture
def synthetic_top(tmp_path):
    """A folder like `kvpath generate` writes: the synthetic top and the register map of q4_0."""
    d = tmp_path / "engine"
    d.mkdir()
    (d / f"{TOP}.v").write_text(verilog_for(reference_ports(2)))
    (d / "kvpath_regs.json").write_text(json.dumps(to_dict(build_map(KVPathConfig(fmt="q4_0")))))
    return d


def no_vivado(monkeypatch, tmp_path):
    """A PATH without vivado, whatever this machine has."""
    empty = tmp_path / "nobin"
    empty.mkdir(exist_ok=True)
    dtc = shutil.which("dtc")
    monkeypatch.setenv("PATH", os.pathsep.join([str(empty), os.path.dirname(dtc)]))


def test_build_from_a_verilog_folder(tmp_path, synthetic_top, monkeypatch, capsys, dtc):
    no_vivado(monkeypatch, tmp_path)
    out = tmp_path / "kv260"
    assert main(["build", "--board", "kv260", "-o", str(out), "--masters", "2", "--clock-mhz", "200",
                 "--verilog", str(synthetic_top)]) == 0
    said = capsys.readouterr().out
    assert "vivado is not on PATH" in said and f"sh {out.resolve() / 'build.sh'}" in said
    assert sorted(os.listdir(out / "kvpath")) == ["kvpath.dtbo", "kvpath_regs.json", "shell.json"]
    assert "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {200}" in (out / "build.tcl").read_text()
    assert (out / "rtl" / f"{TOP}.v").read_text() == (synthetic_top / f"{TOP}.v").read_text()


@pytest.mark.parametrize("args, words", [
    (["--masters", "7"], "n_masters=7"),
    (["--masters", "1"], "expected masters m_axi0..m_axi0"),     # the Verilog has two
    (["--clock-mhz", "900"], "pl_clk_mhz=900"),
])
def test_build_refuses_bad_parameters(tmp_path, synthetic_top, capsys, args, words):
    assert main(["build", "--board", "kv260", "-o", str(tmp_path / "o"), "--verilog", str(synthetic_top),
                 *args]) == 2
    assert words in capsys.readouterr().err


def test_build_needs_a_file_that_defines_the_top(tmp_path, capsys):
    other = tmp_path / "other.v"
    other.write_text("module other(); endmodule\n")
    assert main(["build", "--board", "kv260", "-o", str(tmp_path / "o"), "--verilog", str(other)]) == 2
    assert f"defines module {TOP}" in capsys.readouterr().err


def test_build_without_verilog_needs_the_engine_top(tmp_path, capsys, monkeypatch):
    """A kvpath whose generator lacks kvpath_axi_top (stood in for by removing it from MODULES):
    the error says so and what to pass."""
    monkeypatch.setattr(hdl_generate, "MODULES", {k: v for k, v in hdl_generate.MODULES.items() if v != TOP})
    assert main(["build", "--board", "kv260", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "kvpath_axi_top is not in this build of kvpath yet" in err and "--verilog" in err


def test_build_without_verilog_generates_the_engine_top(tmp_path, capsys, monkeypatch, dtc):
    """No --verilog: the real kvpath_axi_top is generated, with one AXI4 master per --masters, and
    its Verilog, ports and register map are what the build folder and the app folder get."""
    no_vivado(monkeypatch, tmp_path)
    out = tmp_path / "kv260"
    assert main(["build", "--board", "kv260", "-o", str(out), "--format", "q4_1", "--masters", "2"]) == 0
    regmap = json.loads((out / "kvpath" / "kvpath_regs.json").read_text())
    assert regmap["config"]["fmt"] == "q4_1" and regmap["config"]["read_ports"] == 2
    rtl = (out / "rtl" / f"{TOP}.v").read_text()
    assert rtl == (out / "engine" / f"{TOP}.v").read_text() and f"module {TOP}" in rtl
    assert sorted(p.name for p in (out / "rtl").iterdir()) == [f"{TOP}.v"]
    assert not list((out / "engine").glob("kvpath_[!a]*.v")), "blocks Vivado does not read were generated"
    ports = {p.name: p for p in parse_verilog_ports(rtl)}
    _, intfs = check_contract(list(ports.values()), 2)
    tcl = (out / "build.tcl").read_text()
    for i in range(2):
        assert f"connect_bd_intf_net [kvb_intf /kvpath_0/m_axi{i}] [kvb_intf /zynq_ultra_ps_e_0/S_AXI_HP{i}_FPD]" in tcl
    # the stream path is the default: the K/V input and read port 0 go to the AXI DMA through the
    # bridge; every other stream port of the real top is tied off or left open, under its real name
    assert {"s_axis_dma", "m_axis_dma", "s_axis_cmd", "s_axis_memset", "m_axis_kv1"} <= {i.name for i in intfs}
    assert not {"s_axis_kv", "m_axis_kv0"} & {i.name for i in intfs}
    assert "connect_bd_intf_net [kvb_intf /kv_dma/M_AXIS_MM2S] [kvb_intf /kvpath_0/s_axis_dma]" in tcl
    assert "connect_bd_intf_net [kvb_intf /kvpath_0/m_axis_dma] [kvb_intf /kv_dma/S_AXIS_S2MM]" in tcl
    for intf in intfs:
        if intf.kind.startswith("axis") and intf.name not in ("s_axis_dma", "m_axis_dma"):
            for p in intf.ports:
                assert (f"kvb_tie {p.name} {p.width} " in tcl) == (p.direction == "input"), p.name
                assert (f"kvb_leave_open {p.name} " in tcl) == (p.direction == "output"), p.name
    dtso = (out / "kvpath.dtso").read_text()
    assert "kvpath_dma@a0010000" in dtso and "generic-uio" in dtso


def test_build_without_the_stream_path(tmp_path, capsys, monkeypatch, dtc):
    """--no-dma: the plain top, streams tied off, no AXI DMA, no DMA node; --verilog with that top
    builds the same way (the Verilog decides)."""
    no_vivado(monkeypatch, tmp_path)
    out = tmp_path / "plain"
    assert main(["build", "--board", "kv260", "-o", str(out), "--no-dma"]) == 0
    rtl = (out / "rtl" / f"{TOP}.v").read_text()
    _, intfs = check_contract(parse_verilog_ports(rtl), 1)
    assert {"s_axis_kv", "m_axis_kv0"} <= {i.name for i in intfs}
    tcl = (out / "build.tcl").read_text()
    assert "axi_dma" not in tcl and "kvb_tie s_axis_kv_tvalid 1 0" in tcl
    assert "kvpath_dma" not in (out / "kvpath.dtso").read_text()
    again = tmp_path / "again"
    assert main(["build", "--board", "kv260", "-o", str(again), "--verilog", str(out / "engine")]) == 0
    assert "axi_dma" not in (again / "build.tcl").read_text()


def test_build_of_a_static_format_generates_the_engine_top(tmp_path, capsys, monkeypatch, dtc):
    """A static-scale format builds like any other: kvpath_axi_top with the scale cache (its
    s_axis_memset port), the register map of that format (CFG_SCALE_ENTRIES > 0)."""
    no_vivado(monkeypatch, tmp_path)
    out = tmp_path / "kv260"
    assert main(["build", "--board", "kv260", "-o", str(out), "--format", "int8_ph"]) == 0
    regmap = json.loads((out / "kvpath" / "kvpath_regs.json").read_text())
    assert regmap["config"]["fmt"] == "int8_ph"
    rtl = (out / "rtl" / f"{TOP}.v").read_text()
    assert f"module {TOP}" in rtl
    ports = {p.name: p for p in parse_verilog_ports(rtl)}
    _, intfs = check_contract(list(ports.values()), 1)
    assert "s_axis_memset" in {i.name for i in intfs}


def test_program_loads_and_checks_on_a_fake_tree(tmp_path, app_dir, synthetic_top, capsys, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))          # no xmutil, no dfx-mgr-client
    regmap = json.loads((synthetic_top / "kvpath_regs.json").read_text())
    (app_dir / "kvpath_regs.json").write_text(json.dumps(regmap))
    board = FakeBoard(tmp_path / "root")
    fake_uio(board.root, {0: ("kvpath", BASE, 0x10000)})
    burn_identity(board.root / "dev/uio0", regmap, KVPathConfig(fmt="q4_0"))

    assert main(["program", "--app", str(app_dir), "--sysroot", str(board.root)]) == 0
    said = capsys.readouterr().out
    assert "loaded kvpath with fpga_manager (bitstream only, no overlay)" in said
    assert "bitstream check: ID, VERSION and configuration match" in said
    assert (board.mgr / "firmware").read_text() == "kvpath.bit.bin\n"
    assert (board.root / "lib/firmware/kvpath.bit.bin").read_bytes() == (app_dir / "kvpath.bit.bin").read_bytes()

    burn_identity(board.root / "dev/uio0", regmap, KVPathConfig(fmt="q8_0"))   # another build answers
    assert main(["program", "--app", str(app_dir), "--sysroot", str(board.root)]) == 1
    assert "refused" in capsys.readouterr().err


def test_program_without_a_register_map(tmp_path, app_dir, capsys):
    assert main(["program", "--app", str(app_dir), "--sysroot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no register map" in err and "--regmap" in err and "--no-check" in err


def test_program_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert main(["program", "--app", str(tmp_path / "nothere"), "--no-check"]) == 1
    assert "does not exist" in capsys.readouterr().err
