"""BytePacker / ByteUnpacker on Icarus (all engine sizes) and Verilator (one each)."""

import pytest

from kvpath.hdl.ddr.repack import BytePacker, ByteUnpacker
from tests.ddr.support import run

PACK = [16, 17, 18, 20, 33, 34, 68, 136]   # quantized block sizes and multi-block beats -> 16
UNPACK = [16, 17, 18, 34, 136]             # 16 -> blocks


def _run(kind, n_in, n_out, simulator, build_root):
    comp = BytePacker(n_in, n_out) if kind == "pack" else ByteUnpacker(n_in, n_out)
    top = f"kvpath_{kind}_{n_in}_{n_out}"
    run(comp, top, "tb_repack", simulator, build_root / f"{top}_{simulator}",
        env={"KVPATH_DDR_REPACK": f"{kind}:{n_in}:{n_out}"})


@pytest.mark.parametrize("n_in", PACK)
def test_packer(build_root, n_in):
    _run("pack", n_in, 16, "icarus", build_root)


@pytest.mark.parametrize("n_out", UNPACK)
def test_unpacker(build_root, n_out):
    _run("unpack", 16, n_out, "icarus", build_root)


@pytest.mark.verilator
@pytest.mark.parametrize("kind,n_in,n_out", [("pack", 136, 16), ("unpack", 16, 18)])
def test_repack_verilator(build_root, kind, n_in, n_out):
    _run(kind, n_in, n_out, "verilator", build_root)


def test_bad_sizes():
    with pytest.raises(ValueError):
        BytePacker(8, 16)
    with pytest.raises(ValueError):
        ByteUnpacker(18, 16)
