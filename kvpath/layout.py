"""The KV cache's memory layout and the records on its streams, declared once (docs/kvcache.md).

The RTL builds its ports from these ``lib.data`` layouts; the engine model, the driver and the
testbenches pack and unpack the same layouts (``pack`` / ``unpack``), so a field's position exists
only here. Field widths follow the build (``KVPathConfig``).
"""

from __future__ import annotations

from amaranth.lib import data, enum

from kvpath.config import BLOCK_ELEMS, KVPathConfig, get_format

POS_BITS = 32  # token positions: the ring tracker's position counter


def bits(n: int) -> int:
    """Bits that hold 0 .. n - 1, at least 1."""
    return max(1, (n - 1).bit_length())


class Op(enum.Enum, shape=2):
    NOP = 0
    READ = 1
    EVICT_UPTO = 2
    CLEAR = 3


def kv_tag(c: KVPathConfig) -> data.StructLayout:
    """TUSER of ``s_axis_kv``: which vector a beat belongs to, and whether it starts a token."""
    return data.StructLayout({"append": 1, "kv": 1, "head": bits(c.max_kv_heads),
                              "layer": bits(c.max_layers), "seq": bits(c.max_seqs)})


def read_tag(c: KVPathConfig) -> data.StructLayout:
    """TUSER of ``m_axis_kv{p}``: the token position of the beat's vector, and a failed DDR read."""
    return data.StructLayout({"pos": POS_BITS, "error": 1})


def command_word(c: KVPathConfig) -> data.StructLayout:
    """A command without its argument: the CMD register's value, bits 31..0 of an ``s_axis_cmd`` beat."""
    return data.StructLayout({"op": Op, "kv": 1, "head": bits(c.max_kv_heads), "layer": bits(c.max_layers),
                              "cls": bits(c.n_classes), "seq": bits(c.max_seqs), "port": bits(c.read_ports)})


def command(c: KVPathConfig) -> data.FlexibleLayout:
    """One engine command: the word in bits 31..0 and the argument (CMD_ARG) in bits 63..32, so a
    CMD write (value = word, high = CMD_ARG) and an ``s_axis_cmd`` beat are the same 64 bits."""
    word = command_word(c)
    if word.size > 32:
        raise ValueError(f"a command word needs {word.size} bits; at most 32 fit the CMD register")
    return data.FlexibleLayout(64, {"word": data.Field(word, 0), "arg": data.Field(POS_BITS, 32)})


def command_value(c: KVPathConfig, op: Op, *, arg: int = 0, **fields) -> int:
    """The 64-bit command ``{word, arg}`` with the named word fields set."""
    return pack(command_word(c), op=op, **fields) | (arg & ((1 << POS_BITS) - 1)) << 32


def region_count(c: KVPathConfig) -> int:
    return c.max_seqs * c.max_layers * c.max_kv_heads * 2


def region_index(c: KVPathConfig, seq: int, layer: int, head: int, kv: int) -> int:
    """Row of the region table holding the base of (seq, layer, head, K|V); ``kv`` 0 = K, 1 = V."""
    return ((seq * c.max_layers + layer) * c.max_kv_heads + head) * 2 + kv


def row_bytes(c: KVPathConfig, head_dim: int) -> int:
    """Bytes of one token row: ``head_dim / 32`` blocks, or the static formats' codes."""
    f = get_format(c.fmt)
    if f.needs_scale_cache:
        return head_dim * f.code_bits // 8
    return head_dim // BLOCK_ELEMS * f.block_bytes


def head_dim_ok(c: KVPathConfig, head_dim: int) -> bool:
    """What HEAD_DIM may be: a multiple of the block, of both lane counts and of the rotation's size,
    within the build."""
    return (0 < head_dim <= c.max_head_dim and head_dim % BLOCK_ELEMS == 0
            and head_dim % c.quant_lanes == 0 and head_dim % c.dequant_lanes == 0
            and head_dim % max(c.rotation, 1) == 0)


def pack(layout: data.StructLayout, **values) -> int:
    """An integer holding ``values`` at their fields' positions (enum fields take enum members)."""
    word = 0
    for name, value in values.items():
        f = layout[name]
        word |= (int(getattr(value, "value", value)) & ((1 << f.width) - 1)) << f.offset
    return word


def unpack(layout: data.StructLayout, word: int) -> dict[str, int]:
    return {name: (word >> f.offset) & ((1 << f.width) - 1) for name, f in layout}
