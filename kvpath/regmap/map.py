"""THE register map of kvpath: the only place where a register address, a field position or a field
width is written down. Everything else (RTL, C header, JSON, docs, driver, tests) is generated from
or reads ``build_map(config)``.

Group bases are declared here; registers take consecutive 32-bit words from their group's base in
the order listed; fields pack upward from bit 0 in the order listed unless given ``lsb``.
Widths and reset values that depend on the build are functions of ``KVPathConfig``.
"""

from __future__ import annotations

from kvpath.config import ELEM_TYPES, FORMATS, KVPathConfig

from kvpath.regmap.layout import (RO, RW, W1C, W1P, WO, FieldDecl as F, Group, RegDecl as R, RegisterMap, WriteStream,
                                  resolve)

NAME = "kvpath_regs"
MAGIC = int.from_bytes(b"KVPH", "big")
VERSION = (1, 0)  # major changes when an existing register moves or changes meaning

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
            F("quant_lanes", 8, RO, "Write path (quantizer).", value=quant_lanes),
            F("read_lanes", 8, RO, "Read path (dequantizer).", value=read_lanes))),
        R("CFG_LIMITS", "Model limits the build supports.", (
            F("max_layers", 8, RO, "KV layers.", value=max_layers),
            F("max_kv_heads", 8, RO, "KV heads per layer.", value=max_kv_heads),
            F("max_head_dim", 16, RO, "Channels per head.", value=max_head_dim))),
        R("CFG_KV_MAX_TOKENS", "Largest KV_MAX_TOKENS the ring supports.", (
            F("value", 32, RO, "Slots per ring.", value=kv_max_tokens),)),
        R("CFG_SCALE_ENTRIES", "Size of the scale constant cache.", (
            F("value", 32, RO, "Entries; 0 for formats whose blocks carry their scales.",
              value=scale_cache_entries),)),
    )),
    Group("control", 0x040, "Control and status.", (
        R("CTRL", "Control.", (
            F("enable", 1, RW, "1: the KV path accepts traffic."),
            F("soft_reset", 1, W1P, "Write 1: one-cycle reset pulse to the datapath (the register "
              "block keeps its values)."),
            F("counter_clear", 1, W1P, "Write 1: one-cycle pulse clearing the datapath counters."))),
        R("STATUS", "Sticky error flags (write 1 to clear; a set in the same cycle wins) and live state.", (
            F("nonfinite_seen", 1, W1C, "NONFINITE_ELEMS moved: a non-finite K/V element was sanitized "
              "on the write path, or a non-finite scale field or code was replaced on the read path."),
            F("bad_scale_index", 1, W1C, "The scale cache refused a write (index out of range, or a "
              "non-finite half), a scale write reached a build without a cache (block-scaled formats), "
              "or a static datapath got a beat whose context addresses no cache entry (that beat "
              "became zeros)."),
            F(AXI_ERROR, 1, W1C, "The register block refused an access (SLVERR). The datapath has no "
              "AXI master of its own in this build."),
            F("saturated_seen", 1, W1C, "A dequantized value was saturated to the largest finite "
              "value of the element type (65504 for FP16)."),
            F("ring_cfg_err", 1, RO, "Live: the ring configuration sampled at the last clear is "
              "invalid.", lsb=8))),
    )),
    Group("ring", 0x050, "Runtime ring configuration (the ring tracker's inputs, sampled on its clear).", (
        R("RING_MAX_TOKENS", "KV_MAX_TOKENS: slots per ring.", (
            F("value", ring_count_bits, RW, "At most CFG_KV_MAX_TOKENS.", reset=kv_max_tokens),)),
        R("RING_SINKS", "Attention sink tokens kept for good.", (
            F("value", ring_count_bits, RW, "S."),)),
        R("RING_WINDOW", "Most recent tokens kept after the sinks.", (
            F("value", ring_count_bits, RW, "W; the reset value with S = 0 is full attention.",
              reset=kv_max_tokens),)),
    )),
    Group("counters", 0x080, "Datapath counters (wrap around; cleared by CTRL.counter_clear).", (
        R("ELEMS_QUANTIZED", "Elements the quantizer consumed.", (
            F("value", 64, RO, "elements quantized"),)),
        R("BLOCKS_WRITTEN", "Blocks the write path produced.", (
            F("value", 64, RO, "blocks written"),)),
        R("BLOCKS_READ", "Blocks the read path consumed.", (
            F("value", 64, RO, "blocks read"),)),
        R("NONFINITE_ELEMS", "Non-finite values replaced: K/V elements the quantizer sanitized, plus "
          "non-finite scale fields (ggml d/m, MX scale bytes) and NaN codes (mxfp8_e4m3) the read "
          "path replaced.", (
            F("value", 32, RO, "Count."),)),
        R("SATURATED_ELEMS", "Dequantized elements saturated to the largest finite value of the "
          "element type.", (
            F("value", 32, RO, "Count."),)),
    )),
    Group("scales", 0x0C0, "Scale constant cache access.", (
        R(SCALE_INDEX, "Cache entry the next SCALE_DATA write goes to; +1 after each accepted write, "
          "so consecutive SCALE_DATA writes stream a table.", (
            F("value", 32, RW, "Entry index."),)),
        R(SCALE_DATA, "Write: one cache entry at SCALE_INDEX (scale in bits 15..0, reciprocal in "
          "31..16). Needs WSTRB = 0xF; the write response waits until the cache took the entry.", (
            F("value", 32, WO, "Entry value."),), stream=WriteStream("scale_write", index=SCALE_INDEX)),
    )),
)


def build_map(config: KVPathConfig) -> RegisterMap:
    return resolve(NAME, "kvpath KV-cache path control block", MAGIC, VERSION, GROUPS, config)
