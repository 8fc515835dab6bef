"""The overlay compiles with dtc, and decompiling it gives back the nodes and values intended."""

import pytest
from tests.boards.support import parse_dts

from kvpath.boards.kv260 import overlay
from kvpath.boards.kv260.params import BoardParams

UNRESOLVED = 0xFFFFFFFF  # what dtc puts in a cell that __fixups__ patches at load time


def load(tmp_path, p):
    dtso, dtbo, warnings = overlay.write(tmp_path, p)
    assert warnings == "", warnings
    return parse_dts(overlay.decompile(dtbo))


def fixups(tree):
    """label -> list of (path, property, byte offset) from __fixups__."""
    out = {}
    for label, (value,) in tree["__fixups__"].items():
        out[label] = [tuple(ref.rsplit(":", 2)) for ref in value.split("\0") if ref]
    return out


def fragment_for(tree, label):
    (path, prop, off), = [f for f in fixups(tree)[label] if f[1] == "target"]
    assert tree[path.strip("/")]["target"] == [[UNRESOLVED]]
    return tree[path.strip("/")]["__overlay__"], path


@pytest.mark.parametrize("p", [
    BoardParams(),
    BoardParams(n_masters=4, pl_clk_mhz=200, hpm0_width=128, kv_size=1 << 30),
    BoardParams(n_masters=2, reg_base=0xA004_0000, reg_size=0x1000, app="kvx", uio_name="kvx",
                udmabuf_name="kvbuf"),
], ids=["default", "4masters-128bit", "moved"])
def test_overlay_contents(tmp_path, p, dtc):
    tree = load(tmp_path, p)
    fx = fixups(tree)

    full, full_path = fragment_for(tree, "fpga_full")
    assert full["firmware-name"] == [f"{p.app}.bit.bin"]
    assert full["resets"] == [[UNRESOLVED, 116]]
    assert (f"{full_path}/__overlay__", "resets", "0") in fx["zynqmp_reset"]

    afi = full["afi0"]
    assert afi["compatible"] == ["xlnx,afi-fpga"]
    cells = afi["config-afi"][0]
    pairs = dict(zip(cells[::2], cells[1::2]))
    want = {4 + 2 * i + rw: 0 for i in range(p.n_masters) for rw in (0, 1)}
    want[14] = (0x200 if p.hpm0_width == 128 else 0) | 0x800
    assert pairs == want and len(cells) == 2 * len(want)

    clk = full["clocking0"]
    assert clk["compatible"] == ["xlnx,fclk"]
    assert clk["assigned-clock-rates"] == [[p.pl_clk_hz]]
    assert clk["assigned-clocks"] == clk["clocks"] == [[UNRESOLVED, 71]]
    assert {(f"{full_path}/__overlay__/clocking0", prop, "0") for prop in ("clocks", "assigned-clocks")} \
        == set(fx["zynqmp_clk"])

    amba, amba_path = fragment_for(tree, "amba")
    uio = amba[f"{p.uio_name}@{p.reg_base:x}"]
    assert uio["compatible"] == ["generic-uio"]
    assert uio["reg"] == [[0, p.reg_base, 0, p.reg_size]]
    assert uio["interrupts"] == [[0, 89, 4]]          # SPI 89 = pl_ps_irq0[0], level high
    assert uio["interrupt-parent"] == [[UNRESOLVED]]
    assert fx["gic"] == [(f"{amba_path}/__overlay__/{p.uio_name}@{p.reg_base:x}", "interrupt-parent", "0")]
    assert amba["#address-cells"] == amba["#size-cells"] == [[2]]

    buf = amba[p.udmabuf_name]
    assert buf["compatible"] == ["ikwzm,u-dma-buf"]
    assert buf["device-name"] == [p.udmabuf_name]
    assert buf["size"] == [[p.kv_size >> 32, p.kv_size & 0xFFFFFFFF]]
    assert "dma-coherent" not in buf                   # HP ports do not snoop the caches

    assert set(fx) == {"fpga_full", "amba", "zynqmp_reset", "zynqmp_clk", "gic"}


def test_dtc_errors_are_reported(tmp_path, dtc):
    bad = tmp_path / "bad.dtso"
    bad.write_text("/dts-v1/;\n/plugin/;\n&amba { x = <1 2; };\n")
    with pytest.raises(overlay.DtcError, match="dtc failed"):
        overlay.compile_dtso(bad, tmp_path / "bad.dtbo")


def test_afi_values():
    assert overlay.afi_config(BoardParams(n_masters=1)) == [(4, 0), (5, 0), (14, 0x800)]
    assert overlay.afi_config(BoardParams(n_masters=3, hpm0_width=128))[-3:] == [(8, 0), (9, 0), (14, 0xA00)]


@pytest.mark.parametrize("n", [1, 4])
def test_overlay_with_the_dma_bridge(tmp_path, dtc, n):
    p = BoardParams(n_masters=n, dma_bridge=True)
    tree = load(tmp_path, p)
    amba, _ = fragment_for(tree, "amba")
    node = amba[f"{p.dma_uio_name}@{p.dma_base:x}"]
    assert node["compatible"] == ["generic-uio"]
    assert node["reg"] == [[0, 0xA001_0000, 0, 0x10000]]
    assert "interrupts" not in node                     # the driver polls DMASR
    size = p.kv_size + p.dma_staging
    assert amba[p.udmabuf_name]["size"] == [[size >> 32, size & 0xFFFFFFFF]]
    full, _ = fragment_for(tree, "fpga_full")
    cells = full["afi0"]["config-afi"][0]
    pairs = dict(zip(cells[::2], cells[1::2]))
    hps = sorted(set(range(n)) | {min(n, 3)})          # the DMA's own HP port, or HP3 shared
    assert pairs == {**{4 + 2 * i + rw: 0 for i in hps for rw in (0, 1)}, 14: 0x800}
    # without the bridge nothing changes
    assert overlay.generate_dtso(BoardParams(n_masters=n)) == overlay.generate_dtso(
        BoardParams(n_masters=n, dma_base=0xA002_0000, dma_staging=1 << 20))
