"""Vivado inputs for the KV260 build: the XDC and the block-design + build TCL.

Route: the Verilog top ``kvpath_axi_top`` goes into a block design as a *module reference*, next to
the ``zynq_ultra_ps_e`` PS configured from the KV260 board preset. The other route (a PS-only block
design instantiated from an Amaranth top) would need every PS port re-declared in Amaranth and a
second netlist to keep in step with the PS configuration; the module reference lets Vivado do the
AXI plumbing it already knows (SmartConnect, clock/reset association, address map) and keeps the
kvpath Verilog untouched.

What the generated TCL builds::

    PS M_AXI_HPM0_FPD --SmartConnect--> kvpath s_axil            (0xA000_0000, 64 KiB by default)
    kvpath m_axi<i>   ----------------> PS S_AXI_HP<i>_FPD       (HP<i>_DDR_LOW + HP<i>_DDR_HIGH)
    PS pl_clk0        --> every aclk;  PS pl_resetn0 --> proc_sys_reset --> aresetn
    kvpath irq        --> PS pl_ps_irq0[0]
    kvpath streams    : inputs tied off (tvalid=0, tready=1), outputs declared open
    with the DMA bridge (BoardParams.dma_bridge, the top's s_axis_dma/m_axis_dma):
    PS M_AXI_HPM0_FPD --ctrl_smc M01--> kv_dma S_AXI_LITE            (0xA001_0000, 64 KiB by default)
    kv_dma M_AXIS_MM2S --> kvpath s_axis_dma;  kvpath m_axis_dma --> kv_dma S_AXIS_S2MM
    kv_dma M_AXI_MM2S + M_AXI_S2MM --dma_smc--> PS S_AXI_HP<n_masters>_FPD (HP3, shared with m_axi3
                                                through dma_smc, when all four masters are used)
    fan_en_b (A12)    : held low = fan on (active low)

M_AXI_HPM0_FPD is 32 bits wide by default: its only slave is kvpath's 32-bit AXI4-Lite register
block, so the SmartConnect converts protocol only (AXI4 -> AXI4-Lite), with no width converter, and
control traffic needs no bandwidth. The PS side must agree: the AFI width register (FPD_SLCR afi_fs)
was set by the boot firmware for the *boot* design, so the overlay restates it for this bitstream
(``config-afi <14 ...>``, overlay.py). ``hpm0_width=128`` keeps the boot value instead and lets the
SmartConnect convert 128 -> 32 bits, for loaders that do not apply the overlay.

Masters go straight to their HP port (no SmartConnect): the path is bandwidth-bound, and a direct
connection adds no latency or area. The RTL must then respect what the HP port accepts (it is AXI3
inside: bursts of at most 16 beats; and the port's ID width); the TCL reads the ID widths back and
fails if kvpath's are wider.

Every structural step is followed by a read-back (part, board part, PS properties, interface
widths, clock rate, each address segment's offset and range); a wrong result stops the script with
``exit 2`` and a message saying what was expected. Negative setup or hold slack after routing stops
it with ``exit 1`` *before* ``write_bitstream``: a bitstream this script writes met timing.
"""

from __future__ import annotations

import re
from pathlib import Path

from .params import BoardParams
from .platform import KV260Platform
from .ports import CLOCK, IRQ, RESET, Port, TOP, check_contract, dma_bridged

BOARD_PART = "xilinx.com:kv260_som:part0:1.4"
BOARD_CONNECTIONS = "som240_1_connector xilinx.com:kv260_carrier:som240_1_connector:1.3"
BD_NAME = "kvpath_bd"
PS_CELL = "zynq_ultra_ps_e_0"
KV_CELL = "kvpath_0"
SMC_CELL = "ctrl_smc"
DMA_CELL = "kv_dma"
DMA_SMC_CELL = "dma_smc"
DMA_IN, DMA_OUT = "s_axis_dma", "m_axis_dma"
# The AXI DMA (PG021) in direct register mode. Widths that follow the top's streams are added by
# dma_properties(); c_sg_length_width 26 is the largest LENGTH register (64 MiB - 1 per transfer).
DMA_FIXED = {
    "c_include_sg": "0",          # direct register mode: no scatter-gather engine
    "c_sg_length_width": "26",
    "c_addr_width": "40",         # reaches the whole PS address map, DDR_HIGH included
    "c_include_mm2s": "1",
    "c_include_s2mm": "1",
    "c_include_mm2s_dre": "0",    # no realignment engine: buffers are aligned by the driver
    "c_include_s2mm_dre": "0",
    "c_mm2s_burst_size": "16",    # the HP ports are AXI3 inside: 16-beat bursts
    "c_s2mm_burst_size": "16",
}
RST_CELL = "rst_pl0"
FAN_PORT = "fan_en_b"

# PS slave port, its clock pin, its PSU__ index and the address-space name of each HP port.
# HP0..HP3 are S_AXI_GP2..GP5 in the PS configuration (PG201; Xilinx device-tree-xlnx maps
# C_SAXIGP2..5 to config-afi indices 4..11, see overlay.py).
HP = [(f"S_AXI_HP{i}_FPD", f"saxihp{i}_fpd_aclk", 2 + i, f"SAXIGP{2 + i}") for i in range(4)]

# DDR apertures of each HP port in the PS8 address map (UG1085 "System Address Map"): 2 GiB of low
# DDR at 0 and the 32 GiB high-DDR window at 0x8_0000_0000. These are the offsets/ranges that
# Vivado-generated BD scripts for ZynqMP assign to HPn_DDR_LOW / HPn_DDR_HIGH.
DDR_SEGMENTS = (("DDR_LOW", 0x0, 0x8000_0000), ("DDR_HIGH", 0x8_0000_0000, 0x8_0000_0000))

# Every PSU__* property the generated TCL may set, with where it was seen in use. A name outside
# this list is a typo or an untested knob: the tests refuse it.
#   [kria]     Xilinx/kria-base-hardware k26_starter_kits/kv260/scripts/config_bd.tcl (KV260 base)
#   [kr260]    Xilinx/kria-base-hardware k26_starter_kits/kr260/scripts/config_bd.tcl
#   [connectal] cambridgehackers/connectal scripts/connectal-synth-zynq-mpsoc.tcl
#   [cgra]     KastnerRG/cgra4ml fpga/scripts/zcu104.tcl
#   [mini16]   miya4649/mini16_cpu kv260/vivado.tcl (a KV260 module-reference flow)
#   [dtg]      Xilinx device-tree-xlnx (reads C_SAXIGPn/C_MAXIGPn widths and ACT_FREQMHZ back)
KNOWN_PSU_PROPERTIES = {
    "PSU__USE__M_AXI_GP0": "[kria] M_AXI_HPM0_FPD enable",
    "PSU__USE__M_AXI_GP1": "[kria] M_AXI_HPM1_FPD enable",
    "PSU__USE__M_AXI_GP2": "[kria] M_AXI_HPM0_LPD enable",
    "PSU__MAXIGP0__DATA_WIDTH": "[connectal]/[dtg] HPM0_FPD data width",
    "PSU__USE__S_AXI_GP0": "[kria] S_AXI_HPC0_FPD enable",
    "PSU__USE__S_AXI_GP1": "[kria] S_AXI_HPC1_FPD enable",
    "PSU__USE__S_AXI_GP2": "[kria] S_AXI_HP0_FPD enable",
    "PSU__USE__S_AXI_GP3": "[kria] S_AXI_HP1_FPD enable",
    "PSU__USE__S_AXI_GP4": "[kria] S_AXI_HP2_FPD enable",
    "PSU__USE__S_AXI_GP5": "[kria] S_AXI_HP3_FPD enable",
    "PSU__USE__S_AXI_GP6": "[kria] S_AXI_LPD enable",
    "PSU__USE__S_AXI_ACP": "[kria] ACP enable",
    "PSU__USE__S_AXI_ACE": "[kria] ACE enable",
    "PSU__SAXIGP2__DATA_WIDTH": "[connectal]/[dtg] HP0 data width",
    "PSU__SAXIGP3__DATA_WIDTH": "[connectal]/[dtg] HP1 data width",
    "PSU__SAXIGP4__DATA_WIDTH": "[connectal]/[dtg] HP2 data width",
    "PSU__SAXIGP5__DATA_WIDTH": "[connectal]/[dtg] HP3 data width",
    "PSU__FPGA_PL0_ENABLE": "[kr260] pl_clk0 enable",
    "PSU__FPGA_PL1_ENABLE": "[mini16] pl_clk1 enable",
    "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ": "[cgra]/[connectal] requested pl_clk0 MHz",
    "PSU__USE__IRQ0": "[connectal] pl_ps_irq0 enable",
    "PSU__NUM_FABRIC_RESETS": "[kr260] number of pl_resetn outputs",
}
# Read back only (never set): the rate the PS PLL really produces.
PL0_ACTUAL = "PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ"

STREAM_TIE = {"tready": 1}  # a master stream's tready is held high; every other input is held 0


class TclGenError(ValueError):
    """The parameters and the port list cannot make a consistent block design."""


def ps_properties(p: BoardParams) -> dict[str, str]:
    """The PSU__* values applied after the board preset, in a stable order."""
    props = {
        "PSU__USE__M_AXI_GP0": "1",
        "PSU__MAXIGP0__DATA_WIDTH": str(p.hpm0_width),
        # The preset may enable HPM1_FPD / HPM0_LPD; unused masters would leave clock pins open.
        "PSU__USE__M_AXI_GP1": "0",
        "PSU__USE__M_AXI_GP2": "0",
        "PSU__USE__S_AXI_GP0": "0",
        "PSU__USE__S_AXI_GP1": "0",
        "PSU__USE__S_AXI_GP6": "0",
        "PSU__USE__S_AXI_ACP": "0",
        "PSU__USE__S_AXI_ACE": "0",
    }
    used = set(p.hp_ports) | ({p.dma_hp} if p.dma_hp is not None else set())
    for i, (_, _, gp, _) in enumerate(HP):
        props[f"PSU__USE__S_AXI_GP{gp}"] = "1" if i in used else "0"
        if i in used:
            props[f"PSU__SAXIGP{gp}__DATA_WIDTH"] = "128"
    props.update({
        "PSU__FPGA_PL0_ENABLE": "1",
        "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ": f"{float(p.pl_clk_mhz):g}",
        "PSU__FPGA_PL1_ENABLE": "0",
        "PSU__USE__IRQ0": "1",
        "PSU__NUM_FABRIC_RESETS": "1",
    })
    unknown = set(props) - set(KNOWN_PSU_PROPERTIES)
    assert not unknown, f"PS properties missing from KNOWN_PSU_PROPERTIES: {sorted(unknown)}"
    return props


def dma_properties(in_width: int, out_width: int) -> dict[str, str]:
    """The AXI DMA's CONFIG values for the top's stream widths: each memory-map side as wide as its
    stream (the DataMover inside needs stream width <= memory-map width, PG022); dma_smc converts to
    the HP port's 128 bits."""
    props = dict(DMA_FIXED)
    props.update({"c_m_axis_mm2s_tdata_width": str(in_width), "c_m_axi_mm2s_data_width": str(max(in_width, 32)),
                  "c_s_axis_s2mm_tdata_width": str(out_width), "c_m_axi_s2mm_data_width": str(max(out_width, 32))})
    return props


def generate_xdc(platform: KV260Platform | None = None) -> str:
    """Constraints for the block-design top (``<bd>_wrapper``)."""
    platform = platform or KV260Platform()
    pin, attrs, _ = platform.fan_constraints()
    lines = [
        "# Generated by kvpath.boards.kv260.vivado_tcl for the KV260 (K26 SOM). Do not edit.",
        "#",
        "# No create_clock here: the only clock is the PS's pl_clk0, and the zynq_ultra_ps_e IP ships",
        "# its own constraint for it (clk_pl_0, at the PSU__CRL_APB__PL0_REF_CTRL frequency). A second",
        "# create_clock on the same net would override it and hide a mismatch.",
        "",
        "# Fan enable, active low, on the carrier's SOM240_1 connector: held low = fan on.",
        f"set_property PACKAGE_PIN {pin} [get_ports {{{FAN_PORT}[0]}}]",
    ]
    for key, value in attrs.items():
        lines.append(f"set_property {key} {value} [get_ports {{{FAN_PORT}[0]}}]")
    lines += [
        "",
        "# Smaller .bit.bin, faster load through the PCAP (as Xilinx's KV260 designs do).",
        "set_property BITSTREAM.GENERAL.COMPRESS TRUE [current_design]",
        "",
    ]
    return "\n".join(lines)


_SAFE_PATH = re.compile(r"^[A-Za-z0-9_.+/-]+$")


def _source_words(files: list[str]) -> str:
    """Sources as Tcl words under $kvb_here; names are restricted so no quoting is needed."""
    for f in files:
        if not _SAFE_PATH.match(f) or f.startswith("/") or ".." in f.split("/"):
            raise TclGenError(f"Verilog source {f!r}: use a relative path of [A-Za-z0-9_.+/-] inside "
                              "the build folder (it is written into the TCL unquoted)")
    return " ".join(f'"$kvb_here/{f}"' for f in files)


_PROCS = r"""
# ---- helpers: every check ends the run with exit 2 and says what was expected -------------------
proc kvb_fail {msg} {
    puts stderr "KVPATH ERROR: $msg"
    exit 2
}
proc kvb_one {what objs} {
    if {[llength $objs] != 1} { kvb_fail "expected exactly one $what, got [llength $objs]: {$objs}" }
    return [lindex $objs 0]
}
proc kvb_expect {what got want} {
    if {$got ne $want} { kvb_fail "$what is '$got', expected '$want'" }
}
proc kvb_num {text} {
    # Vivado prints sizes as 0x.., decimal or with a K/M/G/T suffix.
    set t [string toupper [string trim $text]]
    set mult 1
    foreach {suffix m} {K 1024 M 1048576 G 1073741824 T 1099511627776} {
        if {[string match *$suffix $t]} { set mult $m; set t [string range $t 0 end-1] }
    }
    if {![string is wideinteger -strict $t]} { return "" }
    return [expr {wide($t) * $mult}]
}
proc kvb_expect_num {what got want} {
    set g [kvb_num $got]
    if {$g eq "" || $g != [kvb_num $want]} { kvb_fail "$what is '$got', expected $want" }
}
proc kvb_pin {path} {
    return [kvb_one "pin $path" [get_bd_pins $path]]
}
proc kvb_intf {path} {
    return [kvb_one "interface pin $path" [get_bd_intf_pins $path]]
}
proc kvb_tie {port width value} {
    # One xlconstant per tied input keeps each port on exactly one net.
    set c [create_bd_cell -type ip -vlnv xilinx.com:ip:xlconstant tie_$port]
    set_property -dict [list CONFIG.CONST_WIDTH $width CONFIG.CONST_VAL $value] $c
    connect_bd_net -net tie_${port}_net [kvb_pin /tie_$port/dout] [kvb_pin /KVCELL/$port]
}
proc kvb_leave_open {port why} {
    kvb_pin /KVCELL/$port
    puts "KVPATH: open $port ($why)"
}
proc kvb_assign {space seg offset range} {
    assign_bd_address -offset $offset -range $range -target_address_space $space $seg
    set hits {}
    foreach s [get_bd_addr_segs -of_objects $seg] {
        if {[string first "$space/" $s] == 0} { lappend hits $s }
    }
    set s [kvb_one "segment for $seg in $space" $hits]
    kvb_expect_num "offset of $s" [get_property OFFSET $s] $offset
    kvb_expect_num "range of $s" [get_property RANGE $s] $range
    puts "KVPATH: mapped $seg at $offset size $range in $space"
}
proc kvb_run_ok {run} {
    set r [kvb_one "run $run" [get_runs $run]]
    if {[get_property PROGRESS $r] ne "100%"} {
        kvb_fail "run $run did not finish: [get_property STATUS $r]"
    }
}
proc kvb_slack {kind} {
    set p [get_timing_paths -max_paths 1 -nworst 1 $kind]
    if {[llength $p] == 0} { kvb_fail "no $kind timing path: is pl_clk0 constrained?" }
    set s [get_property SLACK [lindex $p 0]]
    # "inf"/"nan" parse as doubles in Tcl; an infinite slack means nothing was timed.
    if {![string is double -strict $s] || [string match -nocase "*in*" $s] || [string match -nocase "*nan*" $s]} {
        kvb_fail "$kind slack is '$s': the design is not timed"
    }
    return $s
}
"""


def generate_tcl(params: BoardParams, ports: list[Port], verilog_files: list[str], *,
                 xdc_file: str = "kvpath_kv260.xdc", jobs: int = 4) -> str:
    """The block-design + build script. Paths are relative to the script's own folder.

    ``ports`` is the port list of ``kvpath_axi_top`` (``ports.parse_verilog_ports`` on the real
    Verilog); it must satisfy the contract for ``params.n_masters``.
    """
    if not verilog_files:
        raise TclGenError("no Verilog sources: the module reference needs kvpath_axi_top's Verilog")
    if not 1 <= jobs <= 64:
        raise TclGenError(f"jobs={jobs}: must be 1..64")
    _, intfs = check_contract(ports, params.n_masters)
    by = {i.name: i for i in intfs}
    masters = [by[f"m_axi{i}"] for i in range(params.n_masters)]
    bridged = dma_bridged(intfs)
    if bridged != params.dma_bridge:
        raise TclGenError(
            f"the Verilog top {'has' if bridged else 'lacks'} the DMA bridge ({DMA_IN}_*, {DMA_OUT}_*) but "
            f"BoardParams.dma_bridge is {params.dma_bridge}: build the top with KVPathAxiTop(dma_bridge="
            f"{params.dma_bridge}) or set dma_bridge={bridged}")
    streams = [i for i in intfs if i.kind.startswith("axis") and i.name not in (DMA_IN, DMA_OUT)]
    dma_hp = params.dma_hp
    # The master that shares the DMA's HP port through dma_smc (all four HP ports taken), if any.
    shared = dma_hp if bridged and dma_hp < params.n_masters else None
    dma_props = dma_properties(by[DMA_IN].signal("tdata").width, by[DMA_OUT].signal("tdata").width) \
        if bridged else {}
    part = KV260Platform().part
    props = ps_properties(params)
    ps, kv = f"/{PS_CELL}", f"/{KV_CELL}"
    out: list[str] = []
    emit = out.append

    emit("# Generated by kvpath.boards.kv260.vivado_tcl: KV260 block design + build for kvpath. Do not edit.")
    emit(f"# masters={params.n_masters} pl_clk0={params.pl_clk_mhz:g} MHz "
         f"registers=0x{params.reg_base:08X}+0x{params.reg_size:X} hpm0={params.hpm0_width}-bit")
    emit("# Run: vivado -mode batch -source build.tcl   (exit 0: bitstream written and timing met;")
    emit("#      exit 1: timing failed, no bitstream; exit 2: a structural check failed)")
    emit(_PROCS.replace("KVCELL", KV_CELL))
    emit("# ---- settings ----------------------------------------------------------------------")
    emit("set kvb_here [file normalize [file dirname [info script]]]")
    emit(f"set kvb_part {part}")
    emit(f"set kvb_board {BOARD_PART}")
    emit(f"set kvb_app {params.app}")
    emit(f"set kvb_jobs {jobs}")
    emit("if {[info exists ::env(KVB_JOBS)]} { set kvb_jobs $::env(KVB_JOBS) }")
    emit("file mkdir $kvb_here/reports")
    emit("")
    emit("# ---- project -----------------------------------------------------------------------")
    emit("create_project -force kvpath_kv260 $kvb_here/vivado -part $kvb_part")
    emit("set_property board_part $kvb_board [current_project]")
    emit(f"set_property board_connections {{{BOARD_CONNECTIONS}}} [current_project]")
    emit('kvb_expect "project part" [get_property PART [current_project]] $kvb_part')
    emit('kvb_expect "board part" [get_property BOARD_PART [current_project]] $kvb_board')
    emit(f"set kvb_sources [list {_source_words(verilog_files)}]")
    emit('foreach f $kvb_sources { if {![file exists $f]} { kvb_fail "missing Verilog source $f" } }')
    emit("add_files -norecurse $kvb_sources")
    emit(f"add_files -fileset constrs_1 -norecurse $kvb_here/{xdc_file}")
    emit("update_compile_order -fileset sources_1")
    emit("")
    emit("# ---- block design: PS with the KV260 preset -----------------------------------------")
    emit(f"create_bd_design {BD_NAME}")
    emit(f'set kvb_ps [kvb_one "PS cell" [create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e {PS_CELL}]]')
    emit('apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {apply_board_preset "1"} $kvb_ps')
    emit("set_property -dict [list \\")
    for k, v in props.items():
        emit(f"    CONFIG.{k} {{{v}}} \\")
    emit("] $kvb_ps")
    for k, v in props.items():
        if k == "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ":
            continue  # compared numerically below
        emit(f'kvb_expect "PS {k}" [get_property CONFIG.{k} $kvb_ps] {{{v}}}')
    emit(f"set kvb_pl0 [get_property CONFIG.{PL0_ACTUAL} $kvb_ps]")
    emit(f"if {{![string is double -strict $kvb_pl0] || abs($kvb_pl0 - {float(params.pl_clk_mhz):g}) "
         f"> 0.01 * {float(params.pl_clk_mhz):g}}} {{")
    emit(f'    kvb_fail "pl_clk0 is $kvb_pl0 MHz, asked for {params.pl_clk_mhz:g} MHz (more than 1% off)"')
    emit("}")
    emit('puts "KVPATH: pl_clk0 $kvb_pl0 MHz"')
    emit(f'kvb_expect "M_AXI_HPM0_FPD width" [get_property CONFIG.DATA_WIDTH [kvb_intf {ps}/M_AXI_HPM0_FPD]] '
         f"{params.hpm0_width}")
    for i in sorted(set(range(params.n_masters)) | ({dma_hp} if bridged else set())):
        emit(f'kvb_expect "{HP[i][0]} width" [get_property CONFIG.DATA_WIDTH [kvb_intf {ps}/{HP[i][0]}]] 128')
    emit("")
    emit("# ---- cells ---------------------------------------------------------------------------")
    emit(f"create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset {RST_CELL}")
    emit(f"set kvb_smc [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect {SMC_CELL}]")
    emit(f"set_property -dict [list CONFIG.NUM_SI {{1}} CONFIG.NUM_MI {{{2 if bridged else 1}}}] $kvb_smc")
    if bridged:
        emit(f'set kvb_dma [kvb_one "AXI DMA cell" [create_bd_cell -type ip -vlnv xilinx.com:ip:axi_dma {DMA_CELL}]]')
        emit("set_property -dict [list \\")
        for k, v in dma_props.items():
            emit(f"    CONFIG.{k} {{{v}}} \\")
        emit("] $kvb_dma")
        for k, v in dma_props.items():
            emit(f'kvb_expect "AXI DMA {k}" [get_property CONFIG.{k} $kvb_dma] {{{v}}}')
        emit(f'set kvb_dma_smc [kvb_one "DMA SmartConnect cell" '
             f'[create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect {DMA_SMC_CELL}]]')
        emit(f"set_property -dict [list CONFIG.NUM_SI {{{3 if shared is not None else 2}}} CONFIG.NUM_MI {{1}}] "
             "$kvb_dma_smc")
    emit(f'kvb_one "kvpath module reference" [create_bd_cell -type module -reference {TOP} {KV_CELL}]')
    # A module reference's inferred interfaces carry a default FREQ_HZ (100 MHz) that validation
    # compares with the PS ports; stamp the real pl_clk0 rate on the ones we connect.
    emit(f"set kvb_fhz [get_property CONFIG.FREQ_HZ [kvb_pin {ps}/pl_clk0]]")
    for name in ["s_axil"] + [m.name for m in masters] + ([DMA_IN, DMA_OUT] if bridged else []):
        emit(f"set_property CONFIG.FREQ_HZ $kvb_fhz [kvb_intf {kv}/{name}]")
    for i, m in enumerate(masters):
        emit(f'kvb_expect "{m.name} width" [get_property CONFIG.DATA_WIDTH [kvb_intf {kv}/{m.name}]] 128')
        if i == shared:
            continue   # reaches its HP port through dma_smc, which adapts the IDs
        emit(f"if {{[get_property CONFIG.ID_WIDTH [kvb_intf {kv}/{m.name}]] > "
             f"[get_property CONFIG.ID_WIDTH [kvb_intf {ps}/{HP[i][0]}]]}} {{")
        emit(f'    kvb_fail "{m.name} has a wider AXI ID than {HP[i][0]} accepts"')
        emit("}")
    emit("")
    emit("# ---- clock, reset, interrupt -----------------------------------------------------------")
    clk_pins = [f"{kv}/{CLOCK}", f"/{RST_CELL}/slowest_sync_clk", f"/{SMC_CELL}/aclk",
                f"{ps}/maxihpm0_fpd_aclk"] + [f"{ps}/{HP[i][1]}" for i in range(params.n_masters)]
    if bridged:
        clk_pins += [f"/{DMA_CELL}/s_axi_lite_aclk", f"/{DMA_CELL}/m_axi_mm2s_aclk",
                     f"/{DMA_CELL}/m_axi_s2mm_aclk", f"/{DMA_SMC_CELL}/aclk"]
        if dma_hp >= params.n_masters:
            clk_pins.append(f"{ps}/{HP[dma_hp][1]}")
    emit(f"connect_bd_net -net pl_clk0 [kvb_pin {ps}/pl_clk0] " + " ".join(f"[kvb_pin {p}]" for p in clk_pins))
    emit(f"connect_bd_net -net pl_resetn0 [kvb_pin {ps}/pl_resetn0] [kvb_pin /{RST_CELL}/ext_reset_in]")
    dma_resets = f" [kvb_pin /{DMA_CELL}/axi_resetn] [kvb_pin /{DMA_SMC_CELL}/aresetn]" if bridged else ""
    emit(f"connect_bd_net -net pl_aresetn [kvb_pin /{RST_CELL}/peripheral_aresetn] "
         f"[kvb_pin {kv}/{RESET}] [kvb_pin /{SMC_CELL}/aresetn]{dma_resets}")
    emit(f"connect_bd_net -net kvpath_irq [kvb_pin {kv}/{IRQ}] [kvb_pin {ps}/pl_ps_irq0]")
    emit("")
    emit("# ---- AXI: registers through the SmartConnect, masters straight to their HP port ---------")
    emit(f"connect_bd_intf_net [kvb_intf {ps}/M_AXI_HPM0_FPD] [kvb_intf /{SMC_CELL}/S00_AXI]")
    emit(f"connect_bd_intf_net [kvb_intf /{SMC_CELL}/M00_AXI] [kvb_intf {kv}/s_axil]")
    for i, m in enumerate(masters):
        if i == shared:
            emit(f"connect_bd_intf_net [kvb_intf {kv}/{m.name}] [kvb_intf /{DMA_SMC_CELL}/S02_AXI]")
        else:
            emit(f"connect_bd_intf_net [kvb_intf {kv}/{m.name}] [kvb_intf {ps}/{HP[i][0]}]")
    emit("")
    if bridged:
        emit("# ---- the stream path: AXI DMA (direct register mode) <-> the engine's bridged streams -----")
        emit(f"connect_bd_intf_net [kvb_intf /{SMC_CELL}/M01_AXI] [kvb_intf /{DMA_CELL}/S_AXI_LITE]")
        emit(f"connect_bd_intf_net [kvb_intf /{DMA_CELL}/M_AXIS_MM2S] [kvb_intf {kv}/{DMA_IN}]")
        emit(f"connect_bd_intf_net [kvb_intf {kv}/{DMA_OUT}] [kvb_intf /{DMA_CELL}/S_AXIS_S2MM]")
        emit(f"connect_bd_intf_net [kvb_intf /{DMA_CELL}/M_AXI_MM2S] [kvb_intf /{DMA_SMC_CELL}/S00_AXI]")
        emit(f"connect_bd_intf_net [kvb_intf /{DMA_CELL}/M_AXI_S2MM] [kvb_intf /{DMA_SMC_CELL}/S01_AXI]")
        emit(f"connect_bd_intf_net [kvb_intf /{DMA_SMC_CELL}/M00_AXI] [kvb_intf {ps}/{HP[dma_hp][0]}]")
        for pin in ("mm2s_introut", "s2mm_introut"):
            emit(f"kvb_pin /{DMA_CELL}/{pin}")
            emit(f'puts "KVPATH: DMA interrupt {DMA_CELL}/{pin} left open (the driver polls DMASR)"')
        emit("")
    emit("# ---- streams: fed from DDR by kvpath itself on the board (memory-staged mode) ----------")
    for s in streams:
        for port in s.ports:
            sig = port.name[len(s.name) + 1:]
            if port.direction == "input":
                emit(f"kvb_tie {port.name} {port.width} {STREAM_TIE.get(sig, 0)}")
            else:
                emit(f'kvb_leave_open {port.name} "unused {s.kind.replace("_", " ")} output"')
    emit("")
    _, _, fan_active_low = KV260Platform().fan_constraints()
    fan_on = 0 if fan_active_low else 1
    emit(f"# ---- fan: held at {fan_on} so it always runs (active {'low' if fan_active_low else 'high'}) ----------")
    emit(f"create_bd_port -dir O -from 0 -to 0 {FAN_PORT}")
    emit("set kvb_fan [create_bd_cell -type ip -vlnv xilinx.com:ip:xlconstant tie_fan]")
    emit(f"set_property -dict [list CONFIG.CONST_WIDTH {{1}} CONFIG.CONST_VAL {{{fan_on}}}] $kvb_fan")
    emit(f"connect_bd_net -net fan_en_b_net [kvb_pin /tie_fan/dout] [kvb_one \"port {FAN_PORT}\" "
         f"[get_bd_ports /{FAN_PORT}]]")
    emit("")
    emit("# ---- address map -------------------------------------------------------------------------")
    emit(f'set kvb_ps_data [kvb_one "PS data space" [get_bd_addr_spaces {ps}/Data]]')
    emit(f'set kvb_regs [kvb_one "kvpath register segment" [get_bd_addr_segs -of_objects [kvb_intf {kv}/s_axil]]]')
    emit(f"kvb_assign $kvb_ps_data $kvb_regs 0x{params.reg_base:08X} 0x{params.reg_size:X}")
    if bridged:
        emit(f'kvb_assign $kvb_ps_data [kvb_one "AXI DMA register segment" [get_bd_addr_segs /{DMA_CELL}/S_AXI_LITE/Reg]] '
             f"0x{params.dma_base:08X} 0x{params.dma_size:X}")
        for space in ("Data_MM2S", "Data_S2MM"):
            emit(f'set kvb_space [kvb_one "AXI DMA {space} address space" [get_bd_addr_spaces /{DMA_CELL}/{space}]]')
            for seg, offset, rng in DDR_SEGMENTS:
                emit(f'kvb_assign $kvb_space [kvb_one "HP{dma_hp}_{seg}" '
                     f"[get_bd_addr_segs {ps}/{HP[dma_hp][3]}/HP{dma_hp}_{seg}]] 0x{offset:X} 0x{rng:X}")
    for i, m in enumerate(masters):
        emit(f'set kvb_space [kvb_one "{m.name} address space" '
             f"[get_bd_addr_spaces -of_objects [kvb_intf {kv}/{m.name}]]]")
        for seg, offset, rng in DDR_SEGMENTS:
            emit(f'kvb_assign $kvb_space [kvb_one "HP{i}_{seg}" [get_bd_addr_segs {ps}/{HP[i][3]}/HP{i}_{seg}]] '
                 f"0x{offset:X} 0x{rng:X}")
    emit("")
    emit("# ---- validate, wrap, build --------------------------------------------------------------")
    emit("validate_bd_design")
    emit("save_bd_design")
    emit(f"set kvb_wrapper [make_wrapper -files [get_files {BD_NAME}.bd] -top]")
    emit("add_files -norecurse $kvb_wrapper")
    emit(f"set_property top {BD_NAME}_wrapper [current_fileset]")
    emit("update_compile_order -fileset sources_1")
    emit("launch_runs synth_1 -jobs $kvb_jobs")
    emit("wait_on_run synth_1")
    emit("kvb_run_ok synth_1")
    emit("launch_runs impl_1 -jobs $kvb_jobs")
    emit("wait_on_run impl_1")
    emit("kvb_run_ok impl_1")
    emit("open_run impl_1")
    emit("report_utilization -file $kvb_here/reports/utilization.rpt")
    emit("report_utilization -hierarchical -file $kvb_here/reports/utilization_hier.rpt")
    emit("report_timing_summary -max_paths 20 -file $kvb_here/reports/timing_summary.rpt")
    emit("set kvb_wns [kvb_slack -setup]")
    emit("set kvb_whs [kvb_slack -hold]")
    emit('puts "KVPATH: WNS $kvb_wns ns, WHS $kvb_whs ns"')
    emit("if {$kvb_wns < 0 || $kvb_whs < 0} {")
    emit('    puts stderr "KVPATH TIMING FAILED: WNS $kvb_wns ns, WHS $kvb_whs ns (see reports/timing_summary.rpt); no bitstream written"')
    emit("    exit 1")
    emit("}")
    emit("write_bitstream -force $kvb_here/$kvb_app.bit")
    emit('puts "KVPATH: wrote $kvb_here/$kvb_app.bit"')
    emit("exit 0")
    return "\n".join(out) + "\n"


def write(out_dir: Path, params: BoardParams, ports: list[Port], verilog_files: list[str],
          jobs: int = 4) -> tuple[Path, Path]:
    """Write ``kvpath_kv260.xdc`` and ``build.tcl`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    xdc = out_dir / "kvpath_kv260.xdc"
    tcl = out_dir / "build.tcl"
    xdc.write_text(generate_xdc())
    tcl.write_text(generate_tcl(params, ports, verilog_files, xdc_file=xdc.name, jobs=jobs))
    return xdc, tcl
