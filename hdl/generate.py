"""What ``kvpath generate`` writes: each block's Verilog under its fixed module name, and the register map.

The module names are part of the contract with a user's design (and with the testbenches, which
build the same blocks under the same names), so they are declared here once.
"""

from __future__ import annotations

from pathlib import Path

from amaranth.back import verilog

from kvpath.config import KVPathConfig

MODULES = {
    "quantizer": "kvpath_quantizer",
    "dequantizer": "kvpath_dequantizer",
    "csr": "kvpath_csr",
    "top": "kvpath_top",
    "kvcache": "kvpath_kvcache",
    "axi_top": "kvpath_axi_top",
    "hadamard": "kvpath_hadamard",
}


def write_verilog(component, name: str, path: Path) -> Path:
    """Convert an Amaranth component to one Verilog file whose top module is ``name``.

    Source locations are left out so that the text depends on the design only, not on where the
    Python that describes it lives (tests/top/test_generated_verilog.py relies on that).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(verilog.convert(component, name=name, emit_src=False))
    return path


def generate(config: KVPathConfig, out: Path, *, engine_top: bool | None = None,
             engine_only: bool = False, dma_bridge: bool = False) -> list[tuple[Path, str]]:
    """Write every block of ``config`` and the register map into ``out``; returns (path, what) pairs.

    The KV cache engine's Vivado top (``KVPathAxiTop``, ``kvpath_axi_top``) is written for every
    format (block-scaled and static-scale) whenever the engine supports ``config``; what it still
    refuses is a bus wider than a block-scaled format's block (``bus_bytes`` 32 or 64 with ggml /
    MX formats). ``engine_top=False`` leaves it out, ``engine_top=True`` requires it (the engine's
    NotImplementedError, naming what it lacks, is raised instead of skipping). ``engine_only=True``
    writes the engine top (required) and the register map only: what a Vivado build of the KV cache
    reads (``kvpath build``).
    ``dma_bridge=True`` builds that top with its AXI DMA stream bridge (``KVPathAxiTop(dma_bridge=True)``,
    what ``kvpath build`` uses); the default is the plain top.
    With ``config.rotation`` set, the engine rotates K/V on its write path, and the Hadamard unit is
    also written alone (``kvpath_hadamard``, ``hdl/rotate/hadamard.py``, the write path's lanes) for the
    attention side: Q by the same matrix, and the output back.
    """
    from kvpath.hdl.ctrl.csr import CSRBlock
    from kvpath.hdl.top.axi_top import KVPathAxiTop
    from kvpath.hdl.top.top import KVPathTop, build_datapaths
    from kvpath.regmap import write_all

    out = Path(out)
    engine = None
    engine_top = True if engine_only else engine_top
    if engine_top is not False:
        # First, so that a refused configuration leaves no other block built and unused.
        try:
            engine = KVPathAxiTop(config, dma_bridge=dma_bridge)
        except NotImplementedError:
            if engine_top:
                raise
    described = f"format {config.fmt}, {config.elem} elements"
    blocks = []
    if not engine_only:
        quantizer, dequantizer = build_datapaths(config)
        blocks = [
            (quantizer, "quantizer", f"quantizer, {described}, {config.quant_lanes} lanes"),
            (dequantizer, "dequantizer", f"dequantizer, {described}, {config.dequant_lanes} lanes"),
            (CSRBlock(config), "csr", "AXI4-Lite register block"),
            (KVPathTop(config), "top", f"KV path top level, {described}, "
                                       f"{config.quant_lanes}/{config.dequant_lanes} lanes"),
        ]
    if engine is not None:
        blocks.append((engine, "axi_top", f"KV cache engine, flat AXI top for Vivado, {described}, "
                                          f"{config.read_ports} read port(s)"))
    if config.rotation:
        from kvpath.hdl.rotate.hadamard import Hadamard

        blocks.append((Hadamard(config.rotation, config.quant_lanes), "hadamard",
                       f"Hadamard rotation, n {config.rotation}, {config.quant_lanes} FP16 lanes"))
    written = []
    for component, block, what in blocks:
        written.append((write_verilog(component, MODULES[block], out / f"{MODULES[block]}.v"), what))
    written += [(path, "register map") for path in write_all(out, config)]
    return written
