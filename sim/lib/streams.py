"""cocotb stream endpoints and the AXI4-Lite transport for the KV-path top-level testbench.

Streams are Amaranth ``lib.stream`` ports flattened to ``<name>__valid`` / ``__ready`` / ``__payload``.
Both endpoints sample at the rising edge, where the simulator still shows the values from before
the edge: a beat moved on that edge exactly when valid and ready were both high then.

``CocotbTransport`` gives the driver's ``read32``/``write32`` over cocotbext-axi's ``AxiLiteMaster``
through ``cocotb.task.resume``: driver code runs unchanged in a ``cocotb.task.bridge`` thread, blocking on each
bus access the way it blocks on PYNQ's MMIO.
"""

from __future__ import annotations

import itertools
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


# --- pause patterns: each channel of a testbench gets a generator of its own (1 = pause this cycle)

PATTERNS = ([0], [1, 0], [0, 1, 1], [0, 0, 0, 1], [1, 1, 1, 0, 0, 0, 0], [0] * 13 + [1] * 5, [1, 0, 0])


def random_pauses(rng: random.Random, p: float):
    """Pause with probability ``p`` each cycle, in bursts as often as singly."""
    while True:
        if rng.random() < p:
            for _ in range(rng.choice((1, 1, 2, 5))):
                yield 1
        else:
            yield 0


def pause_generator(rng: random.Random, mode: str):
    """``none``: never pause; ``cycle``: a fixed pattern (itertools.cycle), chosen by ``rng``;
    ``random``: random bursts with a channel-specific rate; ``mixed``: one of the two."""
    if mode == "none":
        return itertools.repeat(0)
    if mode == "mixed":
        mode = rng.choice(("cycle", "random"))
    if mode == "cycle":
        return itertools.cycle(rng.choice(PATTERNS))
    if mode == "random":
        return random_pauses(rng, rng.choice((0.1, 0.3, 0.5)))
    raise ValueError(f"unknown pause mode {mode!r}")


def bernoulli(rng: random.Random, p: float):
    """Pause with probability ``p`` each cycle, independently."""
    while True:
        yield int(rng.random() < p)


# --- stream endpoints ------------------------------------------------------------------------------

class StreamRuleError(AssertionError):
    """A stream source broke the AXI-Stream rule: it withdrew VALID, or changed the payload, while
    a beat was offered and not yet taken."""


class StreamRules:
    """The VALID/READY source rule of one channel (AXI4, AXI4-Stream, ``lib.stream``), checked at
    every rising edge: once VALID is high it stays high, with the same payload, until the edge where
    READY is high too; VALID and (under VALID) READY must be 0 or 1. ``payload`` is one signal or a
    dict of them (an AXI channel's fields)."""

    def __init__(self, name: str, valid, ready, payload):
        self.name, self.valid, self.ready = name, valid, ready
        self.signals = payload if isinstance(payload, dict) else {"payload": payload}
        self.pending: dict | None = None  # the payload of a beat offered but not yet taken

    def reset(self) -> None:
        self.pending = None

    def step(self, cycle: int, keep: bool = False) -> tuple[list[str], dict | None, bool]:
        """One rising edge (values from before it): ``(violations, payload, taken)``; the payload is
        read only when it matters (a beat waiting or waited for, or ``keep``)."""
        name, problems = self.name, []
        v = self.valid.value
        if not v.is_resolvable:
            return [f"{name}: VALID is {v} at cycle {cycle}"], None, False
        if not v:
            if self.pending is not None:
                problems.append(f"{name}: VALID withdrawn at cycle {cycle} before the beat was taken")
                self.pending = None
            return problems, None, False
        rdy = self.ready.value
        if not rdy.is_resolvable:
            problems.append(f"{name}: READY is {rdy} under VALID at cycle {cycle}")
            rdy = 0
        payload = None
        if self.pending is not None or not rdy or keep:
            payload = {k: int(sig.value) for k, sig in self.signals.items()}
            if self.pending is not None and payload != self.pending:
                problems.append(f"{name}: payload changed at cycle {cycle} while offered "
                                f"({self.pending} -> {payload})")
        if rdy:
            self.pending = None
            return problems, payload, True
        self.pending = payload
        return problems, None, False


class StreamSource:
    """Offers queued payloads on ``<name>__valid/__ready/__payload``; before each new beat it
    waits while its pause generator says so. An offered beat stays offered until taken, as the
    stream rules ask of a source. Idle while ``rst`` is high."""

    def __init__(self, dut, name: str, pauses=None):
        self.clk, self.rst = dut.clk, dut.rst
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.pauses = pauses or itertools.repeat(0)
        self.queue: deque[int] = deque()
        self.sent = 0
        self.enabled = True
        self.valid.value = 0
        self._task = cocotb.start_soon(self._run())

    def send(self, payloads) -> None:
        self.queue.extend(int(p) for p in payloads)

    @property
    def idle(self) -> bool:
        return not self.queue

    empty = idle

    def stop(self):
        self._task.cancel()

    async def _run(self):
        offering = False
        valid, ready, payload, queue, rst = self.valid, self.ready, self.payload, self.queue, self.rst
        while True:
            await RisingEdge(self.clk)
            if rst.value:
                continue
            if offering and ready.value:
                queue.popleft()
                self.sent += 1
                offering = False
            if not offering and queue and self.enabled and not next(self.pauses):
                payload.value = queue[0]
                offering = True
                valid.value = 1
            elif not offering:
                valid.value = 0


class StreamSink:
    """Collects payloads (ints); READY follows its pause generator. Every beat it sees is held to
    the stream rule (``StreamRules``)."""

    def __init__(self, dut, name: str, pauses=None):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.rules = StreamRules(name, self.valid, self.ready, self.payload)
        self.pauses = pauses or itertools.repeat(0)
        self.items: list[int] = []
        self.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    @property
    def beats(self) -> list[int]:
        return self.items

    def stop(self):
        self._task.cancel()

    async def _run(self):
        ready, items, cycle = self.ready, self.items, 0
        while True:
            await RisingEdge(self.clk)
            cycle += 1
            problems, beat, taken = self.rules.step(cycle, keep=True)
            if problems:
                raise StreamRuleError("; ".join(problems))
            if taken:
                items.append(beat["payload"])
            ready.value = 0 if next(self.pauses) else 1


class HandshakeChecker:
    """Holds many channels to ``StreamRules`` every cycle (after the first reset; a reset forgets
    pending beats) and records every violation; also counts handshakes and keeps the payloads of
    the channels asked for (``keep``)."""

    def __init__(self, dut, reset):
        self.clk, self.reset = dut.clk, reset
        self.rules: list[StreamRules] = []
        self.violations: list[str] = []
        self.count: dict[str, int] = {}
        self.kept: dict[str, list] = {}
        self.cycle = 0
        self._task = cocotb.start_soon(self._run())

    def add(self, name: str, valid, ready, payload_signals: dict, keep: bool = False):
        self.rules.append(StreamRules(name, valid, ready, payload_signals))
        self.count[name] = 0
        if keep:
            self.kept[name] = []

    def add_stream(self, dut, name: str, keep: bool = False):
        self.add(name, getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__ready"),
                 {"payload": getattr(dut, f"{name}__payload")}, keep)

    def add_axi(self, dut, prefix: str, channel: str, fields: tuple, keep: bool = False):
        sig = {f: getattr(dut, f"{prefix}_{channel}{f}") for f in fields}
        self.add(channel, getattr(dut, f"{prefix}_{channel}valid"), getattr(dut, f"{prefix}_{channel}ready"),
                 sig, keep)

    def assert_clean(self, ctx: str = ""):
        assert not self.violations, f"{ctx}handshake violations: {self.violations[:5]}"

    async def _run(self):
        clk, reset = self.clk, self.reset
        while not (reset.value.is_resolvable and reset.value):  # nothing is defined before reset
            await RisingEdge(clk)
        while True:
            await RisingEdge(clk)
            self.cycle += 1
            if reset.value:
                for rule in self.rules:
                    rule.reset()
                continue
            for rule in self.rules:
                problems, payload, taken = rule.step(self.cycle, keep=rule.name in self.kept)
                self.violations += problems
                if taken:
                    self.count[rule.name] += 1
                    if rule.name in self.kept:
                        self.kept[rule.name].append(payload)


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


def unpack_fields(layout, word: int) -> dict:
    """``{field: value}`` of a packed ``lib.data`` struct: the inverse of ``pack_fields``."""
    return {name: (word >> f.offset) & ((1 << f.width) - 1) for name, f in layout}
