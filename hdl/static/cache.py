"""The scale constant cache: static scales written by the driver, read by the datapaths every beat.

Storage. One memory per reader, each holding the half that reader needs: the quantizer's copy holds
reciprocals, the dequantizer's holds scales (both 16-bit floats of the element type). Per-channel
copies are ``lanes`` entries wide, so one row is one beat's entries: row ``index // lanes``, lane
``index % lanes`` (``max_head_dim`` is a multiple of the lanes, so a beat never straddles two rows);
per-head copies are one entry wide and the reader broadcasts it. Writes use lane-granular enables.

Ports. ``write`` (stream of ``ScaleWrite``) is always ready: a write is applied at the clock edge of
the cycle it is presented. Each memory is simple dual port (one write, one synchronous read), so a
write never takes a read cycle from a datapath: the readers run at one beat per clock whatever the
write traffic. Read ports are not transparent: a read in the cycle of a write to the same row sees
the old row. So a beat reads the table **as of the cycle it enters its datapath**: every write
presented in an earlier cycle is visible to it, writes in the same or later cycles are not.

Refusal. A write whose index is ``>= entries`` or whose scale or reciprocal half is Inf/NaN changes
nothing and raises ``error`` for one clock, registered (the register block makes it a sticky bit).
So the cache only ever holds finite values; its content after configuration is all zero (an unloaded
entry quantizes every element to code 0 and dequantizes to +0). Being memory, it keeps its content
through ``rst``.
"""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from kvpath import scales
from kvpath.config import DEFAULT, ELEM_BITS, KVPathConfig, check_elem, get_format
from kvpath.elements import element

from kvpath.hdl.static.write_port import ScaleWrite



def entries_per_row(scope: str, lanes: int) -> int:
    return lanes if scope == "channel" else 1


def check_geometry(scope: str, lanes: int, config: KVPathConfig) -> None:
    if scope == "channel" and config.max_head_dim % lanes:
        raise ValueError(f"per-channel scales need max_head_dim ({config.max_head_dim}) to be a "
                         f"multiple of the lanes ({lanes})")


class CacheReadSignature(wiring.Signature):
    """A reader's view of one cache copy: ``row`` and ``en`` out, the row's entries back one clock
    after an enabled cycle (``data`` holds while ``en`` is low)."""

    def __init__(self, rows: int, per_row: int):
        self.rows, self.per_row = rows, per_row
        super().__init__({
            "row": Out(range(max(2, rows))),
            "en": Out(1),
            "data": In(data.ArrayLayout(unsigned(ELEM_BITS), per_row)),
        })


def read_signature(fmt: str, lanes: int, config: KVPathConfig = DEFAULT) -> CacheReadSignature:
    scope = scales.scope_of(fmt)
    check_geometry(scope, lanes, config)
    per_row = entries_per_row(scope, lanes)
    return CacheReadSignature(scales.entry_count(scope, config) // per_row, per_row)


def finite_half(m: Module, bits, elem: str):
    frac, exp = element(elem).frac_bits, element(elem).exp_bits
    ok = Signal()
    m.d.comb += ok.eq(~bits[frac:frac + exp].all())
    return ok


class ScaleCache(wiring.Component):
    """Cache for static format ``fmt``: a copy for the quantizer (``quant``, reciprocals) when
    ``quant_lanes`` is given, one for the dequantizer (``dequant``, scales) when ``dequant_lanes`` is."""

    def __init__(self, fmt: str, elem: str = "fp16", config: KVPathConfig = DEFAULT,
                 quant_lanes: int | None = None, dequant_lanes: int | None = None):
        self.fmt = get_format(fmt)
        self.scope = scales.scope_of(fmt)
        self.elem = check_elem(elem)
        self.config = config
        self.entries = scales.entry_count(self.scope, config)
        self.copies = {}
        members = {"write": In(stream.Signature(ScaleWrite)), "error": Out(1)}
        for name, lanes, half in (("quant", quant_lanes, 1), ("dequant", dequant_lanes, 0)):
            if lanes is not None:
                sig = read_signature(fmt, lanes, config)
                self.copies[name] = (sig, half)
                members[name] = In(sig)
        if not self.copies:
            raise ValueError("a scale cache needs at least one reader (quant_lanes or dequant_lanes)")
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        w = self.write
        index, value = w.payload.index, w.payload.value
        ok_halves = [finite_half(m, value[16 * k:16 * k + 16], self.elem) for k in range(2)]
        accept = Signal()
        m.d.comb += [
            w.ready.eq(1),
            accept.eq(w.valid & (index < self.entries) & ok_halves[0] & ok_halves[1]),
        ]
        m.d.sync += self.error.eq(w.valid & ~accept)

        for name, (sig, half) in self.copies.items():
            mem = Memory(shape=data.ArrayLayout(unsigned(ELEM_BITS), sig.per_row), depth=sig.rows, init=[])
            m.submodules[f"{name}_mem"] = mem
            wr = mem.write_port(granularity=1)
            rd = mem.read_port(domain="sync", transparent_for=())
            port = getattr(self, name)
            lane_bits = (sig.per_row - 1).bit_length()  # per_row is a power of two (lanes)
            for k in range(sig.per_row):
                m.d.comb += wr.data[k].eq(value[16 * half:16 * half + 16])
            m.d.comb += [
                wr.addr.eq(index >> lane_bits),
                rd.addr.eq(port.row),
                rd.en.eq(port.en),
                port.data.eq(rd.data),
            ]
            if sig.per_row == 1:
                m.d.comb += wr.en.eq(accept)
            else:
                m.d.comb += wr.en.eq(accept << index[:lane_bits])
        return m


def context_layout(config: KVPathConfig = DEFAULT) -> data.StructLayout:
    """The per-beat stream context (a TUSER-like sideband): which (layer, head, K/V) the beat belongs
    to and the channel of its lane 0 (lane ``k`` is channel ``channel + k``)."""
    return data.StructLayout({
        "layer": unsigned(max(1, (config.max_layers - 1).bit_length())),
        "head": unsigned(max(1, (config.max_kv_heads - 1).bit_length())),
        "kv": unsigned(1),
        "channel": unsigned(max(1, (config.max_head_dim - 1).bit_length())),
    })


def cache_row(m: Module, ctx, scope: str, lanes: int, config: KVPathConfig):
    """``(row, ok)``: the cache row of a beat's entries and whether its context addresses one.

    A context is bad when a field exceeds the configuration or, per channel, the channel is not a
    multiple of the lanes; the datapaths then zero the beat and count it.
    """
    group = (ctx.layer * config.max_kv_heads + ctx.head) * 2 + ctx.kv
    ok = (ctx.layer < config.max_layers) & (ctx.head < config.max_kv_heads)
    if scope == "channel":
        shift = (lanes - 1).bit_length()
        row_value = group * (config.max_head_dim // lanes) + (ctx.channel >> shift)
        ok = ok & (ctx.channel < config.max_head_dim)
        if shift:
            ok = ok & (ctx.channel[:shift] == 0)
    else:
        row_value = group
    rows = scales.entry_count(scope, config) // entries_per_row(scope, lanes)
    row, good = Signal(range(max(2, rows)), name="cache_row"), Signal(name="context_ok")
    # A bad context reads row 0, so no out-of-range address ever reaches the memory (X in simulation).
    m.d.comb += [good.eq(ok), row.eq(Mux(good, row_value, 0))]
    return row, good
