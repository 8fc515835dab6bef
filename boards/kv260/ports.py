"""The top-level port contract of ``kvpath_axi_top`` and how its ports group into bus interfaces.

The block design instantiates the Verilog top as a module reference, so Vivado infers one bus
interface per name prefix (``s_axil_*`` -> ``s_axil``). This module makes the same grouping
explicitly, so the TCL generator and the tests agree with Vivado on which port belongs to which
interface, and so a port nobody planned for is an error here rather than a dangling pin on the
board.

Port lists come from ``parse_verilog_ports`` (the real list, from the generated Verilog) or from
``reference_ports`` (the contract as written down, for tests and for dry runs without Verilog).

Stream interfaces are whatever ``s_axis_<name>_*`` / ``m_axis_<name>_*`` groups the Verilog has
(the top derives them from ``KVCacheTop``'s streams), so a stream added to the engine needs no edit
here; each is tied off or left open on the board, except the DMA bridge's.

The DMA bridge (``KVPathAxiTop(dma_bridge=True)``, docs/kv260.md "The stream path"): the K/V input
``s_axis_kv`` is replaced by ``s_axis_dma`` (TDATA, TLAST: the AXI DMA's MM2S) and read port 0's
``m_axis_kv0`` by ``m_axis_dma`` (TDATA, TKEEP, TLAST: the DMA's S2MM). A top has either the plain
pair or the bridged pair (``dma_bridged``), never a mix; the block design then adds the AXI DMA.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The generator's names (kvpath.hdl.generate.MODULES["axi_top"], kvpath.hdl.top.axi_top), written
# here again because the board flow imports no other part of kvpath (docs/architecture.md);
# tests/top/test_axi_top.py checks the generated top against this contract and reference_ports.
TOP = "kvpath_axi_top"
CLOCK, RESET, IRQ = "aclk", "aresetn", "irq"
AXIL_ADDR_WIDTH = 16   # the 64 KiB register window

AXIL_SIGNALS = ("awaddr", "awprot", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready",
                "bresp", "bvalid", "bready", "araddr", "arprot", "arvalid", "arready",
                "rdata", "rresp", "rvalid", "rready")
AXI_READ = ("arid", "araddr", "arlen", "arsize", "arburst", "arlock", "arcache", "arprot", "arqos",
            "arvalid", "arready", "rid", "rdata", "rresp", "rlast", "rvalid", "rready")
AXI_WRITE = ("awid", "awaddr", "awlen", "awsize", "awburst", "awlock", "awcache", "awprot", "awqos",
             "awvalid", "awready", "wdata", "wstrb", "wlast", "wvalid", "wready",
             "bid", "bresp", "bvalid", "bready")
AXI_OPTIONAL = ("arregion", "awregion", "aruser", "awuser", "wuser", "ruser", "buser")
AXIS_SIGNALS = ("tdata", "tuser", "tlast", "tvalid", "tready", "tkeep", "tstrb", "tid", "tdest")
# The DMA bridge's streams, and the engine streams they replace (kvpath.hdl.top.axi_top.DMA_PORTS).
DMA_IN, DMA_OUT = "s_axis_dma", "m_axis_dma"
DMA_REPLACES = {DMA_IN: "s_axis_kv", DMA_OUT: "m_axis_kv0"}
# TDATA widths the AXI DMA's streams take (PG021) that can also carry the bridge's 64-bit header.
DMA_STREAM_WIDTHS = (64, 128, 256, 512, 1024)

# Which direction each signal has on the *slave* side of its interface.
_SLAVE_OUT = {"awready", "wready", "bresp", "bvalid", "bid", "arready", "rdata", "rresp", "rvalid",
              "rid", "rlast", "buser", "ruser", "tready"}


class PortError(ValueError):
    """The port list does not match the kvpath_axi_top contract."""


@dataclass(frozen=True)
class Port:
    name: str
    direction: str  # "input" | "output"
    width: int = 1

    def __post_init__(self):
        if self.direction not in ("input", "output"):
            raise PortError(f"port {self.name}: direction {self.direction!r} is not input/output")
        if self.width < 1:
            raise PortError(f"port {self.name}: width {self.width} < 1")


@dataclass(frozen=True)
class Interface:
    """A bus interface Vivado infers from a name prefix."""

    name: str          # e.g. "m_axi1"
    kind: str          # "axil_slave" | "axi_master" | "axis_slave" | "axis_master"
    ports: tuple[Port, ...]

    def signal(self, sig: str) -> Port | None:
        return next((p for p in self.ports if p.name == f"{self.name}_{sig}"), None)

    @property
    def signals(self) -> set[str]:
        return {p.name[len(self.name) + 1:] for p in self.ports}


# --- port lists ------------------------------------------------------------------------------------

def parse_verilog_ports(text: str, module: str = TOP) -> list[Port]:
    """Ports of ``module`` in Verilog ``text``, in declaration order.

    Handles what Yosys/Amaranth emit (non-ANSI: names in the header, ``input [W:0] x;`` in the
    body) and ANSI headers (``input wire [W:0] x,``). Only constant ranges: the generated Verilog
    has no parameters on the top.
    """
    text = re.sub(r"/\*.*?\*/|\(\*.*?\*\)", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    m = re.search(rf"\bmodule\s+{re.escape(module)}\b", text)
    if not m:
        raise PortError(f"no module {module!r} in the Verilog text")
    end = text.find("endmodule", m.end())
    body = text[m.end(): end if end >= 0 else None]
    ports: dict[str, Port] = {}
    order: list[str] = []
    for stmt in re.split(r";", body):
        for d in re.finditer(r"\b(input|output|inout)\b(.*?)(?=\b(?:input|output|inout)\b|$)", stmt, re.S):
            direction, rest = d.group(1), d.group(2)
            if direction == "inout":
                raise PortError("inout ports are not part of the kvpath_axi_top contract")
            rng = re.match(r"\s*(?:wire|reg|logic)?\s*(?:signed)?\s*\[\s*(\d+)\s*:\s*(\d+)\s*\]", rest)
            width = abs(int(rng.group(1)) - int(rng.group(2))) + 1 if rng else 1
            names = rest[rng.end():] if rng else re.sub(r"^\s*(?:wire|reg|logic)?\s*(?:signed)?", "", rest)
            for name in re.findall(r"[A-Za-z_][A-Za-z0-9_$]*", names.split(")")[0]):
                if name in ("wire", "reg", "logic", "signed"):
                    continue
                if name not in ports:
                    order.append(name)
                ports[name] = Port(name, direction, width)
    if not ports:
        raise PortError(f"module {module!r} declares no ports")
    return [ports[n] for n in order]


def reference_ports(n_masters: int, *, n_read_streams: int | None = None, addr_bits: int = 40,
                    data_bits: int = 128, id_bits: int = 4, axis_data_bits: int = 256,
                    axis_user_bits: int = 8, dma_bridge: bool = False) -> list[Port]:
    """The contract as written down (docs/kv260.md): what the engine's Vivado top is expected to have.

    Tests build a synthetic Verilog header from it; it is not the engine's own port list (the
    engine has one read stream per master: ``n_read_streams`` defaults to ``n_masters``;
    tests/top/test_axi_top.py compares the names and directions with the generated top).
    """
    n_read_streams = n_masters if n_read_streams is None else n_read_streams
    ports = [Port(CLOCK, "input"), Port(RESET, "input")]
    axil_w = {"awaddr": AXIL_ADDR_WIDTH, "araddr": AXIL_ADDR_WIDTH, "awprot": 3, "arprot": 3,
              "wdata": 32, "rdata": 32, "wstrb": 4, "bresp": 2, "rresp": 2}
    for sig in AXIL_SIGNALS:
        ports.append(Port(f"s_axil_{sig}", "output" if sig in _SLAVE_OUT else "input", axil_w.get(sig, 1)))
    axi_w = {"addr": addr_bits, "id": id_bits, "len": 8, "size": 3, "burst": 2, "lock": 1, "cache": 4,
             "prot": 3, "qos": 4, "resp": 2, "data": data_bits, "strb": data_bits // 8}
    for i in range(n_masters):
        sigs = AXI_READ + (AXI_WRITE if i == 0 else ())
        for sig in sigs:
            base = sig[2:] if sig[:2] in ("ar", "aw") else sig[1:]
            width = axi_w.get(base, 1)
            # master side: the slave's outputs are the master's inputs
            ports.append(Port(f"m_axi{i}_{sig}", "input" if sig in _SLAVE_OUT else "output", width))
    axis_w = {"tdata": axis_data_bits, "tuser": axis_user_bits, "tkeep": axis_data_bits // 8}
    if dma_bridge:
        for sig in ("tdata", "tlast", "tvalid", "tready"):
            ports.append(Port(f"{DMA_IN}_{sig}", "output" if sig == "tready" else "input", axis_w.get(sig, 1)))
    else:
        for sig in ("tdata", "tuser", "tlast", "tvalid", "tready"):
            ports.append(Port(f"s_axis_kv_{sig}", "output" if sig == "tready" else "input", axis_w.get(sig, 1)))
    for stream in ("cmd", "memset"):   # 64-bit words: a command; a scale write (index, value)
        for sig in ("tdata", "tvalid", "tready"):
            ports.append(Port(f"s_axis_{stream}_{sig}", "output" if sig == "tready" else "input",
                              64 if sig == "tdata" else 1))
    for p in range(n_read_streams):
        if p == 0 and dma_bridge:
            for sig in ("tdata", "tkeep", "tlast", "tvalid", "tready"):
                ports.append(Port(f"{DMA_OUT}_{sig}", "input" if sig == "tready" else "output", axis_w.get(sig, 1)))
            continue
        for sig in ("tdata", "tuser", "tlast", "tvalid", "tready"):
            ports.append(Port(f"m_axis_kv{p}_{sig}", "input" if sig == "tready" else "output",
                              axis_w.get(sig, 1)))
    ports.append(Port(IRQ, "output"))
    return ports


# --- grouping and the contract ---------------------------------------------------------------------

SINGLE = (CLOCK, RESET, IRQ)
_PREFIXES = (
    (re.compile(r"^(s_axil)_(\w+)$"), "axil_slave", AXIL_SIGNALS),
    (re.compile(r"^(m_axi\d)_(\w+)$"), "axi_master", AXI_READ + AXI_WRITE + AXI_OPTIONAL),
    (re.compile(r"^(s_axis_[a-z][a-z0-9]*)_(\w+)$"), "axis_slave", AXIS_SIGNALS),
    (re.compile(r"^(m_axis_[a-z][a-z0-9]*)_(\w+)$"), "axis_master", AXIS_SIGNALS),
)


def group(ports: list[Port]) -> tuple[dict[str, Port], list[Interface]]:
    """Split ports into the single wires (aclk, aresetn, irq) and the prefix interfaces.

    Raises PortError for a port that fits neither, a duplicate, or a signal a bus does not have.
    """
    seen: set[str] = set()
    singles: dict[str, Port] = {}
    members: dict[str, list[Port]] = {}
    kinds: dict[str, str] = {}
    for p in ports:
        if p.name in seen:
            raise PortError(f"port {p.name} is declared twice")
        seen.add(p.name)
        if p.name in SINGLE:
            singles[p.name] = p
            continue
        for rx, kind, allowed in _PREFIXES:
            m = rx.match(p.name)
            if m:
                if m.group(2) not in allowed:
                    raise PortError(f"port {p.name}: {m.group(2)!r} is not a {kind} signal")
                members.setdefault(m.group(1), []).append(p)
                kinds[m.group(1)] = kind
                break
        else:
            raise PortError(f"port {p.name} belongs to no known interface (expected {CLOCK}, {RESET}, "
                            f"{IRQ}, s_axil_*, m_axi<i>_*, s_axis_<name>_*, m_axis_<name>_*)")
    return singles, [Interface(n, kinds[n], tuple(members[n])) for n in members]


def check_contract(ports: list[Port], n_masters: int) -> tuple[dict[str, Port], list[Interface]]:
    """Check ``ports`` against the kvpath_axi_top contract for ``n_masters``; return ``group()``.

    Every message names the offending port or interface.
    """
    singles, intfs = group(ports)
    for name, direction in ((CLOCK, "input"), (RESET, "input"), (IRQ, "output")):
        p = singles.get(name)
        if p is None:
            raise PortError(f"missing port {name}")
        if p.direction != direction or p.width != 1:
            raise PortError(f"port {name} must be a 1-bit {direction}, is a {p.width}-bit {p.direction}")
    by = {i.name: i for i in intfs}
    axil = by.get("s_axil")
    if axil is None:
        raise PortError("missing the AXI4-Lite slave s_axil_*")
    missing = sorted(set(AXIL_SIGNALS) - axil.signals)
    if missing:
        raise PortError(f"s_axil lacks {', '.join('s_axil_' + s for s in missing)}")
    for sig, width in (("wdata", 32), ("rdata", 32), ("awaddr", AXIL_ADDR_WIDTH), ("araddr", AXIL_ADDR_WIDTH)):
        if axil.signal(sig).width != width:
            raise PortError(f"s_axil_{sig} is {axil.signal(sig).width} bits, the contract says {width}")
    masters = sorted((i for i in intfs if i.kind == "axi_master"), key=lambda i: i.name)
    names = [m.name for m in masters]
    if names != [f"m_axi{i}" for i in range(n_masters)]:
        raise PortError(f"expected masters m_axi0..m_axi{n_masters - 1} for n_masters={n_masters}, "
                        f"the Verilog has {names or 'none'}")
    for i, m in enumerate(masters):
        need = set(AXI_READ) | (set(AXI_WRITE) if i == 0 else set())
        missing = sorted(need - m.signals)
        if missing:
            raise PortError(f"{m.name} lacks {', '.join(m.name + '_' + s for s in missing)}")
        if i > 0 and m.signals & set(AXI_WRITE):
            raise PortError(f"{m.name} must be read-only (only ar*/r*), it has "
                            f"{', '.join(sorted(m.signals & set(AXI_WRITE)))}")
        for sig, width in (("rdata", 128), ("araddr", 40)):
            if m.signal(sig).width != width:
                raise PortError(f"{m.name}_{sig} is {m.signal(sig).width} bits, the contract says {width}")
    bridged = dma_bridged(intfs)
    if bridged:
        for name, replaced in DMA_REPLACES.items():
            if name not in by:
                raise PortError(f"the DMA bridge needs both {DMA_IN}_* and {DMA_OUT}_*; {name}_* is missing")
            if replaced in by:
                raise PortError(f"{replaced}_* and {name}_* are both there: with the DMA bridge, {name} "
                                f"replaces {replaced}")
            i = by[name]
            if i.kind != ("axis_slave" if name == DMA_IN else "axis_master"):
                raise PortError(f"{name} must be an AXI4-Stream {'slave' if name == DMA_IN else 'master'}")
            extra = sorted(i.signals - {"tdata", "tlast", "tvalid", "tready", "tkeep"})
            if extra or "tlast" not in i.signals:
                raise PortError(f"{name} carries TDATA, TLAST (and TKEEP) only, for the AXI DMA: "
                                f"{'has ' + ', '.join(name + '_' + x for x in extra) if extra else 'lacks tlast'}")
            if i.signal("tdata") is not None and i.signal("tdata").width not in DMA_STREAM_WIDTHS:
                raise PortError(f"{name}_tdata is {i.signal('tdata').width} bits: the AXI DMA bridge takes "
                                f"{', '.join(map(str, DMA_STREAM_WIDTHS))}")
            keep = i.signal("tkeep")
            if keep is not None and keep.width * 8 != i.signal("tdata").width:
                raise PortError(f"{name}_tkeep is {keep.width} bits for a {i.signal('tdata').width}-bit TDATA")
    elif "s_axis_kv" not in by:
        raise PortError("missing the AXI4-Stream slave s_axis_kv_*")
    for i in intfs:
        if i.kind.startswith("axis"):
            for sig in ("tdata", "tvalid", "tready"):
                if i.signal(sig) is None:
                    raise PortError(f"stream {i.name} lacks {i.name}_{sig}")
        for p in i.ports:
            sig = p.name[len(i.name) + 1:]
            slave_out = sig in _SLAVE_OUT
            want = {"axil_slave": "output" if slave_out else "input",
                    "axis_slave": "output" if slave_out else "input",
                    "axi_master": "input" if slave_out else "output",
                    "axis_master": "input" if slave_out else "output"}[i.kind]
            if p.direction != want:
                raise PortError(f"port {p.name} should be an {want} of {TOP}")
    return singles, intfs


def dma_bridged(intfs: list[Interface]) -> bool:
    """Whether the top was built with the DMA bridge (it has ``s_axis_dma`` or ``m_axis_dma``)."""
    return any(i.name in DMA_REPLACES for i in intfs)
