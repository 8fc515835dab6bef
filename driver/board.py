"""The driver's board backend: kvpath's registers and its KV memory, seen from Linux user space.

``open_board()`` gives a ``BoardTransport``, the KV260 side of the driver's ``Transport``
(``kvpath.driver.transport``): ``read32`` / ``write32`` on the register block, ``mem_write`` /
``mem_read`` on the KV memory at physical addresses ``[mem_base, mem_base + mem_bytes)``.

Registers (``addr`` is an offset inside the register window, so ``Registers(..., base=0)``):

* ``open_uio(name)``: the UIO device whose ``/sys/class/uio/uioN/name`` is ``name`` (the overlay's
  node, "kvpath"); map 0's address and size come from ``maps/map0/``; map M is at mmap offset
  M x page size (the UIO convention).
* ``open_devmem(phys, size)``: ``/dev/mem`` at a physical address, for images without the UIO
  node (needs root and a kernel whose STRICT_DEVMEM allows that range).

Each access is one aligned 32-bit load or store through a ``memoryview`` cast to 32-bit words. A
byte-wise copy would split one register read into four bus reads, which breaks read-to-clear and
snapshot registers.

KV memory: ``UdmaBuf(name)`` maps ``/dev/<name>`` and reads ``phys_addr`` and ``size`` from
``/sys/class/u-dma-buf/<name>/``; ``open_kv_buffer`` falls back to ``pynq.allocate`` when pynq is
importable (the optional ``board`` extra) and no u-dma-buf exists.

The cache rule. kvpath's masters reach DDR through S_AXI_HP<n>_FPD, which do not snoop the CPU
caches, and the buffer is mapped cached (uncached would make every CPU access a bus transaction).
So:

* after the CPU writes data kvpath will read: ``sync_for_device(offset, size)`` (clean), *then*
  start kvpath;
* after kvpath wrote data and before the CPU reads it: ``sync_for_cpu(offset, size)`` (invalidate),
  and only once kvpath is done with that range.

``BoardTransport.mem_write`` / ``mem_read`` follow it by themselves: clean right after writing,
invalidate right before reading. Because every CPU write is cleaned at once, an invalidate never
throws away a CPU write that had not reached DDR.

Every access is bounds-checked against its window: an offset outside it raises ``WindowError``
naming the offset, the length, the window and its physical address.

What the board backend cannot do: ``send_kv`` / ``receive_kv``. The KV260 build ties the
engine's ``s_axis_kv`` inputs off and leaves its ``m_axis_kv*`` outputs open (build.tcl): no PS
port reaches those streams, so on the board K/V travel through DDR, staged with ``mem_write``
and read back with ``mem_read``. Both raise ``NotImplementedError`` saying so.

Tested with regular files standing in for the devices (tests/boards/test_board_transport.py):
paths, offsets, byte order, bounds and the sync-file writes. Real device memory, caches and the
interrupt can only be seen on the board (docs/kv260.md).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Sequence

PAGE = mmap.PAGESIZE
WORD_MASK = 0xFFFF_FFFF

DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE = 0, 1, 2  # u-dma-buf sync_direction values


class WindowError(ValueError):
    """An access outside (or misaligned in) a mapped window."""


class DeviceNotFound(FileNotFoundError):
    """The UIO device or u-dma-buf is not there (overlay not applied? module not loaded?)."""


def _under(sysroot, path: str) -> Path:
    return Path(sysroot) / path.lstrip("/")


class _Window:
    name: str
    phys: int
    size: int

    def _check(self, offset: int, length: int, align: int = 1) -> None:
        where = f"window '{self.name}' [0x0, 0x{self.size:x}) at physical 0x{self.phys:x}"
        if not isinstance(offset, int) or offset < 0 or length < 0 or offset + length > self.size:
            shown = f"0x{offset:x}" if isinstance(offset, int) and offset >= 0 else repr(offset)
            raise WindowError(f"offset {shown} (+{length} bytes) is outside {where}")
        if offset % align:
            raise WindowError(f"offset 0x{offset:x} is not {align}-byte aligned in {where}")


def _int(text: str) -> int:
    """A sysfs number: hex with 0x, else decimal."""
    text = text.strip()
    return int(text, 16) if text.lower().startswith("0x") else int(text, 10)


class MappedRegisters(_Window):
    """32-bit registers in an mmap-ed window; offsets are relative to the window."""

    def __init__(self, fd: int, length: int, file_offset: int, delta: int, size: int, name: str, phys: int):
        self._fd = fd
        self._mm = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                             offset=file_offset)
        self._words = memoryview(self._mm).cast("I")
        self._delta = delta // 4
        self.name, self.phys, self.size = name, phys, size

    def read32(self, offset: int) -> int:
        self._check(offset, 4, 4)
        return self._words[self._delta + offset // 4]

    def write32(self, offset: int, value: int) -> None:
        self._check(offset, 4, 4)
        if not 0 <= value <= WORD_MASK:
            raise ValueError(f"0x{value:x} is not a 32-bit value (write to offset 0x{offset:x} of '{self.name}')")
        self._words[self._delta + offset // 4] = value

    def close(self) -> None:
        if self._mm is not None:
            self._words.release()
            self._mm.close()
            os.close(self._fd)
            self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def find_uio(name: str, sysroot: str | Path = "/") -> tuple[Path, int, int]:
    """(device path, map 0 physical address, map 0 size) of the UIO device called ``name``."""
    root = _under(sysroot, "/sys/class/uio")
    seen = []
    for d in sorted(root.glob("uio*"), key=lambda p: int(p.name[3:]) if p.name[3:].isdigit() else -1):
        try:
            dev_name = (d / "name").read_text().strip()
        except OSError:
            continue
        seen.append(f"{d.name}={dev_name}")
        if dev_name == name:
            addr = int((d / "maps/map0/addr").read_text().strip(), 16)
            size = int((d / "maps/map0/size").read_text().strip(), 16)
            return _under(sysroot, f"/dev/{d.name}"), addr, size
    raise DeviceNotFound(f"no UIO device named {name!r} under {root} (found: {', '.join(seen) or 'none'}); "
                         "is the overlay loaded and the kernel booted with uio_pdrv_genirq.of_id=generic-uio?")


def open_uio(name: str = "kvpath", sysroot: str | Path = "/", map_index: int = 0) -> MappedRegisters:
    dev, addr, size = find_uio(name, sysroot)
    if map_index:
        d = _under(sysroot, f"/sys/class/uio/{dev.name}/maps/map{map_index}")
        addr = int((d / "addr").read_text().strip(), 16)
        size = int((d / "size").read_text().strip(), 16)
    fd = os.open(dev, os.O_RDWR | os.O_SYNC)
    return MappedRegisters(fd, size, map_index * PAGE, 0, size, name, addr)


def open_devmem(phys: int, size: int, sysroot: str | Path = "/", name: str = "kvpath") -> MappedRegisters:
    if phys % 4 or size <= 0:
        raise ValueError(f"/dev/mem window 0x{phys:x}+0x{size:x}: address must be 4-byte aligned, size > 0")
    base = phys & ~(PAGE - 1)
    delta = phys - base
    fd = os.open(_under(sysroot, "/dev/mem"), os.O_RDWR | os.O_SYNC)
    return MappedRegisters(fd, delta + size, base, delta, size, name, phys)


class UdmaBuf(_Window):
    """The KV region as a u-dma-buf: ``/dev/<name>`` plus ``/sys/class/u-dma-buf/<name>/``."""

    def __init__(self, name: str = "udmabuf_kvpath", sysroot: str | Path = "/"):
        self.name = name
        self._sys = _under(sysroot, f"/sys/class/u-dma-buf/{name}")
        if not self._sys.is_dir():
            raise DeviceNotFound(f"no u-dma-buf {name!r} ({self._sys} missing): is the overlay loaded "
                                 "and the u-dma-buf module inserted?")
        self.phys = int((self._sys / "phys_addr").read_text().strip(), 16)
        self.size = _int((self._sys / "size").read_text())
        self._fd = os.open(_under(sysroot, f"/dev/{name}"), os.O_RDWR)  # no O_SYNC: cached + manual sync
        self._mm = mmap.mmap(self._fd, self.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)

    @property
    def physical_address(self) -> int:
        return self.phys

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return self._mm[offset:offset + length]

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        self._mm[offset:offset + len(data)] = data

    def view(self, offset: int = 0, length: int | None = None) -> memoryview:
        """Zero-copy view (e.g. for ``numpy.frombuffer``); release it before ``close``."""
        length = self.size - offset if length is None else length
        self._check(offset, length)
        return memoryview(self._mm)[offset:offset + length]

    def _sync(self, which: str, offset: int, length: int | None, direction: int) -> None:
        length = self.size - offset if length is None else length
        self._check(offset, length)
        for attr, value in (("sync_offset", offset), ("sync_size", length), ("sync_direction", direction),
                            (which, 1)):
            with open(self._sys / attr, "w") as f:
                f.write(f"{value}\n")

    def sync_for_device(self, offset: int = 0, length: int | None = None) -> None:
        """Clean the CPU cache over the range: do it after CPU writes, before kvpath reads."""
        self._sync("sync_for_device", offset, length, DMA_TO_DEVICE)

    def sync_for_cpu(self, offset: int = 0, length: int | None = None) -> None:
        """Invalidate the CPU cache over the range: do it after kvpath writes, before CPU reads."""
        self._sync("sync_for_cpu", offset, length, DMA_FROM_DEVICE)

    def close(self) -> None:
        if self._mm is not None:
            self._mm.close()
            os.close(self._fd)
            self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class PynqBuffer(_Window):
    """The KV region from ``pynq.allocate`` (PYNQ images): same interface as ``UdmaBuf``."""

    def __init__(self, size: int, name: str = "pynq", allocate=None):
        if allocate is None:
            import pynq  # optional dependency, only on PYNQ images

            allocate = pynq.allocate
        self._buf = allocate(shape=(size,), dtype="u1")
        self.name, self.size = name, size
        self.phys = int(self._buf.physical_address)

    @property
    def physical_address(self) -> int:
        return self.phys

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return self._buf[offset:offset + length].tobytes()

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        self._buf[offset:offset + len(data)] = memoryview(data)

    def sync_for_device(self, offset: int = 0, length: int | None = None) -> None:
        self._check(offset, self.size - offset if length is None else length)
        self._buf.flush()  # pynq cleans the whole buffer

    def sync_for_cpu(self, offset: int = 0, length: int | None = None) -> None:
        self._check(offset, self.size - offset if length is None else length)
        self._buf.invalidate()

    def close(self) -> None:
        self._buf.freebuffer()


def open_kv_buffer(name: str = "udmabuf_kvpath", size: int | None = None, sysroot: str | Path = "/"):
    """The u-dma-buf if it exists, else a pynq buffer of ``size`` bytes if pynq is importable."""
    try:
        return UdmaBuf(name, sysroot)
    except DeviceNotFound as missing:
        try:
            import pynq
        except ImportError:
            raise missing from None
        if size is None:
            raise ValueError("no u-dma-buf: give size= to allocate the KV region with pynq") from missing
        return PynqBuffer(size, allocate=pynq.allocate)


STREAMS_NOT_REACHABLE = (
    "the KV260 build has no path from the processor to the engine's K/V streams: build.tcl ties "
    "s_axis_kv off and leaves m_axis_kv* open, because the PS has no AXI-Stream port. On the board, "
    "K/V travel through DDR: stage them with mem_write and read the engine's output with mem_read "
    "(docs/kv260.md, 'The board backend')")


class BoardTransport:
    """The driver's ``Transport`` on a KV260: registers through UIO or /dev/mem, KV memory through
    u-dma-buf or pynq. ``mem_*`` addresses are physical, as the engine's masters see them."""

    def __init__(self, registers: MappedRegisters, memory):
        self.registers = registers
        self.memory = memory
        self.mem_base = memory.physical_address
        self.mem_bytes = memory.size

    def read32(self, addr: int) -> int:
        return self.registers.read32(addr)

    def write32(self, addr: int, value: int) -> None:
        self.registers.write32(addr, value)

    def _offset(self, addr: int, n: int) -> int:
        if not isinstance(addr, int) or not (self.mem_base <= addr and addr + n <= self.mem_base + self.mem_bytes):
            shown = f"0x{addr:x}" if isinstance(addr, int) and addr >= 0 else repr(addr)
            raise WindowError(f"physical address {shown} (+{n} bytes) is outside the KV memory "
                              f"[0x{self.mem_base:x}, 0x{self.mem_base + self.mem_bytes:x})")
        return addr - self.mem_base

    def mem_write(self, addr: int, data: bytes) -> None:
        offset = self._offset(addr, len(data))
        self.memory.write(offset, data)
        self.memory.sync_for_device(offset, len(data))

    def mem_read(self, addr: int, n: int) -> bytes:
        offset = self._offset(addr, n)
        self.memory.sync_for_cpu(offset, n)
        return self.memory.read(offset, n)

    def send_kv(self, beats: Sequence) -> None:
        raise NotImplementedError(f"send_kv: {STREAMS_NOT_REACHABLE}")

    def receive_kv(self, port: int, n_beats: int) -> list:
        raise NotImplementedError(f"receive_kv: {STREAMS_NOT_REACHABLE}")

    def close(self) -> None:
        self.registers.close()
        self.memory.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_registers(uio_name: str = "kvpath", sysroot: str | Path = "/",
                   devmem: tuple[int, int] | None = None) -> MappedRegisters:
    """The UIO device ``uio_name``; without one, ``/dev/mem`` at ``devmem = (phys, size)`` if given."""
    try:
        return open_uio(uio_name, sysroot)
    except DeviceNotFound:
        if devmem is None:
            raise
        return open_devmem(*devmem, sysroot=sysroot, name=uio_name)


def open_board(uio_name: str = "kvpath", udmabuf_name: str = "udmabuf_kvpath", sysroot: str | Path = "/",
               *, devmem: tuple[int, int] | None = None, kv_size: int | None = None) -> BoardTransport:
    """The board transport with the names the KV260 overlay gives (``kvpath``, ``udmabuf_kvpath``)."""
    registers = open_registers(uio_name, sysroot, devmem)
    try:
        memory = open_kv_buffer(udmabuf_name, kv_size, sysroot)
    except BaseException:
        registers.close()
        raise
    return BoardTransport(registers, memory)
