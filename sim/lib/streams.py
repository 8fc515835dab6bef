"""cocotb stream endpoints and the AXI4-Lite transport for the KV-path top-level testbench.

Streams are Amaranth ``lib.stream`` ports flattened to ``<name>__valid`` / ``__ready`` / ``__payload``.
Both endpoints sample at the rising edge, where the simulator still shows the values from before
the edge: a beat moved on that edge exactly when valid and ready were both high then.

``CocotbTransport`` gives the driver's ``read32``/``write32`` over cocotbext-axi's ``AxiLiteMaster``
through ``cocotb.task.resume``: driver code runs unchanged in a ``cocotb.task.bridge`` thread, blocking on each
bus access the way it blocks on PYNQ's MMIO.
"""

from __future__ import annotations

import random
from collections import deque

import cocotb
from cocotb.task import resume
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiResp


class BusError(RuntimeError):
    """The register block answered SLVERR/DECERR (on a board: a bus error)."""


class CocotbTransport:
    def __init__(self, axil):
        self.axil = axil
        self.read32 = resume(self._read)
        self.write32 = resume(self._write)

    async def _read(self, addr: int) -> int:
        r = await self.axil.read(addr, 4)
        if r.resp != AxiResp.OKAY:
            raise BusError(f"read 0x{addr:x}: {r.resp.name}")
        return int.from_bytes(r.data, "little")

    async def _write(self, addr: int, value: int) -> None:
        r = await self.axil.write(addr, int(value).to_bytes(4, "little"))
        if r.resp != AxiResp.OKAY:
            raise BusError(f"write 0x{addr:x}=0x{value:08x}: {r.resp.name}")


class StreamSource:
    """Offers queued payloads; between beats it pauses with probability ``pause`` per cycle. Once a
    beat is offered it stays offered until taken, as the stream rules ask of a source."""

    def __init__(self, dut, name: str, rng: random.Random, pause: float = 0.0):
        self.clk, self.rng, self.pause = dut.clk, rng, pause
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.queue: deque[int] = deque()
        self.sent = 0
        self.valid.value = 0
        cocotb.start_soon(self._run())

    def send(self, payloads) -> None:
        self.queue.extend(int(p) for p in payloads)

    @property
    def idle(self) -> bool:
        return not self.queue

    async def _run(self):
        offering = False
        while True:
            await RisingEdge(self.clk)
            if offering and int(self.ready.value):
                self.queue.popleft()
                self.sent += 1
                offering = False
            if self.queue and (offering or self.rng.random() >= self.pause):
                self.payload.value = self.queue[0]
                offering = True
            self.valid.value = int(offering)


class StreamRuleError(AssertionError):
    """A stream source broke the AXI-Stream rule: it withdrew VALID, or changed the payload, while
    a beat was offered and not yet taken."""


class StreamRules:
    """The AXI-Stream source rule, checked at every rising edge: once ``valid`` is high it stays
    high, with the same payload, until the edge where ``ready`` is high too. A violation raises
    ``StreamRuleError`` in the checking coroutine, which fails the cocotb test."""

    def __init__(self, name: str, valid, ready, payload):
        self.name, self.valid, self.ready, self.payload = name, valid, ready, payload
        self.offered: int | None = None  # payload of a beat offered but not yet taken
        self.edges = 0

    def check(self) -> None:
        """Call at each rising edge (values from before the edge)."""
        self.edges += 1
        valid = int(self.valid.value)
        payload = int(self.payload.value) if valid else None
        if self.offered is not None:
            if not valid:
                raise StreamRuleError(f"{self.name}: VALID withdrawn at edge {self.edges} before the beat was taken")
            if payload != self.offered:
                raise StreamRuleError(f"{self.name}: payload changed at edge {self.edges} while offered "
                                      f"({self.offered:#x} -> {payload:#x})")
        self.offered = payload if valid and not int(self.ready.value) else None


class StreamSink:
    """Collects payloads; ready is low with probability ``pause`` per cycle (1.0 = never ready),
    drawn from its own generator. Every beat it sees is checked against the stream rule."""

    def __init__(self, dut, name: str, rng: random.Random, pause: float = 0.0):
        self.clk, self.rng, self.pause = dut.clk, rng, pause
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.rules = StreamRules(name, self.valid, self.ready, self.payload)
        self.beats: list[int] = []
        self.ready.value = 0
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await RisingEdge(self.clk)
            self.rules.check()
            if int(self.valid.value) and int(self.ready.value):
                self.beats.append(int(self.payload.value))
            self.ready.value = int(self.rng.random() >= self.pause)


def field_of(layout, value: int, name: str) -> int:
    f = layout[name]
    return (value >> f.offset) & ((1 << f.width) - 1)


def pack_fields(layout, **values) -> int:
    word = 0
    for name, v in values.items():
        f = layout[name]
        word |= (int(v) & ((1 << f.width) - 1)) << f.offset
    return word


def pack_lanes(values, bits: int) -> int:
    """Lane ``k`` at bits ``[k*bits, (k+1)*bits)``."""
    word = 0
    for k, v in enumerate(values):
        word |= (int(v) & ((1 << bits) - 1)) << (k * bits)
    return word


def unpack_lanes(word: int, bits: int, n: int) -> list[int]:
    return [(word >> (k * bits)) & ((1 << bits) - 1) for k in range(n)]
