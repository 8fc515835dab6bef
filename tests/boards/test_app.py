"""The app folder and build(): what is written with and without Vivado (Vivado itself is faked).

The Verilog is synthetic: a header of kvpath_axi_top built from the port contract (reference_ports).
"""

import json
import os
import subprocess
import sys

import pytest
from tests.boards.support import bit_words, make_bit, verilog_for

from kvpath.boards.kv260 import app, bitbin
from kvpath.boards.kv260.params import BoardParams
from kvpath.boards.kv260.ports import reference_ports

pytestmark = pytest.mark.usefixtures("dtc")


@pytest.fixture
def rtl(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "kvpath_axi_top.v").write_text(verilog_for(reference_ports(2)))
    (src / "kvpath_csr.v").write_text("module kvpath_csr(); endmodule\n")
    return [src / "kvpath_axi_top.v", src / "kvpath_csr.v"]


def no_vivado(name):
    return None


def test_without_vivado_everything_but_the_bitstream(tmp_path, rtl, capsys):
    out = tmp_path / "out"
    rc = app.build(out, BoardParams(n_masters=2), rtl, which=no_vivado)
    assert rc == 0
    said = capsys.readouterr().out
    assert f"sh {out / 'build.sh'}" in said and "kvpath.bit.bin" in said
    for f in ("build.tcl", "kvpath_kv260.xdc", "build.sh", "bitbin.py", "kvpath.dtso", "kvpath.dtbo",
              "rtl/kvpath_axi_top.v", "rtl/kvpath_csr.v"):
        assert (out / f).is_file(), f
    assert sorted(os.listdir(out / "kvpath")) == ["kvpath.dtbo", "shell.json"]   # no bitstream faked
    assert json.loads((out / "kvpath" / "shell.json").read_text()) == {"shell_type": "XRT_FLAT", "num_slots": "1"}
    assert (out / "kvpath" / "kvpath.dtbo").read_bytes() == (out / "kvpath.dtbo").read_bytes()
    tcl = (out / "build.tcl").read_text()
    assert '"$kvb_here/rtl/kvpath_axi_top.v" "$kvb_here/rtl/kvpath_csr.v"' in tcl
    assert os.access(out / "build.sh", os.X_OK)


def test_build_sh_runs_vivado_then_the_converter(tmp_path, rtl):
    """build.sh end to end, with a stand-in `vivado` that writes a synthetic .bit."""
    out = tmp_path / "out"
    app.build(out, BoardParams(n_masters=2), rtl, which=no_vivado)
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (tmp_path / "template.bit").write_bytes(make_bit())
    (fakebin / "vivado").write_text(f"#!/bin/sh\necho \"$@\" > vivado.args\ncp {tmp_path / 'template.bit'} kvpath.bit\n")
    (fakebin / "vivado").chmod(0o755)
    env = dict(os.environ, PATH=f"{fakebin}:{os.environ['PATH']}", PYTHON=sys.executable)
    r = subprocess.run(["sh", str(out / "build.sh")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "vivado.args").read_text().split() == ["-mode", "batch", "-nojournal", "-log", "vivado.log",
                                                         "-source", "build.tcl"]
    assert (out / "kvpath" / "kvpath.bit.bin").read_bytes() == bitbin.convert_bytes(make_bit())[1]


def test_failing_vivado_stops_build_sh(tmp_path, rtl):
    out = tmp_path / "out"
    app.build(out, BoardParams(n_masters=2), rtl, which=no_vivado)
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    (fakebin / "vivado").write_text("#!/bin/sh\nexit 1\n")
    (fakebin / "vivado").chmod(0o755)
    env = dict(os.environ, PATH=f"{fakebin}:{os.environ['PATH']}", PYTHON=sys.executable)
    r = subprocess.run(["sh", str(out / "build.sh")], env=env, capture_output=True, text=True)
    assert r.returncode == 1
    assert not (out / "kvpath" / "kvpath.bit.bin").exists()


def test_with_vivado_on_path(tmp_path, rtl):
    out = tmp_path / "out"
    calls = []

    def fake_run(argv, cwd):
        calls.append((argv, cwd))
        (out / "kvpath.bit").write_bytes(make_bit())   # what Vivado would leave behind
        return subprocess.CompletedProcess(argv, 0)

    assert app.build(out, BoardParams(n_masters=2), rtl, which=lambda n: "/opt/vivado", run=fake_run) == 0
    assert calls == [(["sh", str(out / "build.sh")], str(out))]
    assert sorted(os.listdir(out / "kvpath")) == ["kvpath.bit.bin", "kvpath.dtbo", "shell.json"]


def test_vivado_failure_is_passed_on(tmp_path, rtl, capsys):
    out = tmp_path / "out"
    rc = app.build(out, BoardParams(n_masters=2), rtl, which=lambda n: "/opt/vivado",
                   run=lambda argv, cwd: subprocess.CompletedProcess(argv, 1))
    assert rc == 1 and "timing" in capsys.readouterr().err
    assert not (out / "kvpath" / "kvpath.bit.bin").exists()


def test_a_real_bit_left_by_vivado_is_used_and_a_stale_one_dropped(tmp_path, rtl):
    out = tmp_path / "out"
    p = BoardParams(n_masters=2)
    app.build(out, p, rtl, which=no_vivado)
    (out / "kvpath.bit").write_bytes(make_bit(bit_words(seed=3)))
    app.build(out, p, rtl, which=no_vivado)               # same inputs: the bitstream is still theirs
    assert (out / "kvpath" / "kvpath.bit.bin").exists()
    app.build(out, BoardParams(n_masters=2, pl_clk_mhz=200), rtl, which=no_vivado)   # new inputs
    assert not (out / "kvpath.bit").exists() and not (out / "kvpath" / "kvpath.bit.bin").exists()


def test_regmap_travels_in_the_app_folder_and_a_stale_one_is_dropped(tmp_path, rtl):
    out = tmp_path / "out"
    regmap = tmp_path / "kvpath_regs.json"
    regmap.write_text('{"schema": "kvpath-regmap/1"}\n')
    app.build(out, BoardParams(n_masters=2), rtl, regmap=regmap, which=no_vivado)
    assert (out / "kvpath" / "kvpath_regs.json").read_text() == regmap.read_text()
    app.build(out, BoardParams(n_masters=2), rtl, which=no_vivado)
    assert not (out / "kvpath" / "kvpath_regs.json").exists()


def test_new_verilog_under_the_same_script_drops_the_bitstream(tmp_path, rtl):
    """Same ports, another engine configuration: build.tcl is unchanged, the bitstream is not theirs."""
    out = tmp_path / "out"
    p = BoardParams(n_masters=2)
    app.build(out, p, rtl, which=no_vivado)
    (out / "kvpath.bit").write_bytes(make_bit())
    tcl = (out / "build.tcl").read_text()
    rtl[1].write_text("module kvpath_csr(); wire changed; endmodule\n")
    app.build(out, p, rtl, which=no_vivado)
    assert (out / "build.tcl").read_text() == tcl
    assert not (out / "kvpath.bit").exists()
