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

K/V streams (``send_kv`` / ``receive_kv``) need the build's stream path (docs/kv260.md, "The stream
path"): an AXI DMA in direct register mode whose registers are a second UIO device (``kvpath_dma``)
and the engine top built with its DMA bridge. ``open_board`` uses it when that device exists; without
it both calls raise ``NotImplementedError`` saying so (a build without the bridge ties the streams
off; K/V then travel through DDR only).

* **Staging.** The u-dma-buf is split: its first ``size - staging`` bytes are the KV memory the
  engine's regions live in (``mem_base``, ``mem_bytes``), the last ``staging`` bytes
  (``DMA_STAGING``, 16 MiB by default, ``BoardParams.dma_staging`` in the overlay) are the DMA's:
  the first half for MM2S (one token's framed K/V per transfer), the second for S2MM (one READ
  and its headers).
* **send_kv**: the beats are header-framed (``kvpath.hdl.top.stream_bridge.frame``: one header
  before each vector), written to the MM2S half, cleaned (``sync_for_device``), then MM2S_SA,
  MM2S_SA_MSB and MM2S_LENGTH (last: it starts the transfer); MM2S_DMASR is polled until Idle.
  More than one MM2S half of words goes as several transfers, split between segments.
* **receive_kv(0, n)**: S2MM is armed once ``receive_kv`` is called, which the driver does right
  after the CMD write that issued the READ: until then the engine's beats wait on TREADY (the
  bridge and the read port hold them; nothing is lost or reordered), so arming after the READ is
  safe and costs only the time of a few register writes. The half is cleaned
  (``sync_for_device``: no dirty line may later be written back over the DMA's data), S2MM_DA,
  S2MM_DA_MSB and S2MM_LENGTH (the buffer: ``2 n`` beats at most, enough for a header per beat)
  are written, S2MM_DMASR is polled until Idle (the DMA ends the transfer at the READ's TLAST),
  S2MM_LENGTH read back is the bytes written; those are invalidated (``sync_for_cpu``), read and
  unframed back to ``(tdata, tuser, tlast)``. Only read port 0 has a stream path.
* Errors: DMASR error bits raise ``DMAError`` naming the register and each bit (DMAIntErr,
  DMASlvErr, DMADecErr, ...); a channel that does not go Idle within ``timeout_s`` raises
  ``TimeoutError`` (the driver turns a READ that never answers into its own error). Either way
  the DMA is reset (MM2S_DMACR.Reset resets both channels) and restarted, so the next transfer
  starts clean.

Tested with regular files standing in for the devices (tests/boards/test_board_transport.py):
paths, offsets, byte order, bounds and the sync-file writes; and with a fake AXI DMA model over the
register file that moves the staged bytes through the engine model (the exact register writes, the
framing round trip, the error paths). Plumbing only: real device memory, caches, the DMA and the
interrupt can only be seen on the board (docs/kv260.md).
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path
from typing import Callable, Sequence

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
    "this board has no stream path from the processor to the engine's K/V streams: no UIO device "
    "for the AXI DMA (a build without the DMA bridge ties s_axis_kv off and leaves m_axis_kv* open, "
    "because the PS has no AXI-Stream port). Build with `kvpath build --board kv260` (the DMA bridge "
    "is its default) and load that app; without it, K/V travel through DDR: stage them with mem_write "
    "and read the engine's output with mem_read (docs/kv260.md, 'The stream path')")

# --- the AXI DMA in direct register mode (PG021, "Direct Register Mode Register Address Map") ----------
MM2S_DMACR, MM2S_DMASR, MM2S_SA, MM2S_SA_MSB, MM2S_LENGTH = 0x00, 0x04, 0x18, 0x1C, 0x28
S2MM_DMACR, S2MM_DMASR, S2MM_DA, S2MM_DA_MSB, S2MM_LENGTH = 0x30, 0x34, 0x48, 0x4C, 0x58
DMACR_RS, DMACR_RESET = 1 << 0, 1 << 2
DMASR_HALTED, DMASR_IDLE, DMASR_IOC_IRQ, DMASR_ERR_IRQ = 1 << 0, 1 << 1, 1 << 12, 1 << 14
DMASR_ERRORS = {4: ("DMAIntErr", "internal error: e.g. a zero LENGTH, or a packet longer than the S2MM buffer"),
                5: ("DMASlvErr", "SLVERR on the memory-map side"),
                6: ("DMADecErr", "DECERR on the memory-map side: no slave at the address"),
                8: ("SGIntErr", "scatter-gather internal error"), 9: ("SGSlvErr", "scatter-gather SLVERR"),
                10: ("SGDecErr", "scatter-gather DECERR")}
MAX_LENGTH = (1 << 26) - 1      # c_sg_length_width = 26 (boards/kv260/vivado_tcl.py DMA_FIXED)
DMA_STAGING = 16 << 20          # boards/kv260/params.py DMA_STAGING
DMA_ALIGN = 4096                # no realignment engine: buffers aligned (to far more than the data width)


class DMAError(RuntimeError):
    """The AXI DMA reported an error in DMASR (the message names the register and its bits)."""


def dmasr_errors(value: int) -> list[str]:
    """The error bits set in a DMASR value, each as 'Name (bit n: meaning)'."""
    return [f"{name} (bit {bit}: {meaning})" for bit, (name, meaning) in DMASR_ERRORS.items() if value >> bit & 1]


class AxiDma:
    """The two channels of an AXI DMA in direct register mode over its register window (anything
    with ``read32`` / ``write32``: a UIO mapping on the board)."""

    def __init__(self, registers, *, timeout_s: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 poll_s: float = 0.0):
        self.registers = registers
        self.timeout_s, self.clock, self.poll_s = timeout_s, clock, poll_s
        self._started = False

    def reset(self) -> None:
        """DMACR.Reset (resets both channels; the bit clears itself when the reset is done)."""
        r = self.registers
        r.write32(MM2S_DMACR, DMACR_RESET)
        self._until(lambda: not r.read32(MM2S_DMACR) & DMACR_RESET, "MM2S_DMACR.Reset to clear")
        self._started = False

    def start(self) -> None:
        """RS = 1 on both channels (no interrupts: the driver polls), and wait until neither is Halted."""
        r = self.registers
        for cr, sr, name in ((MM2S_DMACR, MM2S_DMASR, "MM2S"), (S2MM_DMACR, S2MM_DMASR, "S2MM")):
            r.write32(cr, DMACR_RS)
            self._until(lambda: not r.read32(sr) & DMASR_HALTED, f"{name}_DMASR.Halted to clear")
        self._started = True

    def _until(self, cond, what: str) -> None:
        deadline = self.clock() + self.timeout_s
        while not cond():
            if self.clock() > deadline:
                raise TimeoutError(f"AXI DMA: timed out after {self.timeout_s:g} s waiting for {what}")
            if self.poll_s:
                time.sleep(self.poll_s)

    def _run(self, name: str, addr_reg: int, length_reg: int, sr_reg: int, phys: int, nbytes: int) -> int:
        if not 0 < nbytes <= MAX_LENGTH:
            raise ValueError(f"{name}: {nbytes} bytes: a transfer is 1..{MAX_LENGTH} bytes")
        if phys % DMA_ALIGN:
            raise ValueError(f"{name}: buffer 0x{phys:x} is not {DMA_ALIGN}-byte aligned (no realignment engine)")
        if not self._started:
            self.start()
        r = self.registers
        r.write32(sr_reg, DMASR_IOC_IRQ | DMASR_ERR_IRQ)          # clear the sticky IRQ bits (write 1)
        r.write32(addr_reg, phys & 0xFFFF_FFFF)
        r.write32(addr_reg + 4, phys >> 32)
        r.write32(length_reg, nbytes)                             # last: starts the transfer
        status = 0

        def done() -> bool:
            nonlocal status
            status = r.read32(sr_reg)
            return bool(status & (DMASR_IDLE | DMASR_ERR_IRQ) or dmasr_errors(status))

        try:
            self._until(done, f"{name}_DMASR.Idle ({nbytes} bytes at 0x{phys:x})")
        except TimeoutError:
            self.recover()
            raise
        errors = dmasr_errors(status)
        if errors:
            self.recover()
            raise DMAError(f"{name}_DMASR = 0x{status:08x}: {', '.join(errors)} ({nbytes} bytes at 0x{phys:x}); "
                           "the DMA was reset")
        r.write32(sr_reg, DMASR_IOC_IRQ)
        return r.read32(length_reg)

    def mm2s(self, phys: int, nbytes: int) -> None:
        """Memory -> stream: ``nbytes`` from ``phys``; returns when MM2S is Idle again."""
        self._run("MM2S", MM2S_SA, MM2S_LENGTH, MM2S_DMASR, phys, nbytes)

    def s2mm(self, phys: int, nbytes: int) -> int:
        """Stream -> memory into a buffer of ``nbytes`` at ``phys``; returns the bytes written (the
        packet up to TLAST), read back from S2MM_LENGTH."""
        return self._run("S2MM", S2MM_DA, S2MM_LENGTH, S2MM_DMASR, phys, nbytes)

    def recover(self) -> None:
        """After an error or a timeout: reset and restart (best effort)."""
        try:
            self.reset()
            self.start()
        except TimeoutError:
            self._started = False


def config_lanes(read32) -> tuple[int, int]:
    """(quant_lanes, read_lanes) of the loaded bitstream, from its CFG_LANES register."""
    from kvpath.config import DEFAULT
    from kvpath.regmap import build_map

    reg = build_map(DEFAULT).register("CFG_LANES")
    value = read32(reg.offset)
    fields = {f.name: (value >> f.lsb) & ((1 << f.width) - 1) for f in reg.fields}
    return fields["quant_lanes"], fields["read_lanes"]


class BoardTransport:
    """The driver's ``Transport`` on a KV260: registers through UIO or /dev/mem, KV memory through
    u-dma-buf or pynq, K/V streams through the AXI DMA when there is one (``dma``). ``mem_*``
    addresses are physical, as the engine's masters see them."""

    def __init__(self, registers: MappedRegisters, memory, dma: AxiDma | None = None, *,
                 staging: int = DMA_STAGING, beat_bytes: tuple[int, int] | None = None):
        self.registers = registers
        self.memory = memory
        self.dma = dma
        self.mem_base = memory.physical_address
        self.mem_bytes = memory.size
        self._beats = beat_bytes
        if dma is not None:
            if staging % (2 * DMA_ALIGN) or not 0 < staging < memory.size:
                raise ValueError(f"DMA staging of {staging} bytes: a multiple of {2 * DMA_ALIGN} below the "
                                 f"u-dma-buf's {memory.size} bytes")
            # The KV memory, then the staging area: first half MM2S, second half S2MM.
            self.mem_bytes = memory.size - staging
            self.tx_offset, self.rx_offset = self.mem_bytes, self.mem_bytes + staging // 2
            self.staging_half = staging // 2
            if (self.mem_base + self.mem_bytes) % DMA_ALIGN:
                raise ValueError(f"the staging area at 0x{self.mem_base + self.mem_bytes:x} is not "
                                 f"{DMA_ALIGN}-byte aligned")

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

    # --- K/V streams through the AXI DMA -----------------------------------------------------------
    def beat_bytes(self) -> tuple[int, int]:
        """Bytes of a ``s_axis_kv`` and of a ``m_axis_kv`` beat (2 per lane), from CFG_LANES once."""
        if self._beats is None:
            quant, read = config_lanes(self.read32)
            if not quant or not read:
                raise RuntimeError(f"CFG_LANES reads quant_lanes={quant}, read_lanes={read}: is kvpath loaded?")
            self._beats = (2 * quant, 2 * read)
        return self._beats

    def send_kv(self, beats: Sequence) -> None:
        if self.dma is None:
            raise NotImplementedError(f"send_kv: {STREAMS_NOT_REACHABLE}")
        from kvpath.hdl.top.stream_bridge import frame, unpack_header

        width = self.beat_bytes()[0]
        words = frame(beats)
        per_transfer = min(self.staging_half, MAX_LENGTH) // width
        start = 0
        while start < len(words):
            end = start     # whole segments only: the bridge resynchronises on each transfer's TLAST
            while end < len(words) and end + 1 + unpack_header(words[end])[1] - start <= per_transfer:
                end += 1 + unpack_header(words[end])[1]
            if end == start:
                raise ValueError(f"send_kv: a segment of {unpack_header(words[start])[1]} beats does not fit "
                                 f"the {self.staging_half}-byte MM2S staging area")
            data = b"".join(int(w).to_bytes(width, "little") for w in words[start:end])
            self.memory.write(self.tx_offset, data)
            self.memory.sync_for_device(self.tx_offset, len(data))      # clean: the DMA reads DDR
            self.dma.mm2s(self.mem_base + self.tx_offset, len(data))
            start = end

    def receive_kv(self, port: int, n_beats: int) -> list:
        if self.dma is None:
            raise NotImplementedError(f"receive_kv: {STREAMS_NOT_REACHABLE}")
        if port != 0:
            raise NotImplementedError(f"receive_kv: read port {port} has no stream path on the board: only "
                                      "m_axis_kv0 goes through the DMA bridge (issue READs on port 0)")
        from kvpath.hdl.top.stream_bridge import FramingError, unframe

        width = self.beat_bytes()[1]
        room = min(self.staging_half, MAX_LENGTH) // width
        if n_beats + 1 > room:
            raise ValueError(f"receive_kv: a READ of {n_beats} beats does not fit the {self.staging_half}-byte "
                             "S2MM staging area (raise the staging size)")
        length = min(2 * n_beats, room) * width
        self.memory.sync_for_device(self.rx_offset, length)    # no dirty line may land on the DMA's data
        got = self.dma.s2mm(self.mem_base + self.rx_offset, length)
        if got % width or not 0 < got <= length:
            raise DMAError(f"S2MM_LENGTH reads {got} bytes after the transfer (buffer {length}, beats of {width})")
        self.memory.sync_for_cpu(self.rx_offset, got)          # invalidate before the CPU reads
        data = self.memory.read(self.rx_offset, got)
        words = [int.from_bytes(data[k:k + width], "little") for k in range(0, got, width)]
        try:
            beats = unframe(words)
        except FramingError as e:
            raise DMAError(f"receive_kv: the S2MM packet is not header-framed: {e}") from e
        if len(beats) != n_beats:
            raise DMAError(f"receive_kv: the READ's packet carried {len(beats)} beats, {n_beats} were expected")
        return beats

    def close(self) -> None:
        self.registers.close()
        if self.dma is not None:
            self.dma.registers.close()
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
               *, devmem: tuple[int, int] | None = None, kv_size: int | None = None,
               dma: bool | None = None, dma_uio_name: str = "kvpath_dma", staging: int = DMA_STAGING,
               timeout_s: float = 2.0) -> BoardTransport:
    """The board transport with the names the KV260 overlay gives (``kvpath``, ``udmabuf_kvpath``,
    ``kvpath_dma``). ``dma=None`` uses the AXI DMA when its UIO device exists; ``True`` requires it;
    ``False`` leaves the streams unreachable."""
    registers = open_registers(uio_name, sysroot, devmem)
    dma_regs = memory = None
    try:
        if dma is not False:
            try:
                dma_regs = open_uio(dma_uio_name, sysroot)
            except DeviceNotFound:
                if dma:
                    raise
        memory = open_kv_buffer(udmabuf_name, None if kv_size is None else kv_size + (staging if dma_regs else 0),
                                sysroot)
        engine = None
        if dma_regs is not None:
            engine = AxiDma(dma_regs, timeout_s=timeout_s)
            engine.reset()
            engine.start()
        return BoardTransport(registers, memory, engine, staging=staging)
    except BaseException:
        registers.close()
        if dma_regs is not None:
            dma_regs.close()
        if memory is not None:
            memory.close()
        raise
