"""Parameter checking and Verilog generation (no simulator)."""

import pytest
from amaranth.back import verilog

from kvpath.hdl.ddr.reader import BurstReader
from kvpath.hdl.ddr.writer import BurstWriter
from kvpath.hdl.ddr.bursts import MoverParams


@pytest.mark.parametrize("bad", [dict(max_burst=12), dict(max_burst=512), dict(data_bytes=24), dict(data_bytes=2),
                                 dict(max_outstanding=0), dict(addr_width=11), dict(cache=16), dict(prot=8),
                                 dict(tag_bits=0)])
def test_bad_parameters(bad):
    with pytest.raises(ValueError):
        MoverParams(**bad)


def test_window():
    assert MoverParams().window == 16
    assert MoverParams(max_burst=256).window == 256
    assert MoverParams(max_burst=256, data_bytes=32).window == 128  # 4 KiB / 32 B


@pytest.mark.parametrize("cls", [BurstWriter, BurstReader])
def test_verilog_ports(cls):
    v = verilog.convert(cls(), name="top", emit_src=False)
    for port in ("cmd__valid", "cmd__ready", "cmd__payload", "drain", "idle", "axi__awaddr" if cls is BurstWriter
                 else "axi__araddr"):
        assert port in v
