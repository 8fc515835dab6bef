"""THE register map of kvpath: the only place where a register address, a field position or a field
width is written down. Everything else (RTL, C header, JSON, docs, driver, tests) is generated from
or reads ``build_map(config)``.

Group bases are declared here; registers take consecutive 32-bit words from their group's base in
the order listed; fields pack upward from bit 0 in the order listed unless given ``lsb``.
Widths and reset values that depend on the build are functions of ``KVPathConfig``.
"""

from __future__ import annotations

from kvpath import layout
from kvpath.config import ELEM_TYPES, FORMATS, KVPathConfig

from kvpath.regmap.layout import (RO, RW, W1C, W1P, WO, FieldDecl as F, Group, RegDecl as R, RegisterMap, WriteStream,
                                  resolve)

NAME = "kvpath_regs"
MAGIC = int.from_bytes(b"KVPH", "big")
VERSION = (2, 0)  # major changes when an existing register moves or changes meaning

# Codes the configuration block reports: positions in config.py's tables, so adding a format at the
# end keeps every existing code.
FORMAT_CODES = {name: code for code, name in enumerate(FORMATS)}
ELEM_CODES = {name: code for code, name in enumerate(ELEM_TYPES)}

# Names the RTL and the model give behaviour beyond their access type (see docs/regmap.md).
SCALE_INDEX = "SCALE_INDEX"  # +1 after each accepted SCALE_DATA write
SCALE_DATA = "SCALE_DATA"  # a write emits one ScaleWrite
AXI_ERROR = "axi_error"  # sticky bit also set by the block's own refused accesses


# --- values of the read-only configuration block: each is what the driver compares -------------
def magic(c: KVPathConfig) -> int:
    return MAGIC


def version_major(c: KVPathConfig) -> int:
    return VERSION[0]


def version_minor(c: KVPathConfig) -> int:
    return VERSION[1]


def format_code(c: KVPathConfig) -> int:
    return FORMAT_CODES[c.fmt]


def elem_code(c: KVPathConfig) -> int:
    return ELEM_CODES[c.elem]


def code_bits(c: KVPathConfig) -> int:
    return c.format.code_bits


def quant_lanes(c: KVPathConfig) -> int:
    return c.quant_lanes


def read_lanes(c: KVPathConfig) -> int:
    return c.dequant_lanes


def max_layers(c: KVPathConfig) -> int:
    return c.max_layers


def max_kv_heads(c: KVPathConfig) -> int:
    return c.max_kv_heads


def max_head_dim(c: KVPathConfig) -> int:
    return c.max_head_dim


def kv_max_tokens(c: KVPathConfig) -> int:
    return c.kv_max_tokens


def scale_cache_entries(c: KVPathConfig) -> int:
    """Entries of the scale constant cache (sized by ``kvpath.scales``). Block-scaled formats (ggml,
    mx) carry their scales in the blocks: no cache."""
    from kvpath import scales

    f = c.format
    return scales.entry_count(f.scope, c) if f.family == "static" else 0


def ring_count_bits(c: KVPathConfig) -> int:
    """Width of the ring tracker's configuration ports (RingTracker.count_bits): holds KV_MAX_TOKENS."""
    return max(1, c.kv_max_tokens.bit_length())


def max_seqs(c: KVPathConfig) -> int:
    return c.max_seqs


def n_classes(c: KVPathConfig) -> int:
    return c.n_classes


def read_ports(c: KVPathConfig) -> int:
    return c.read_ports


def max_outstanding(c: KVPathConfig) -> int:
    return c.max_outstanding


def addr_width(c: KVPathConfig) -> int:
    return c.addr_width


def bus_bytes(c: KVPathConfig) -> int:
    return c.bus_bytes


def max_burst(c: KVPathConfig) -> int:
    return c.max_burst


def axi_cache(c: KVPathConfig) -> int:
    return c.axi_cache


def axi_prot(c: KVPathConfig) -> int:
    return c.axi_prot


def head_dim_bits(c: KVPathConfig) -> int:
    return c.max_head_dim.bit_length()


def region_index_bits(c: KVPathConfig) -> int:
    return layout.bits(layout.region_count(c))


def region_high_bits(c: KVPathConfig) -> int:
    return c.addr_width - 32


def command_bits(c: KVPathConfig) -> int:
    return layout.command_word(c).size


def seq_bits(c: KVPathConfig) -> int:
    return layout.bits(c.max_seqs)


def class_bits(c: KVPathConfig) -> int:
    return layout.bits(c.n_classes)


def layer_bits(c: KVPathConfig) -> int:
    return layout.bits(c.max_layers)


# STATUS's sticky bits, in bit order; IRQ_ENABLE has one enable bit per sticky bit, at its position.
STICKY = (
    ("nonfinite_seen", "NONFINITE_ELEMS moved: a non-finite K/V element was sanitized on the write "
     "path, or a non-finite scale field or code was replaced on the read path."),
    ("bad_scale_index", "The scale cache refused a write (index out of range, or a non-finite "
     "half), a scale write reached a build without a cache (block-scaled formats), or a static "
     "datapath got a beat whose context addresses no cache entry (that beat became zeros)."),
    (AXI_ERROR, "The register block refused an access (SLVERR)."),
    ("saturated_seen", "A dequantized value was saturated to the largest finite value of the "
     "element type (65504 for FP16)."),
    ("ddr_error", "An AXI4 master got SLVERR or DECERR (DDR_ERRORS counts the failed row writes "
     "and READ runs)."),
    ("frame_error", "A K/V vector's TLAST did not match its beat count (FRAME_ERRORS)."),
    ("vector_dropped", "A K/V vector was consumed and not written: refused append, no token "
     "appended yet, or a tag beyond the build (VECTORS_DROPPED)."),
    ("cmd_error", "A command had an operand beyond the build, an unknown op, or read an "
     "unconfigured ring (CMD_ERRORS)."),
)


def irq_bits(c: KVPathConfig) -> int:
    return len(STICKY)


GROUPS = (
    Group("identity", 0x000, "What this block is.", (
        R("ID", "Magic number: ASCII 'KVPH'.", (
            F("magic", 32, RO, "The same in every kvpath build.", value=magic),)),
        R("VERSION", "Register map version.", (
            F("minor", 16, RO, "Additions that keep every existing register.", value=version_minor),
            F("major", 16, RO, "Incompatible changes.", value=version_major))),
    )),
    Group("config", 0x010, "Generate-time configuration: a driver refuses a bitstream that differs.", (
        R("CFG_FORMAT", "Block format of the KV path.", (
            F("format", 8, RO, "Format code (table below).", value=format_code),
            F("elem", 4, RO, "Element type on the streams: 0 fp16, 1 bf16.", value=elem_code),
            F("code_bits", 4, RO, "Bits per element code.", value=code_bits))),
        R("CFG_LANES", "Elements per beat.", (
            F("quant_lanes", 8, RO, "Write path (quantizer): elements per s_axis_kv beat.", value=quant_lanes),
            F("read_lanes", 8, RO, "Read path (dequantizer): elements per m_axis_kv beat.", value=read_lanes))),
        R("CFG_LIMITS", "Model limits the build supports.", (
            F("max_layers", 8, RO, "KV layers.", value=max_layers),
            F("max_kv_heads", 8, RO, "KV heads per layer.", value=max_kv_heads),
            F("max_head_dim", 16, RO, "Channels per head.", value=max_head_dim))),
        R("CFG_KV_MAX_TOKENS", "Largest KV_MAX_TOKENS a ring supports.", (
            F("value", 32, RO, "Slots per ring.", value=kv_max_tokens),)),
        R("CFG_SCALE_ENTRIES", "Size of the scale constant cache.", (
            F("value", 32, RO, "Entries; 0 for formats whose blocks carry their scales.",
              value=scale_cache_entries),)),
        R("CFG_ENGINE", "The KV cache engine (docs/kvcache.md).", (
            F("max_seqs", 9, RO, "Sequences.", value=max_seqs),
            F("n_classes", 5, RO, "Ring policy classes (one ring per sequence and class).", value=n_classes),
            F("read_ports", 3, RO, "Read ports (m_axis_kv0.., AXI4 masters m_axi0..).", value=read_ports),
            F("max_outstanding", 5, RO, "Bursts in flight per direction and master.",
              value=max_outstanding))),
        R("CFG_AXI", "The AXI4 masters.", (
            F("addr_width", 7, RO, "Address bits.", value=addr_width),
            F("bus_bytes", 7, RO, "Data bytes per beat.", value=bus_bytes),
            F("max_burst", 9, RO, "Beats per burst at most.", value=max_burst),
            F("axi_cache", 4, RO, "AxCACHE.", value=axi_cache),
            F("axi_prot", 3, RO, "AxPROT.", value=axi_prot))),
    )),
    Group("control", 0x040, "Control and status.", (
        R("CTRL", "Control.", (
            F("enable", 1, RW, "1: the engine takes K/V vectors (s_axis_kv) and stream commands "
              "(s_axis_cmd). Commands written to CMD run either way."),
            F("soft_reset", 1, W1P, "Write 1: start a soft reset (docs/kvcache.md): intake stops, "
              "the AXI masters finish or drain their bursts, then the engine resets. STATUS.resetting "
              "is high until it is done. Registers, tables and scales are kept."),
            F("counter_clear", 1, W1P, "Write 1: clear the counters."))),
        R("STATUS", "Sticky error flags (write 1 to clear; a set in the same cycle wins) and live state.",
          tuple(F(name, 1, W1C, desc) for name, desc in STICKY) + (
            F("resetting", 1, RO, "Live: a soft reset is in progress.", lsb=16),
            F("busy", 1, RO, "Live: a vector, a command, a burst or an output beat is in progress."),
            F("head_dim_err", 1, RO, "Live: HEAD_DIM is not a multiple of 32 and of both lane "
              "counts within 1..max_head_dim: every vector is dropped and every READ fails."))),
        R("IRQ_ENABLE", "irq = OR of the STATUS sticky bits whose bit is set here.", (
            F("value", irq_bits, RW, "One enable per STATUS sticky bit, at its position."),)),
        R("HEAD_DIM", "Channels of one K or V vector (all layers and heads).", (
            F("value", head_dim_bits, RW, "A multiple of 32 and of both lane counts.",
              reset=max_head_dim),)),
    )),
    Group("ring", 0x050, "Ring configuration and status. RING_MAX_TOKENS, RING_SINKS and RING_WINDOW "
          "are taken by the ring a CLEAR command names; RING_SEL picks the ring RING_STATUS and "
          "RING_APPENDED report.", (
        R("RING_MAX_TOKENS", "KV_MAX_TOKENS: slots per ring.", (
            F("value", ring_count_bits, RW, "At most CFG_KV_MAX_TOKENS.", reset=kv_max_tokens),)),
        R("RING_SINKS", "Attention sink tokens kept for good.", (
            F("value", ring_count_bits, RW, "S."),)),
        R("RING_WINDOW", "Most recent tokens kept after the sinks.", (
            F("value", ring_count_bits, RW, "W; the reset value with S = 0 is full attention.",
              reset=kv_max_tokens),)),
        R("RING_SEL", "The ring RING_STATUS and RING_APPENDED report.", (
            F("sel_seq", seq_bits, RW, "Sequence."),
            F("sel_cls", class_bits, RW, "Policy class.", lsb=16))),
        R("RING_STATUS", "State of the selected ring.", (
            F("ring_n_valid", ring_count_bits, RO, "Valid tokens (sinks and window)."),
            F("ring_configured", 1, RO, "A good configuration was cleared in.", lsb=30),
            F("ring_cfg_err", 1, RO, "The configuration sampled at the last CLEAR is invalid (appends "
              "are refused)."))),
        R("RING_APPENDED", "Tokens appended to the selected ring since its CLEAR (the next token's "
          "position).", (
            F("value", 32, RO, "Count."),)),
    )),
    Group("tables", 0x070, "Region bases and layer classes (docs/kvcache.md, section 2).", (
        R("REGION_INDEX", "Region table row the next REGION_BASE_LO write goes to; +1 after each. "
          "Row of (seq, layer, head, kv): ((seq x max_layers + layer) x max_kv_heads + head) x 2 + kv.", (
            F("value", 32, RW, "Row."),)),
        R("REGION_BASE_HI", "Bits addr_width-1..32 of the region base REGION_BASE_LO writes.", (
            F("value", region_high_bits, RW, "Upper address bits."),)),
        R("REGION_BASE_LO", "Write: the region base {REGION_BASE_HI, value} of row REGION_INDEX. "
          "Needs WSTRB = 0xF.", (
            F("value", 32, WO, "Lower address bits."),),
          stream=WriteStream("region_write", index="REGION_INDEX", high="REGION_BASE_HI")),
        R("LAYER_INDEX", "Layer the next LAYER_CLASS write goes to; +1 after each.", (
            F("value", 32, RW, "Layer."),)),
        R("LAYER_CLASS", "Write: the policy class (its ring) of layer LAYER_INDEX. Needs WSTRB = 0xF.", (
            F("value", 32, WO, "Class; one beyond n_classes makes the layer's vectors drop."),),
          stream=WriteStream("layer_write", index="LAYER_INDEX")),
    )),
    Group("commands", 0x0A0, "Commands (docs/kvcache.md, section 5).", (
        R("CMD_ARG", "The argument of the next CMD write (EVICT_UPTO's position).", (
            F("value", 32, RW, "Argument."),)),
        R("CMD", "Write: issue the command {fields, CMD_ARG}; the write response waits until the "
          "command unit took it. Needs WSTRB = 0xF.", (
            F("value", command_bits, WO, "A command word (kvpath.layout.command_word: op, kv, head, "
              "layer, cls, seq, port from bit 0)."),),
          stream=WriteStream("cmd_write", high="CMD_ARG")),
    )),
    Group("scales", 0x0C0, "Scale constant cache access.", (
        R(SCALE_INDEX, "Cache entry the next SCALE_DATA write goes to; +1 after each accepted write, "
          "so consecutive SCALE_DATA writes stream a table.", (
            F("value", 32, RW, "Entry index."),)),
        R(SCALE_DATA, "Write: one cache entry at SCALE_INDEX (scale in bits 15..0, reciprocal in "
          "31..16). Needs WSTRB = 0xF; the write response waits until the cache took the entry.", (
            F("value", 32, WO, "Entry value."),), stream=WriteStream("scale_write", index=SCALE_INDEX)),
    )),
    Group("counters", 0x100, "Counters (wrap around; cleared by CTRL.counter_clear and by a soft reset).", (
        R("ELEMS_QUANTIZED", "Elements the quantizer consumed.", (
            F("value", 64, RO, "elements quantized"),)),
        R("BLOCKS_WRITTEN", "Blocks (32 elements) the write path produced.", (
            F("value", 64, RO, "blocks written"),)),
        R("BLOCKS_READ", "Blocks (32 elements) the read path consumed.", (
            F("value", 64, RO, "blocks read"),)),
        R("DDR_BYTES_WRITTEN", "Row bytes the write path sent to its AXI4 master.", (
            F("value", 64, RO, "bytes written"),)),
        R("DDR_BYTES_READ", "Row bytes the read ports asked their AXI4 masters for.", (
            F("value", 64, RO, "bytes read"),)),
        R("CYCLES", "Clock cycles (for bandwidth figures).", (
            F("value", 64, RO, "cycles"),)),
        R("VECTORS_WRITTEN", "K/V vectors written to DDR without error.", (
            F("value", 32, RO, "Count."),)),
        R("VECTORS_DROPPED", "K/V vectors consumed and not written (STATUS.vector_dropped).", (
            F("value", 32, RO, "Count."),)),
        R("COMMANDS_DONE", "Commands completed, with or without error.", (
            F("value", 32, RO, "Count."),)),
        R("NONFINITE_ELEMS", "Non-finite values replaced: K/V elements the quantizer sanitized, plus "
          "non-finite scale fields (ggml d/m, MX scale bytes) and NaN codes (mxfp8_e4m3) the read "
          "path replaced.", (
            F("value", 32, RO, "Count."),)),
        R("SATURATED_ELEMS", "Dequantized elements saturated to the largest finite value of the "
          "element type.", (
            F("value", 32, RO, "Count."),)),
        R("DDR_ERRORS", "Failed DDR transfers: once per row write and once per READ run (at most three "
          "per READ) in which any burst was answered with SLVERR or DECERR.", (
            F("value", 32, RO, "Count."),)),
        R("FRAME_ERRORS", "K/V vectors whose TLAST did not match their beat count.", (
            F("value", 32, RO, "Count."),)),
        R("CMD_ERRORS", "Commands refused (STATUS.cmd_error).", (
            F("value", 32, RO, "Count."),)),
    )),
)


def build_map(config: KVPathConfig) -> RegisterMap:
    return resolve(NAME, "kvpath KV-cache path control block", MAGIC, VERSION, GROUPS, config)
