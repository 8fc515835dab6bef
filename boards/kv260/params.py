"""Build parameters of the KV260 board flow, validated once so every generator can trust them.

``BoardParams`` is the single place where the number of memory masters, the PL clock, the register
window and the KV memory region are chosen; the TCL, the overlay and the app folder all read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30

# HPM0_FPD's low aperture on ZynqMP (UG1085, "PL AXI interfaces" address map): 256 MB at
# 0xA000_0000. Keeping the window there keeps the overlay's 32-bit-addressable `reg` simple.
HPM0_LOW_BASE = 0xA000_0000
HPM0_LOW_SIZE = 0x1000_0000

# The PS-to-PL AXI ports are specified up to 333 MHz on -1/-2 parts (DS925, "PS-PL AXI interface"
# fmax). This is a sanity bound for typos, not a promise the design closes timing there.
MAX_PL_CLK_MHZ = 333.0
MIN_PL_CLK_MHZ = 10.0

APP_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")

# The DMA staging area at the end of the u-dma-buf (kvpath.driver.board.DMA_STAGING says the same):
# half for MM2S (a token's header-framed K/V), half for S2MM (a READ with its headers).
DMA_STAGING = 16 * MIB


# The files of a Kria app folder (/lib/firmware/xilinx/<app>/), as dfx-mgr expects them.
APP_FILES = ("{app}.bit.bin", "{app}.dtbo", "shell.json")


def app_files(app: str) -> list[str]:
    """File names a complete Kria app folder holds."""
    return [f.format(app=app) for f in APP_FILES]


class ParamError(ValueError):
    """A build parameter is out of range; the message names the parameter and the allowed range."""


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class BoardParams:
    """What the board build is parameterised by.

    n_masters     AXI4 masters of kvpath_axi_top (1..4); master i goes to S_AXI_HP{i}_FPD.
    pl_clk_mhz    PL clock requested from the PS (pl_clk0); the PS PLLs round it.
    reg_base      register window on M_AXI_HPM0_FPD (default 0xA000_0000).
    reg_size      register window size in bytes (power of two, >= 4 KiB so UIO can map it).
    kv_size       KV memory region in bytes (a u-dma-buf, see overlay.py for why not reserved-memory).
    hpm0_width    data width of M_AXI_HPM0_FPD: 32 (no width converter in front of the 32-bit
                  AXI4-Lite slave) or 128 (the boot firmware's AFI setting, see overlay.py).
    app           Kria app name: folder and file names on the board.
    udmabuf_name  device name of the KV buffer: /dev/<name>, /sys/class/u-dma-buf/<name>.
    uio_name      name the UIO device reports (the overlay node's name).
    dma_bridge    the stream path from the processor (docs/kv260.md "The stream path"): an AXI DMA
                  in the block design, the engine top built with its DMA bridge. ``kvpath build``
                  turns it on; the default here keeps the plain top (streams tied off).
    dma_base      the AXI DMA's register window on M_AXI_HPM0_FPD (default 0xA001_0000) ...
    dma_size      ... and its size (64 KiB: the segment Vivado gives the AXI DMA's AXI4-Lite).
    dma_uio_name  name of the DMA's UIO node.
    dma_staging   bytes at the end of the u-dma-buf, after the KV region, where the driver stages
                  the DMA's transfers (first half MM2S, second half S2MM); the buffer is
                  ``kv_size + dma_staging`` bytes with the bridge, ``kv_size`` without.
    """

    n_masters: int = 1
    pl_clk_mhz: float = 250.0
    reg_base: int = HPM0_LOW_BASE
    reg_size: int = 64 * KIB
    kv_size: int = 512 * MIB
    hpm0_width: int = 32
    app: str = "kvpath"
    udmabuf_name: str = "udmabuf_kvpath"
    uio_name: str = "kvpath"
    dma_bridge: bool = False
    dma_base: int = HPM0_LOW_BASE + 0x1_0000
    dma_size: int = 64 * KIB
    dma_uio_name: str = "kvpath_dma"
    dma_staging: int = DMA_STAGING

    def __post_init__(self):
        if not isinstance(self.n_masters, int) or not 1 <= self.n_masters <= 4:
            raise ParamError(f"n_masters={self.n_masters!r}: must be an integer 1..4 "
                             "(one S_AXI_HP0..HP3_FPD port per master)")
        if not MIN_PL_CLK_MHZ <= float(self.pl_clk_mhz) <= MAX_PL_CLK_MHZ:
            raise ParamError(f"pl_clk_mhz={self.pl_clk_mhz!r}: must be within "
                             f"{MIN_PL_CLK_MHZ:g}..{MAX_PL_CLK_MHZ:g} MHz")
        if not _pow2(self.reg_size) or self.reg_size < 4 * KIB:
            raise ParamError(f"reg_size=0x{self.reg_size:x}: must be a power of two >= 4 KiB "
                             "(UIO maps whole pages; Vivado address segments are powers of two)")
        if self.reg_base % self.reg_size:
            raise ParamError(f"reg_base=0x{self.reg_base:x} is not aligned to reg_size=0x{self.reg_size:x}")
        if not (HPM0_LOW_BASE <= self.reg_base
                and self.reg_base + self.reg_size <= HPM0_LOW_BASE + HPM0_LOW_SIZE):
            raise ParamError(f"register window 0x{self.reg_base:x}+0x{self.reg_size:x} must lie in "
                             f"M_AXI_HPM0_FPD's low aperture 0x{HPM0_LOW_BASE:x}.."
                             f"0x{HPM0_LOW_BASE + HPM0_LOW_SIZE - 1:x}")
        if self.kv_size < 4 * KIB or self.kv_size % (4 * KIB) or self.kv_size > 2 * GIB:
            raise ParamError(f"kv_size={self.kv_size}: must be a multiple of 4 KiB between 4 KiB and "
                             "2 GiB (it is one contiguous CMA allocation)")
        if self.hpm0_width not in (32, 128):
            raise ParamError(f"hpm0_width={self.hpm0_width!r}: must be 32 or 128")
        if not isinstance(self.dma_bridge, bool):
            raise ParamError(f"dma_bridge={self.dma_bridge!r}: must be True or False")
        if self.dma_bridge:
            if not _pow2(self.dma_size) or self.dma_size < 64 * KIB:
                raise ParamError(f"dma_size=0x{self.dma_size:x}: must be a power of two >= 64 KiB "
                                 "(the AXI DMA's register segment in Vivado is 64 KiB)")
            if self.dma_base % self.dma_size:
                raise ParamError(f"dma_base=0x{self.dma_base:x} is not aligned to dma_size=0x{self.dma_size:x}")
            if not (HPM0_LOW_BASE <= self.dma_base
                    and self.dma_base + self.dma_size <= HPM0_LOW_BASE + HPM0_LOW_SIZE):
                raise ParamError(f"DMA register window 0x{self.dma_base:x}+0x{self.dma_size:x} must lie in "
                                 f"M_AXI_HPM0_FPD's low aperture 0x{HPM0_LOW_BASE:x}.."
                                 f"0x{HPM0_LOW_BASE + HPM0_LOW_SIZE - 1:x}")
            if self.dma_base < self.reg_base + self.reg_size and self.reg_base < self.dma_base + self.dma_size:
                raise ParamError(f"DMA register window 0x{self.dma_base:x}+0x{self.dma_size:x} overlaps the "
                                 f"register window 0x{self.reg_base:x}+0x{self.reg_size:x}")
            if self.dma_staging < 128 * KIB or self.dma_staging % (8 * KIB):
                raise ParamError(f"dma_staging={self.dma_staging}: must be a multiple of 8 KiB, at least "
                                 "128 KiB (two halves of whole pages)")
            if self.kv_size + self.dma_staging > 2 * GIB:
                raise ParamError(f"kv_size + dma_staging = {self.kv_size + self.dma_staging}: the u-dma-buf "
                                 "holds both and is at most 2 GiB")
        for field, value in (("app", self.app), ("udmabuf_name", self.udmabuf_name),
                             ("uio_name", self.uio_name), ("dma_uio_name", self.dma_uio_name)):
            if not APP_NAME.match(value):
                raise ParamError(f"{field}={value!r}: use 1..31 characters [a-z0-9_-], starting "
                                 "with a letter (it becomes a file, device or node name)")

    @property
    def pl_clk_hz(self) -> int:
        return int(round(float(self.pl_clk_mhz) * 1_000_000))

    @property
    def hp_ports(self) -> list[int]:
        """HP port index of each master, in master order."""
        return list(range(self.n_masters))

    @property
    def dma_hp(self) -> int | None:
        """HP port of the AXI DMA's memory masters: the first one no engine master uses, or HP3
        shared with m_axi3 (through the DMA's SmartConnect) when all four are taken."""
        if not self.dma_bridge:
            return None
        return min(self.n_masters, 3)

    @property
    def udmabuf_size(self) -> int:
        """The u-dma-buf: the KV region, then (with the bridge) the DMA staging area."""
        return self.kv_size + (self.dma_staging if self.dma_bridge else 0)
