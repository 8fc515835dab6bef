"""kvpath build --board kv260: the engine's Verilog, the Vivado inputs, the overlay and the Kria app
folder; with Vivado on PATH, the bitstream too.

Without ``--verilog`` the engine's Vivado top ``kvpath_axi_top`` is generated here (by
``kvpath.hdl.generate``, with one read port and AXI4 master per ``--masters``, and the register map
the app folder carries for ``kvpath program``). ``--verilog`` takes Verilog files, or a ``kvpath
generate`` output folder, instead.

The generated top has the AXI DMA stream bridge (``KVPathAxiTop(dma_bridge=True)``) and the block
design the AXI DMA that feeds it: the board has no other producer or consumer for the K/V streams
(docs/kv260.md, "The stream path"). ``--no-dma`` builds the plain top with its streams tied off; with
``--verilog`` the Verilog's ports decide.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvpath.config import ELEM_TYPES, FORMATS, KVPathConfig

BOARDS = ("kv260",)
REGMAP_NAME = "kvpath_regs.json"


class EngineTopMissing(RuntimeError):
    """This checkout cannot generate the engine's Vivado top."""


def _defines_top(path: Path, top: str) -> bool:
    return f"module {top}" in path.read_text(errors="replace")


def generated_engine(config: KVPathConfig, out: Path, *, dma_bridge: bool = True) -> tuple[list[Path], Path | None]:
    """Generate the engine into ``out``; return ([the Verilog defining the Vivado top], register map).

    ``config.read_ports`` is the number of AXI4 masters the top gets. A configuration the engine
    does not support (a bus wider than a block-scaled format's block) raises EngineTopMissing with
    the engine's reason; every format, static-scale ones included, is supported at the KV260's bus.

    Only the top (and the register map) is generated, and only the file that defines the top goes
    to Vivado: each generated file is a whole hierarchy on its own, so the other blocks of
    ``kvpath generate`` would only add unused modules to the project.
    """
    from kvpath.boards.kv260.ports import TOP
    from kvpath.hdl import generate as hdl_generate

    if TOP not in getattr(hdl_generate, "MODULES", {}).values():
        raise EngineTopMissing(
            f"the engine's Vivado top {TOP} is not in this build of kvpath yet (kvpath.hdl.generate "
            f"has no generator for it); pass --verilog PATH with a Verilog file that defines {TOP}")
    try:
        written = [path for path, _ in hdl_generate.generate(config, out, engine_only=True, dma_bridge=dma_bridge)]
    except NotImplementedError as e:
        raise EngineTopMissing(f"cannot generate {TOP} for {config.fmt}/{config.elem}: {e}") from e
    tops = [p for p in written if p.suffix == ".v" and _defines_top(p, TOP)]
    if not tops:
        raise EngineTopMissing(f"kvpath.hdl.generate lists {TOP} but wrote no file defining it "
                               f"(wrote: {', '.join(p.name for p in written)})")
    regmap = next((p for p in written if p.name == REGMAP_NAME), None)
    return tops[:1], regmap


def given_engine(paths: list[Path]) -> tuple[list[Path], Path | None]:
    """Verilog from ``--verilog``: files as given; a folder contributes the file defining the top.
    A register map next to the Verilog is taken along."""
    from kvpath.boards.kv260.ports import TOP

    verilog: list[Path] = []
    for path in paths:
        if path.is_dir():
            tops = sorted(p for p in path.glob("*.v") if _defines_top(p, TOP))
            if not tops:
                raise FileNotFoundError(f"no Verilog file in {path} defines module {TOP}")
            verilog += tops[:1]
        else:
            verilog.append(path)
    besides = {v.parent / REGMAP_NAME for v in verilog if (v.parent / REGMAP_NAME).is_file()}
    return verilog, (besides.pop() if len(besides) == 1 else None)


def _has_dma_bridge(verilog: list[Path]) -> bool:
    """Whether the Verilog's kvpath_axi_top was built with the DMA bridge (s_axis_dma / m_axis_dma)."""
    from kvpath.boards.kv260.ports import TOP, dma_bridged, group, parse_verilog_ports

    for v in verilog:
        if _defines_top(v, TOP):
            return dma_bridged(group(parse_verilog_ports(v.read_text(errors="replace"), TOP))[1])
    return False


def main(argv=None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", required=True, choices=BOARDS)
    ap.add_argument("-o", "--output", required=True, help="folder to write into")
    ap.add_argument("--masters", type=int, default=1, help="AXI4 masters of kvpath_axi_top, 1..4 "
                    "(master i goes to S_AXI_HP<i>_FPD)")
    ap.add_argument("--clock-mhz", type=float, default=250.0, help="pl_clk0 frequency")
    ap.add_argument("--verilog", action="append", type=Path, metavar="PATH",
                    help="Verilog file (repeatable) or kvpath generate folder instead of generating "
                         "the engine here")
    ap.add_argument("--regmap", type=Path, help="kvpath_regs.json of the build (default: the one "
                    "generated, or the one next to --verilog)")
    ap.add_argument("--format", dest="fmt", choices=sorted(FORMATS), default=KVPathConfig.fmt,
                    help="engine format when generating here")
    ap.add_argument("--input", dest="elem", choices=ELEM_TYPES, default=KVPathConfig.elem,
                    help="K/V element type when generating here")
    ap.add_argument("--jobs", type=int, default=4, help="Vivado jobs")
    ap.add_argument("--no-dma", action="store_true",
                    help="build without the stream path (no AXI DMA; the engine's K/V streams tied off). "
                         "By default the generated engine has its DMA bridge and the block design an AXI "
                         "DMA (docs/kv260.md, 'The stream path'); with --verilog it follows the Verilog")
    args = ap.parse_args(argv)

    from kvpath.boards.kv260 import app, overlay
    from kvpath.boards.kv260.params import BoardParams

    out = Path(args.output)
    try:
        if args.verilog:
            verilog, regmap = given_engine(args.verilog)
            bridged = _has_dma_bridge(verilog)   # the Verilog decides: the board flow follows it
        else:
            bridged = not args.no_dma
        params = BoardParams(n_masters=args.masters, pl_clk_mhz=args.clock_mhz, dma_bridge=bridged)
        if not args.verilog:
            config = KVPathConfig(fmt=args.fmt, elem=args.elem, read_ports=params.n_masters)
            verilog, regmap = generated_engine(config, out / "engine", dma_bridge=bridged)
        if args.regmap is not None:
            regmap = args.regmap
        if regmap is None:
            print(f"note: no {REGMAP_NAME} for this Verilog: `kvpath program` will need --regmap "
                  "or --no-check")
        return app.build(out, params, verilog, regmap=regmap, jobs=args.jobs)
    except (ValueError, RuntimeError, OSError, overlay.DtcError) as e:
        print(f"{prog or 'kvpath build'}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
