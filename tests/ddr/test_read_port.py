"""ReadPort on Icarus (and one Verilator case) against cocotbext-axi's RAM and the golden model
(sim/ddr/tb_read_port.py)."""

import pytest

from kvpath.config import KVPathConfig
from kvpath.hdl.ddr.read_port import ReadPort
from tests.ddr.support import SEED, run

TOP = "kvpath_read_port"
SMALL = {"KVPATH_RP_READS": 10, "KVPATH_RP_BULK_ROWS": 40}


def _run(params, simulator, build_dir, env=None, testcase=None, seed=SEED):
    return run(ReadPort(KVPathConfig(**params)), TOP, "tb_read_port", simulator, build_dir,
               params=params, env={**SMALL, **(env or {})}, testcase=testcase, seed=seed)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "mxfp4"])
def test_read_port(build_root, fmt, tmp_path):
    """Every cocotb test of tb_read_port at default lanes; prints the measured beats per clock."""
    report = tmp_path / "rate.txt"
    _run({"fmt": fmt}, "icarus", build_root / f"read_port_{fmt}", env={"KVPATH_RP_REPORT": report})
    print(report.read_text().strip())


@pytest.mark.verilator
def test_read_port_verilator(build_root, tmp_path):
    report = tmp_path / "rate.txt"
    _run({"fmt": "q4_1"}, "verilator", build_root / "read_port_verilator", env={"KVPATH_RP_REPORT": report})
    print(report.read_text().strip())


def test_static_refused():
    with pytest.raises(NotImplementedError, match="int8_ph"):
        ReadPort(KVPathConfig(fmt="int8_ph"))


@pytest.mark.long
@pytest.mark.parametrize("fmt,lanes", [("q8_0", 16), ("q4_0", 8), ("mxfp4", 32), ("q4_0", 64),
                                       ("mxint8", 128), ("q4_1", 16)])
def test_read_port_long(build_root, fmt, lanes, tmp_path):
    """More READs, other lane counts, a long throughput run."""
    report = tmp_path / "rate.txt"
    params = {"fmt": fmt, "dequant_lanes": lanes}
    _run(params, "verilator", build_root / f"read_port_long_{fmt}_{lanes}",
         env={"KVPATH_RP_READS": 80, "KVPATH_RP_BULK_ROWS": 600, "KVPATH_RP_REPORT": report}, seed=SEED + 7)
    print(report.read_text().strip())
