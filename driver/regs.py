"""Driver access to the register block by register and field name, from the generated JSON map.

Nothing here knows an address: ``Registers`` reads offsets, fields and access types from
``kvpath_regs.json`` (``kvpath generate`` writes it next to the bitstream's Verilog) and talks to
the hardware through any object with ``read32(addr)`` / ``write32(addr, value)`` (``/dev/mem``,
PYNQ's MMIO, a simulator, a model).

``check_bitstream(expected)`` reads ID, VERSION and the configuration block and raises
``BitstreamMismatch`` naming every field that differs from what ``expected`` would have built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Protocol

from kvpath.config import KVPathConfig
from kvpath.regmap import json_map
from kvpath.regmap import map as regmap_decl

WORD_MASK = 0xFFFF_FFFF


class Transport(Protocol):
    def read32(self, addr: int) -> int: ...

    def write32(self, addr: int, value: int) -> None: ...


class BitstreamMismatch(ValueError):
    """The hardware is not the build the driver was configured for."""


class Registers:
    def __init__(self, transport: Transport, regmap: dict | str | Path, base: int = 0):
        self.io = transport
        self.map = regmap if isinstance(regmap, dict) else json_map.load(regmap)
        self.base = base
        self._regs = {r["name"]: r for r in self.map["registers"]}
        self._wide = {r["wide"]: r for r in self.map["registers"] if r["part"] == "lo"}

    # --- lookup
    def register(self, name: str) -> dict:
        try:
            return self._regs[name]
        except KeyError:
            raise ValueError(f"no register {name!r} in the map; known: {', '.join(self._regs)}") from None

    def field(self, reg: str, name: str) -> dict:
        for f in self.register(reg)["fields"]:
            if f["name"] == name:
                return f
        raise ValueError(f"register {reg} has no field {name!r}")

    def address(self, name: str) -> int:
        return self.base + self.register(name)["offset"]

    # --- whole registers
    def read(self, name: str) -> int:
        return self.io.read32(self.address(name)) & WORD_MASK

    def write(self, name: str, value: int) -> None:
        r = self.register(name)
        if not r["writable"]:
            raise ValueError(f"{name} is read-only")
        if not 0 <= value <= WORD_MASK:
            raise ValueError(f"{name}: 0x{value:x} is not a 32-bit value")
        self.io.write32(self.address(name), value)

    # --- fields
    def read_field(self, reg: str, name: str) -> int:
        f = self.field(reg, name)
        return (self.read(reg) >> f["lsb"]) & ((1 << f["width"]) - 1)

    def write_field(self, reg: str, name: str, value: int) -> None:
        """Set one field. The register's other RW fields keep their values (read-modify-write);
        its other W1C and W1P bits are written 0, so nothing is cleared or pulsed by accident."""
        f = self.field(reg, name)
        if f["access"] == "ro":
            raise ValueError(f"{reg}.{name} is read-only")
        if not 0 <= value < (1 << f["width"]):
            raise ValueError(f"{reg}.{name}: {value} does not fit {f['width']} bits")
        mask = ((1 << f["width"]) - 1) << f["lsb"]
        word = value << f["lsb"]
        others = sum(((1 << g["width"]) - 1) << g["lsb"] for g in self.register(reg)["fields"]
                     if g["access"] == "rw" and g is not f)
        if others:
            word |= self.read(reg) & others & ~mask
        self.write(reg, word)

    def read_counter(self, port: str) -> int:
        """A counter by its port name; 64-bit counters read LO (which snapshots HI) then HI."""
        if port in self._wide:
            lo = self._wide[port]
            hi = next(r for r in self.map["registers"] if r["wide"] == port and r["part"] == "hi")
            low = self.read(lo["name"])
            return (self.read(hi["name"]) << 32) | low
        for r in self.map["registers"]:
            for f in r["fields"]:
                if f["port"] == port and f["access"] == "ro" and f["value_from"] is None:
                    return self.read_field(r["name"], f["name"])
        raise ValueError(f"no counter {port!r} in the map")

    def stream_register(self, port: str) -> dict:
        """The write-stream register whose writes leave on ``port`` (``scale_write``, ...)."""
        for r in self.map["registers"]:
            if r["stream"] and r["stream"]["port"] == port:
                return r
        raise ValueError(f"no write stream {port!r} in the map")

    def write_stream(self, port: str, values: Iterable[int], index: int | None = None,
                     high: int | None = None) -> int:
        """Emit one beat per value on a write stream: the index register once (if given), the high
        register once (if given), then one full-word write per value (the hardware advances the
        index). Returns the number written."""
        r = self.stream_register(port)
        if index is not None:
            self.write(r["stream"]["index"], index)
        if high is not None:
            self.write(r["stream"]["high"], high)
        n = 0
        for value in values:
            self.write(r["name"], value)
            n += 1
        return n

    def load_scales(self, first: int, entries: Iterable[int]) -> int:
        """Stream scale-cache entries from index ``first`` (SCALE_INDEX once, then SCALE_DATA per
        entry). Returns the number written."""
        entries = list(entries)
        size = self.map["config"]["scale_cache_entries"]
        if first < 0 or first + len(entries) > size:
            raise ValueError(f"entries {first}..{first + len(entries) - 1} are outside the scale cache "
                             f"(0..{size - 1})")
        return self.write_stream("scale_write", entries, index=first)

    # --- identity
    def check_bitstream(self, expected: KVPathConfig) -> None:
        """Refuse hardware whose ID, VERSION or configuration block differs from ``expected``."""
        problems = []
        for r in self.map["registers"]:
            constants = [f for f in r["fields"] if f["value_from"] is not None]
            if not constants:
                continue
            word = self.read(r["name"])
            for f in constants:
                got = (word >> f["lsb"]) & ((1 << f["width"]) - 1)
                want = getattr(regmap_decl, f["value_from"])(expected)
                if got != want:
                    problems.append(f"{r['name']}.{f['name']}: hardware {got} (0x{got:x}), "
                                    f"expected {want} (0x{want:x})")
        if problems:
            raise BitstreamMismatch("the bitstream does not match the expected configuration "
                                    f"{expected}:\n  " + "\n  ".join(problems))
