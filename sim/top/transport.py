"""The driver's ``sim`` backend: a ``Transport`` (``kvpath.driver.transport``) over the simulated
``KVCacheTop`` in cocotb.

The driver is synchronous; cocotb is not. The driver runs in a ``cocotb.bridge`` thread and every
transport call is a ``cocotb.resume`` wrapper around a coroutine, so the simulation advances only
while the driver waits on it, and the code under test on the control side is the very driver that
runs on the model and on the board. Registers go through cocotbext-axi's AxiLiteMaster, DDR is
cocotbext-axi's RAM (with error injection, ``sim/lib/axi_ram.py``) on every master, and the K/V
streams are ``sim/lib/streams.py`` sources and sinks, each channel with its own pause generator.

The RAM holds ``ram_bytes`` (a power of two) and answers every address modulo its size, so the
driver's DDR window ``[mem_base, mem_base + mem_bytes)`` maps onto it when ``mem_base`` is a
multiple of ``ram_bytes``.
"""

from __future__ import annotations

import logging

from cocotb.task import resume
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiReadBus, AxiResp

from kvpath.config import KVPathConfig
from kvpath.hdl.ddr.engine import kv_layout
from kvpath.hdl.ddr.read_port import out_layout
from kvpath.sim.lib.axi_ram import ErrorMap, ErrorRamRead, ErrorRamWrite
from kvpath.sim.lib.streams import BusError, StreamSink, StreamSource, pause_generator

# A wait that ends nowhere is a hang, not a slow test: every wait has a bound in clock cycles.
WAIT_CYCLES = 2_000_000


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class SimTransport:
    def __init__(self, dut, config: KVPathConfig, *, mem_base: int, mem_bytes: int, rng, pauses: str = "mixed",
                 period_ns: int = 4, stall_cycles: int = 1 << 16):
        self.dut, self.config, self.rng, self.pauses = dut, config, rng, pauses
        self.ram_bytes = _pow2_at_least(mem_bytes)
        if mem_base % self.ram_bytes:
            raise ValueError(f"mem_base 0x{mem_base:x} must be a multiple of the RAM size 0x{self.ram_bytes:x}")
        self.mem_base, self.mem_bytes = mem_base, mem_bytes
        self.errors = ErrorMap(16)
        self._kv = kv_layout(config)
        self._out = out_layout(config)
        self.cycles = 0
        self._started = False
        self.period_ns = period_ns
        # A stream that has not moved for this long is stuck (a refused READ never answers); the
        # hardware would wait for good, the driver needs an error it can explain.
        self.stall_cycles = stall_cycles
        self._clock = Clock(dut.clk, period_ns, unit="ns")
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        bus = AxiBus.from_prefix(dut, "m_axi0_")
        self.ram = ErrorRamWrite(bus.write, dut.clk, dut.rst, self.ram_bytes, self.errors)
        self.read_rams = [ErrorRamRead(bus.read, dut.clk, dut.rst, self.ram_bytes, self.errors, mem=self.ram.mem)]
        for n in range(1, config.read_ports):
            self.read_rams.append(ErrorRamRead(AxiReadBus.from_prefix(dut, f"m_axi{n}_"), dut.clk, dut.rst,
                                               self.ram_bytes, self.errors, mem=self.ram.mem))
        for interface in (self.axil.write_if, self.axil.read_if, self.ram, *self.read_rams):
            interface.log.setLevel(logging.WARNING)
        channels = [self.ram.aw_channel, self.ram.w_channel, self.ram.b_channel]
        for r in self.read_rams:
            channels += [r.ar_channel, r.r_channel]
        for ch in channels:
            ch.set_pause_generator(pause_generator(rng, pauses))
        self.kv = StreamSource(dut, "s_axis_kv", pause_generator(rng, pauses))
        self.cmd = StreamSource(dut, "s_axis_cmd", pause_generator(rng, pauses))
        self.outs = [StreamSink(dut, f"m_axis_kv{p}", pause_generator(rng, pauses))
                     for p in range(config.read_ports)]
        # The driver's blocking calls.
        self.read32 = resume(self._read32)
        self.write32 = resume(self._write32)
        self.send_kv = resume(self._send_kv)
        self.send_cmd = resume(self._send_cmd)
        self.receive_kv = resume(self._receive_kv)
        self.idle = resume(self._idle)

    async def start(self):
        """Clock, then a reset of a few cycles (the DUT's synchronous active-high ``rst``)."""
        if not self._started:
            import cocotb
            cocotb.start_soon(self._clock.start())
            self._started = True
        self.dut.rst.value = 1
        self.dut.memset__valid.value = 0
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    # --- registers
    async def _read32(self, addr: int) -> int:
        r = await self.axil.read(addr, 4)
        if r.resp != AxiResp.OKAY:
            raise BusError(f"read 0x{addr:x}: {r.resp.name}")
        return int.from_bytes(r.data, "little")

    async def _write32(self, addr: int, value: int) -> None:
        r = await self.axil.write(addr, int(value).to_bytes(4, "little"))
        if r.resp != AxiResp.OKAY:
            raise BusError(f"write 0x{addr:x}=0x{value:08x}: {r.resp.name}")

    # --- streams
    async def _wait(self, done, what: str, progress=None):
        """Until ``done()``; a ``TimeoutError`` after ``WAIT_CYCLES``, or as soon as ``progress()``
        (a count that grows while the hardware moves) has not changed for ``stall_cycles``."""
        last, still = progress() if progress else None, 0
        for _ in range(WAIT_CYCLES // 8):
            if done():
                return
            await ClockCycles(self.dut.clk, 8)
            if progress is not None:
                now = progress()
                still = still + 8 if now == last else 0
                last = now
                if still >= self.stall_cycles:
                    raise TimeoutError(f"{what}: no progress for {self.stall_cycles} cycles")
        raise TimeoutError(f"{what}: not done after {WAIT_CYCLES} cycles")

    async def _send_kv(self, beats) -> None:
        data_bits = self._kv["user"].offset
        user_bits = self._kv["last"].offset - data_bits
        payloads = []
        for tdata, tuser, tlast in beats:
            if tdata >> data_bits or tuser >> user_bits:
                raise ValueError(f"s_axis_kv beat wider than TDATA ({data_bits} bits) / TUSER ({user_bits} bits)")
            payloads.append(tdata | tuser << data_bits | int(bool(tlast)) << (data_bits + user_bits))
        self.kv.send(payloads)
        await self._wait(lambda: self.kv.idle, f"s_axis_kv: {len(payloads)} beats accepted",
                         progress=lambda: self.kv.sent)

    async def _send_cmd(self, words) -> None:
        self.cmd.send(words)
        await self._wait(lambda: self.cmd.idle, f"s_axis_cmd: {len(words)} commands accepted")

    async def _receive_kv(self, port: int, n_beats: int):
        sink = self.outs[port]
        await self._wait(lambda: len(sink.items) >= n_beats, f"m_axis_kv{port}: {n_beats} beats",
                         progress=lambda: len(sink.items))
        taken, sink.items[:n_beats] = sink.items[:n_beats], []
        data_bits, last_at = self._out["user"].offset, self._out["last"].offset
        return [(w & ((1 << data_bits) - 1), (w >> data_bits) & ((1 << (last_at - data_bits)) - 1),
                 bool(w >> last_at & 1)) for w in taken]

    async def _idle(self, cycles: int = 16) -> None:
        await ClockCycles(self.dut.clk, cycles)

    def pending(self, port: int) -> int:
        """Beats received on ``port`` that no ``receive_kv`` took (a READ that gave too many)."""
        return len(self.outs[port].items)

    # --- DDR as the processor sees it (the RAM model's memory, no bus traffic)
    def _offset(self, addr: int, n: int) -> int:
        if not (self.mem_base <= addr and addr + n <= self.mem_base + self.mem_bytes):
            raise ValueError(f"[0x{addr:x}, +{n}) is outside the DDR window [0x{self.mem_base:x}, "
                             f"+{self.mem_bytes})")
        return addr - self.mem_base

    def mem_write(self, addr: int, data: bytes) -> None:
        self.ram.write(self._offset(addr, len(data)), bytes(data))

    def mem_read(self, addr: int, n: int) -> bytes:
        return bytes(self.ram.read(self._offset(addr, n), n))

    def inject_ddr_error(self, addr: int, nbytes: int, resp: int = 2) -> None:
        """SLVERR (2) or DECERR (3) for every access touching [addr, addr + nbytes) (the same call as
        the engine model's)."""
        self.errors.add(self._offset(addr, nbytes), nbytes, resp)

    @property
    def irq(self) -> bool:
        return bool(int(self.dut.irq.value))
