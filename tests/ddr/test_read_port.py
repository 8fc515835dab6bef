"""ReadPort on Icarus (and one Verilator case) against cocotbext-axi's RAM and the golden model
(sim/ddr/tb_read_port.py)."""

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, connect, flipped

from kvpath.config import KVPathConfig
from kvpath.hdl.ddr.read_port import ReadPort
from kvpath.hdl.static.cache import ScaleCache
from kvpath.hdl.static.write_port import ScaleWrite
from tests.ddr.support import SEED, run

TOP = "kvpath_read_port"
SMALL = {"KVPATH_RP_READS": 10, "KVPATH_RP_BULK_ROWS": 40}


class ReadPortWithCache(wiring.Component):
    """A static-format ReadPort with a ScaleCache dequantizer copy on its ``scales`` port: the port's
    members, ``scales`` replaced by the cache's ``scale_write`` stream (as KVCacheTop wires it)."""

    def __init__(self, config: KVPathConfig):
        self.port = ReadPort(config)
        self.cache = ScaleCache(config.fmt, config.elem, config, dequant_lanes=config.dequant_lanes)
        members = {k: v for k, v in self.port.signature.members.items() if k != "scales"}
        super().__init__({**members, "scale_write": In(stream.Signature(ScaleWrite))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.port, m.submodules.cache = self.port, self.cache
        connect(m, self.port.scales, self.cache.dequant)
        connect(m, flipped(self.scale_write), self.cache.write)
        for name, member in self.signature.members.items():
            if name == "scale_write":
                continue
            ours, theirs = getattr(self, name), getattr(self.port, name)
            if member.is_port:
                m.d.comb += theirs.eq(ours) if member.flow == wiring.In else ours.eq(theirs)
            elif member.flow == wiring.In:
                connect(m, flipped(ours), theirs)
            else:
                connect(m, theirs, flipped(ours))
        return m


def _run(params, simulator, build_dir, env=None, testcase=None, seed=SEED):
    config = KVPathConfig(**params)
    dut = ReadPortWithCache(config) if config.format.needs_scale_cache else ReadPort(config)
    return run(dut, TOP, "tb_read_port", simulator, build_dir,
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


# int4 per channel at 16 lanes: 8-byte beats of codes, two per 16-byte bus beat (the splitter), a
# context per run and per-channel scales from the cache; BF16.
STATIC_SMALL = dict(max_layers=2, max_kv_heads=2, max_head_dim=128)


def test_read_port_static(build_root, tmp_path):
    report = tmp_path / "rate.txt"
    _run({"fmt": "int4_pc", "elem": "bf16", **STATIC_SMALL}, "icarus", build_root / "read_port_int4_pc",
         env={"KVPATH_RP_REPORT": report})
    print(report.read_text().strip())


@pytest.mark.long
@pytest.mark.parametrize("fmt,lanes,bus", [("int8_ph", 16, 16), ("int8_pc", 32, 16), ("int4_ph", 8, 16),
                                           ("int4_pc", 16, 32)])
def test_read_port_static_long(build_root, fmt, lanes, bus, tmp_path):
    """The other static formats: 16-byte codes (the unpacker passes them), 32-byte (two bus beats
    each), 4-byte (four per bus beat); and 8-byte codes on a 32-byte bus, where runs of 48-byte
    rows (head_dim 96) end inside a bus beat."""
    report = tmp_path / "rate.txt"
    _run({"fmt": fmt, "dequant_lanes": lanes, "bus_bytes": bus, **STATIC_SMALL}, "icarus",
         build_root / f"read_port_{fmt}_{lanes}_{bus}", env={"KVPATH_RP_REPORT": report})
    print(report.read_text().strip())


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
