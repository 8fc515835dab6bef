"""The one source of truth for kvpath's parameters, and the registry every dispatch reads.

The RTL generator, the golden model, the testbenches, the CLI and the driver all read formats and
limits from here; nothing else spells a block size or a block byte count, and nothing else decides
which module implements a format: ``FORMATS`` (per format) and ``FAMILIES`` (per format family)
name them, as dotted paths that ``load`` imports on first use, so this module imports none of them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from kvpath.elements import STREAM_ELEMENTS, lookup, stream_element

BLOCK_ELEMS = 32  # every supported format quantizes blocks of 32 elements along the last axis
ELEM_BITS = 16  # K/V elements arrive as 16-bit floats: FP16 or BF16, chosen at generate time
ELEM_TYPES = STREAM_ELEMENTS


def load(path: str):
    """The object a registry path names: ``"package.module:attribute"`` or a module ``"package.module"``."""
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


@dataclass(frozen=True)
class Family:
    """Where a format family is implemented.

    ``golden``: module with ``quantize_blocks(bits, fmt, elem)`` / ``dequantize_blocks(rows, fmt,
    elem)`` (block-scaled families) or the static formats' golden model; ``quantizer`` /
    ``dequantizer``: the RTL components, built as ``cls(fmt, lanes, elem[, config])``;
    ``regression``: the ``kvpath sim`` regression module; ``scale_cache``: the datapaths read a
    scale constant cache loaded by the driver.
    """

    name: str
    golden: str
    quantizer: str
    dequantizer: str
    regression: str
    scale_cache: bool = False


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("ggml", "kvpath.golden.ggml", "kvpath.hdl.quant.frame:Quantizer",
               "kvpath.hdl.dequant.frame:Dequantizer", "kvpath.sim.datapath.regression"),
        Family("mx", "kvpath.golden.mx", "kvpath.hdl.quant.frame:Quantizer",
               "kvpath.hdl.dequant.frame:Dequantizer", "kvpath.sim.datapath.regression"),
        Family("static", "kvpath.golden.static", "kvpath.hdl.static.quant:StaticQuantizer",
               "kvpath.hdl.static.dequant:StaticDequantizer", "kvpath.sim.static.regression",
               scale_cache=True),
    )
}


@dataclass(frozen=True)
class BlockFormat:
    """Byte layout of one quantized block, in ggml's order (scale fields first, then codes).

    ``family`` says where the scale comes from:
    ``ggml`` -- FP16 fields computed per block (q8_0, q4_0, q4_1);
    ``mx`` -- one E8M0 shared-exponent byte per block (OCP MX v1.0);
    ``static`` -- no per-block field: scales live in the scale constant cache, loaded by the driver
    per (layer, kv_head) (``scope == "head"``) or per (layer, kv_head, channel) (``"channel"``).
    """

    name: str
    code_bits: int  # bits per element code
    scale_fields: tuple[str, ...]  # per-block scale fields before the codes, in byte order
    ggml_type: str | None  # gguf.GGMLQuantizationType member name, for cross-checks (None: no ggml twin)
    family: str = "ggml"
    scale_bytes: int = 2  # bytes per scale field: FP16 for ggml, E8M0 for mx
    scope: str | None = None  # static formats only: "head" or "channel"
    # Registry paths (see ``load``): the golden model's unit of this format, the quantizer's
    # datapath (``FormatDatapath``) and the dequantizer's engine; the static family's blocks hold
    # their arithmetic themselves (``Family``), so theirs are None.
    golden: str = ""
    datapath: str | None = None
    engine: str | None = None
    # Elements the quantizer turns into codes per clock when the stream is wider (None: one beat
    # per clock). q4_1 runs at 4: its exact lane needs a 24 x 24-bit product (two DSP48E2) per
    # element, and the write path carries one token per decode step (docs/benchmarks.md).
    quant_elems_per_clock: int | None = None

    @property
    def family_info(self) -> Family:
        return FAMILIES[self.family]

    @property
    def needs_scale_cache(self) -> bool:
        return self.family_info.scale_cache

    @property
    def block_elems(self) -> int:
        return BLOCK_ELEMS

    @property
    def header_bytes(self) -> int:
        return self.scale_bytes * len(self.scale_fields)

    @property
    def code_bytes(self) -> int:
        return BLOCK_ELEMS * self.code_bits // 8

    @property
    def block_bytes(self) -> int:
        return self.header_bytes + self.code_bytes

    @property
    def bits_per_element(self) -> float:
        return 8 * self.block_bytes / BLOCK_ELEMS


FORMATS: dict[str, BlockFormat] = {
    f.name: f
    for f in (
        BlockFormat("q8_0", 8, ("d",), "Q8_0", golden="kvpath.golden.ggml.q8_0",
                    datapath="kvpath.hdl.quant.q8_0:Q80Datapath", engine="kvpath.hdl.dequant.mul:MulEngine"),
        BlockFormat("q4_0", 4, ("d",), "Q4_0", golden="kvpath.golden.ggml.q4_0",
                    datapath="kvpath.hdl.quant.q4_0:Q40Datapath", engine="kvpath.hdl.dequant.mul:MulEngine"),
        BlockFormat("q4_1", 4, ("d", "m"), "Q4_1", golden="kvpath.golden.ggml.q4_1",
                    datapath="kvpath.hdl.quant.q4_1:Q41Datapath", engine="kvpath.hdl.dequant.q4_1:Q41Engine",
                    quant_elems_per_clock=4),
        *(BlockFormat(name, bits, ("e",), ggml, family="mx", scale_bytes=1, golden="kvpath.golden.mx",
                      datapath="kvpath.hdl.quant.mx:MXDatapath", engine="kvpath.hdl.dequant.mx:MXEngine")
          for name, bits, ggml in (("mxfp4", 4, "MXFP4"), ("mxint8", 8, None), ("mxfp8_e4m3", 8, None))),
        *(BlockFormat(name, bits, (), None, family="static", scope=scope, golden="kvpath.golden.static")
          for name, bits, scope in (("int8_ph", 8, "head"), ("int4_ph", 4, "head"),
                                    ("int8_pc", 8, "channel"), ("int4_pc", 4, "channel"))),
    )
}
GGML_FORMATS = tuple(n for n, f in FORMATS.items() if f.family == "ggml")
MX_FORMATS = tuple(n for n, f in FORMATS.items() if f.family == "mx")
STATIC_FORMATS = tuple(n for n, f in FORMATS.items() if f.family == "static")
BLOCK_SCALED_FORMATS = GGML_FORMATS + MX_FORMATS  # scale travels inside the block

QUANT_LANES = (8, 16, 32)
QUANT_ELEMS_PER_CLOCK = (4, 8, 16, 32)  # a quantizer core's lanes: elements per clock
DEQUANT_LANES = (8, 16, 32, 64, 128)


def get_format(name: str) -> BlockFormat:
    return lookup(FORMATS, name, "format")


def quant_rate(fmt: str, lanes: int, elems_per_clock: int | None = None) -> int:
    """Elements the quantizer codes per clock: ``elems_per_clock``, else the format's default (at
    most ``lanes``), else ``lanes``. A rate that is not a core's lane count, exceeds ``lanes`` or
    is asked of a static format is refused, not adjusted."""
    f = get_format(fmt)
    if elems_per_clock is None:
        return lanes if f.quant_elems_per_clock is None else min(f.quant_elems_per_clock, lanes)
    if f.family == "static":
        raise ValueError(f"{fmt} codes a beat per clock; elements per clock is for block-scaled formats")
    if elems_per_clock not in QUANT_ELEMS_PER_CLOCK:
        raise ValueError(f"quantizer elements per clock must be one of {QUANT_ELEMS_PER_CLOCK}, "
                         f"got {elems_per_clock}")
    if elems_per_clock > lanes:
        raise ValueError(f"quantizer elements per clock {elems_per_clock} is more than its {lanes} lanes")
    return elems_per_clock


def check_elem(elem: str) -> str:
    return stream_element(elem).name


@dataclass(frozen=True)
class KVPathConfig:
    """Generate-time configuration of one KV path instance."""

    fmt: str = "q8_0"
    elem: str = "fp16"  # K/V element type on the streams: "fp16" or "bf16"
    quant_lanes: int = 16
    dequant_lanes: int = 16
    # Elements the write path's quantizer codes per clock, at most quant_lanes (None: the format's
    # quant_elems_per_clock, else quant_lanes); block-scaled formats only.
    quant_elems_per_clock: int | None = None
    # Limits the register block reports, and the driver checks against its model.
    max_layers: int = 20
    max_kv_heads: int = 2
    max_head_dim: int = 256
    kv_max_tokens: int = 32768
    # The KV cache in DDR (docs/kvcache.md): sequences, ring policy classes, read ports, and the AXI4
    # masters (128-bit HP ports, which cap bursts at 16 beats; AxCACHE 0b0011 for HP, 0b1111 for HPC).
    max_seqs: int = 1
    n_classes: int = 2
    read_ports: int = 1
    addr_width: int = 40
    bus_bytes: int = 16
    max_burst: int = 16
    max_outstanding: int = 4
    axi_cache: int = 0b0011
    axi_prot: int = 0
    # Walsh-Hadamard rotation of every K/V vector on the write path before the quantizer, in groups
    # of this many elements (0: none; 16, 64 or 256; FP16, block-scaled formats): hdl/rotate/hadamard.py,
    # bit-exact with kvpath.golden.hadamard.ref_hadamard. HEAD_DIM must then be a multiple of it.
    rotation: int = 0

    def __post_init__(self):
        get_format(self.fmt)
        check_elem(self.elem)
        if self.quant_lanes not in QUANT_LANES:
            raise ValueError(f"quantizer lanes must be one of {QUANT_LANES}, got {self.quant_lanes}")
        if self.dequant_lanes not in DEQUANT_LANES:
            raise ValueError(f"dequantizer lanes must be one of {DEQUANT_LANES}, got {self.dequant_lanes}")
        quant_rate(self.fmt, self.quant_lanes, self.quant_elems_per_clock)
        for name, low, high in (("max_seqs", 1, 256), ("n_classes", 1, 16), ("read_ports", 1, 4),
                                ("addr_width", 32, 64), ("max_outstanding", 1, 16), ("axi_cache", 0, 15),
                                ("axi_prot", 0, 7)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name} must be in {low}..{high}, got {value}")
        if self.bus_bytes not in (4, 8, 16, 32, 64):
            raise ValueError(f"bus_bytes must be 4, 8, 16, 32 or 64, got {self.bus_bytes}")
        if self.max_burst not in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            raise ValueError(f"max_burst must be a power of two up to 256, got {self.max_burst}")
        if self.rotation:
            if self.rotation not in (16, 64, 256) or self.rotation > self.max_head_dim:
                raise ValueError(f"rotation must be 0, 16, 64 or 256 (n = 4**k, at most max_head_dim "
                                 f"{self.max_head_dim}), got {self.rotation}")
            if self.elem != "fp16" or self.fmt not in BLOCK_SCALED_FORMATS:
                raise ValueError(f"the write-path rotation takes FP16 elements and a block-scaled format, "
                                 f"got {self.elem} and {self.fmt}")

    @property
    def format(self) -> BlockFormat:
        return get_format(self.fmt)


DEFAULT = KVPathConfig()
