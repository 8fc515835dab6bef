"""Declaration types of the register map and their resolution against one configuration.

``kvpath.regmap.map`` declares the registers with these types; ``resolve`` turns the declaration
into concrete offsets, bit positions, widths and reset values for one ``KVPathConfig``. Every
generator (SystemRDL, C header, JSON, docs, RTL, Python model) reads the resolved ``RegisterMap``,
so an address or a field position exists in exactly one place: the declaration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from kvpath.config import KVPathConfig

DATA_BITS = 32
WORD_BYTES = DATA_BITS // 8

# Software access of a field.
RO = "ro"  # read-only: a constant of the build (``value``) or a live hardware input
RW = "rw"  # read/write storage, drives an output port
W1C = "w1c"  # sticky bit: set by a hardware pulse, cleared by writing 1
WO = "wo"  # write-only: reads 0, every write acts (SCALE_DATA)
W1P = "w1p"  # write 1 to emit a one-cycle pulse; reads 0
ACCESS = (RO, RW, W1C, WO, W1P)

Value = int | Callable[[KVPathConfig], int]


def _eval(v: Value, config: KVPathConfig) -> int:
    return v(config) if callable(v) else v


@dataclass(frozen=True)
class FieldDecl:
    """One field as declared. ``width`` and ``reset`` may depend on the configuration.

    ``value`` (RO only) makes the field a constant of the build: the function of the configuration
    whose result the hardware reports, and the driver compares. An RO field without ``value`` is a
    live hardware input. ``lsb`` leaves a gap; by default fields pack upward in declaration order.
    """

    name: str
    width: Value
    access: str
    desc: str
    reset: Value = 0
    value: Callable[[KVPathConfig], int] | None = None
    lsb: int | None = None

    def __post_init__(self):
        if self.access not in ACCESS:
            raise ValueError(f"field {self.name}: unknown access {self.access!r}")
        if self.value is not None and self.access != RO:
            raise ValueError(f"field {self.name}: only RO fields report a configuration value")


@dataclass(frozen=True)
class WriteStream:
    """A WO register whose accepted writes leave the block as beats of the stream ``port``, the bus
    response waiting until the stream takes them. A beat is ``{index, value, high}``: ``index`` is
    the RW register ``index``'s value (incremented after each accepted write; omitted when None),
    ``value`` the written word, ``high`` the RW register ``high``'s value (omitted when None; with
    it, a 64-bit value is ``high:value``). Such writes need WSTRB = 0xF (anything else: SLVERR)."""

    port: str
    index: str | None = None
    high: str | None = None


@dataclass(frozen=True)
class RegDecl:
    name: str
    desc: str
    fields: tuple[FieldDecl, ...]
    stream: WriteStream | None = None


@dataclass(frozen=True)
class Group:
    """Registers at consecutive words from ``base``: the only addresses declared anywhere."""

    name: str
    base: int
    desc: str
    regs: tuple[RegDecl, ...]


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int
    access: str
    reset: int
    desc: str
    port: str  # name of the RTL port it drives or reads (unused for constants)
    value_from: str | None  # name of the configuration function of a constant

    @property
    def msb(self) -> int:
        return self.lsb + self.width - 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    @property
    def is_constant(self) -> bool:
        return self.value_from is not None

    @property
    def is_input(self) -> bool:
        return self.access == RO and self.value_from is None


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    desc: str
    group: str
    fields: tuple[Field, ...]
    # A counter wider than the bus is split in two words: reading LO snapshots the upper half,
    # which HI then returns, so LO-then-HI reads one consistent 64-bit value.
    wide: str | None = None  # port of the 64-bit counter this word belongs to
    part: str | None = None  # "lo" or "hi"
    stream: WriteStream | None = None  # writes leave on this stream (WO registers)

    @property
    def reset(self) -> int:
        return sum(f.reset << f.lsb for f in self.fields)

    @property
    def writable(self) -> bool:
        return any(f.access != RO for f in self.fields)

    @property
    def readable_mask(self) -> int:
        """Bits that read back something other than 0."""
        return sum(f.mask for f in self.fields if f.access in (RO, RW, W1C))

    @property
    def access(self) -> str:
        kinds = {f.access for f in self.fields}
        return kinds.pop() if len(kinds) == 1 else "/".join(a for a in ACCESS if a in kinds)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}")


@dataclass(frozen=True)
class RegisterMap:
    name: str
    desc: str
    config: KVPathConfig
    magic: int
    version: tuple[int, int]
    registers: tuple[Register, ...]
    groups: tuple[Group, ...] = field(repr=False, default=())

    @property
    def addr_width(self) -> int:
        """Byte-address bits the block decodes: the smallest power of two holding every register."""
        end = max(r.offset for r in self.registers) + WORD_BYTES
        return max(2, (end - 1).bit_length())

    def register(self, name: str) -> Register:
        for r in self.registers:
            if r.name == name:
                return r
        raise KeyError(f"no register {name!r}")

    def at(self, offset: int) -> Register | None:
        for r in self.registers:
            if r.offset == offset:
                return r
        return None

    def fields(self):
        for r in self.registers:
            for f in r.fields:
                yield r, f


def _port_name(reg: RegDecl, fd: FieldDecl) -> str:
    # A register holding one "value" field is named by the register; otherwise fields name themselves.
    return reg.name.lower() if fd.name == "value" else fd.name


def _resolve_fields(reg: RegDecl, config: KVPathConfig) -> list[Field]:
    out, next_lsb = [], 0
    for fd in reg.fields:
        width = _eval(fd.width, config)
        lsb = next_lsb if fd.lsb is None else fd.lsb
        if width < 1:
            raise ValueError(f"{reg.name}.{fd.name}: width {width} < 1")
        if lsb < next_lsb:
            raise ValueError(f"{reg.name}.{fd.name}: bit {lsb} overlaps the previous field")
        if fd.value is not None:
            reset = fd.value(config)
            if not 0 <= reset < (1 << width):
                raise ValueError(f"{reg.name}.{fd.name}: configuration value {reset} does not fit "
                                 f"{width} bits")
        else:
            reset = _eval(fd.reset, config)
            if not 0 <= reset < (1 << width):
                raise ValueError(f"{reg.name}.{fd.name}: reset {reset} does not fit {width} bits")
        out.append(Field(fd.name, lsb, width, fd.access, reset, fd.desc, _port_name(reg, fd),
                         fd.value.__name__ if fd.value is not None else None))
        next_lsb = lsb + width
    return out


def _split_wide(reg: RegDecl, fields: list[Field], offset: int, group: str) -> list[Register]:
    (f,) = fields
    if f.access != RO or f.is_constant or f.width > 2 * DATA_BITS:
        raise ValueError(f"{reg.name}: only a live RO counter of up to {2 * DATA_BITS} bits may be "
                         f"wider than {DATA_BITS} bits")
    parts = []
    for k, part in enumerate(("lo", "hi")):
        width = min(DATA_BITS, f.width - k * DATA_BITS)
        word = Field("value", 0, width, RO, 0, f"bits {k * DATA_BITS + width - 1}..{k * DATA_BITS} of "
                     f"{f.desc}", f.port, None)
        desc = reg.desc + (" Reading LO snapshots the upper half for HI." if part == "lo"
                           else " Returns the upper half snapshotted by the last LO read.")
        parts.append(Register(f"{reg.name}_{part.upper()}", offset + k * WORD_BYTES, desc, group,
                              (word,), wide=f.port, part=part))
    return parts


def resolve(name: str, desc: str, magic: int, version: tuple[int, int], groups: tuple[Group, ...],
            config: KVPathConfig) -> RegisterMap:
    registers: list[Register] = []
    for g in groups:
        if g.base % WORD_BYTES:
            raise ValueError(f"group {g.name}: base 0x{g.base:x} is not word aligned")
        offset = g.base
        for reg in g.regs:
            if registers and offset < registers[-1].offset + WORD_BYTES:
                raise ValueError(f"group {g.name}: register {reg.name} at 0x{offset:x} overlaps "
                                 f"{registers[-1].name}")
            fields = _resolve_fields(reg, config)
            if fields[-1].msb >= DATA_BITS:
                registers += _split_wide(reg, fields, offset, g.name)
            else:
                registers.append(Register(reg.name, offset, reg.desc, g.name, tuple(fields),
                                          stream=reg.stream))
            offset = registers[-1].offset + WORD_BYTES
    names = [r.name for r in registers]
    if len(set(names)) != len(names):
        raise ValueError("register names are not unique")
    ports = [f.port for r in registers for f in r.fields if not f.is_constant and r.part != "hi"]
    if len(set(ports)) != len(ports):
        raise ValueError(f"port names are not unique: {sorted(p for p in ports if ports.count(p) > 1)}")
    by_name = {r.name: r for r in registers}
    for r in registers:
        if r.stream is None:
            if any(f.access == WO for f in r.fields):
                raise ValueError(f"{r.name}: a WO field needs a write stream to go to")
            continue
        if any(f.access != WO for f in r.fields):
            raise ValueError(f"{r.name}: a write-stream register has WO fields only")
        for role, other in (("index", r.stream.index), ("high", r.stream.high)):
            if other is not None and (other not in by_name or [f.access for f in by_name[other].fields] != [RW]):
                raise ValueError(f"{r.name}: its {role} register {other} must exist and hold one RW field")
    return RegisterMap(name, desc, config, magic, version, tuple(registers), groups)
