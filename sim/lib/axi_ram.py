"""AXI RAM models for the testbenches: cocotbext-axi's RAM halves, which assert the AXI rules
(no burst across 4 KiB, WLAST on the burst's last beat), answering SLVERR or DECERR for chosen
address ranges, so error paths can be driven on purpose."""

from __future__ import annotations

import logging

from cocotbext.axi import AxiResp
from cocotbext.axi.axi_ram import AxiRamRead, AxiRamWrite


class ErrorMap:
    """Address units of ``unit`` bytes (a multiple of the bus width, so a bus beat is all in or
    all out) that answer an error response."""

    def __init__(self, unit: int = 16):
        self.unit = unit
        self.regions: dict[int, int] = {}   # unit index -> AxiResp value

    def add(self, start: int, nbytes: int, resp: int):
        for u in range(start // self.unit, (start + nbytes - 1) // self.unit + 1):
            self.regions[u] = resp

    def scatter(self, rng, size: int, resp_choices=(2, 3)):
        """A dozen 256-byte regions and a few hundred single units (so a command's only failing
        beat is often its first or last)."""
        for _ in range(12):
            self.add(rng.randrange(size // 256) * 256, 256, rng.choice(resp_choices))
        for _ in range(400):
            self.add(rng.randrange(size // self.unit) * self.unit, self.unit, rng.choice(resp_choices))

    def worst(self, start: int, end: int) -> int:
        """Largest response over the bytes [start, end)."""
        if end <= start or not self.regions:
            return 0
        return max((self.regions.get(u, 0) for u in range(start // self.unit, (end - 1) // self.unit + 1)),
                   default=0)

    def blocked(self, addr: int) -> bool:
        return addr // self.unit in self.regions


def _quiet(*interfaces):
    for i in interfaces:
        i.log.setLevel(logging.WARNING)


class ErrorRamWrite(AxiRamWrite):
    """cocotbext-axi's AxiRamWrite (which asserts that no burst crosses 4 KiB and that WLAST sits
    on the burst's last beat) whose bursts that touch an error granule answer that error, and
    whose writes into error granules are dropped."""

    def __init__(self, bus, clock, reset, size, errors: ErrorMap, mem=None):
        super().__init__(bus, clock, reset, size=size, mem=mem)
        self.errors = errors
        self._burst_resp = 0
        recv, send = self.aw_channel.recv, self.b_channel.send

        async def aw_recv():
            aw = await recv()
            start = int(aw.awaddr) % self.size
            self._burst_resp = self.errors.worst(start, start + ((int(aw.awlen) + 1) << int(aw.awsize)))
            return aw

        async def b_send(b):
            if self._burst_resp:
                b.bresp = AxiResp(self._burst_resp)
            await send(b)

        self.aw_channel.recv, self.b_channel.send = aw_recv, b_send
        _quiet(self)

    async def _write(self, address, data):
        address %= self.size
        for k, byte in enumerate(data):
            if not self.errors.blocked(address + k):
                self.mem[address + k] = byte


class ErrorRamRead(AxiRamRead):
    """AxiRamRead whose beats inside an error granule answer that error (with the memory's data)."""

    def __init__(self, bus, clock, reset, size, errors: ErrorMap, mem=None):
        super().__init__(bus, clock, reset, size=size, mem=mem)
        self.errors = errors
        self._beat_resp = 0
        send = self.r_channel.send

        async def r_send(r):
            if self._beat_resp:
                r.rresp = AxiResp(self._beat_resp)
            await send(r)

        self.r_channel.send = r_send
        _quiet(self)

    async def _read(self, address, length):
        address %= self.size
        self._beat_resp = self.errors.worst(address, address + length)
        return self.read(address, length)
