"""cocotb tests of BytePacker / ByteUnpacker against a byte-level Python model.

Environment: ``KVPATH_DDR_REPACK`` = ``pack:<in>:<out>`` or ``unpack:<in>:<out>``, ``KVPATH_DDR_SEED``,
``KVPATH_DDR_GROUPS`` (groups in the random test).
"""

from __future__ import annotations

import itertools
import math
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from kvpath.sim.lib.streams import HandshakeChecker, StreamSink, StreamSource, pause_generator


class TB:
    def __init__(self, dut):
        self.dut = dut
        kind, n_in, n_out = os.environ["KVPATH_DDR_REPACK"].split(":")
        self.kind, self.n_in, self.n_out = kind, int(n_in), int(n_out)
        self.seed = int(os.environ.get("KVPATH_DDR_SEED", "1"))
        self.rng = random.Random(f"{self.seed}-{kind}-{n_in}-{n_out}")
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.check = HandshakeChecker(dut, dut.rst)
        self.check.add_stream(dut, "i")
        self.check.add_stream(dut, "o")
        self.src = self.sink = None
        self.expected: list[tuple[bytes, int]] = []
        self.sent_items = 0

    def ctx(self, what: str) -> str:
        return f"seed={self.seed} {self.kind} {self.n_in}->{self.n_out}: {what}"

    async def reset(self, pauses: str = "none"):
        for s in (self.src, self.sink):
            if s is not None:
                s.stop()
        self.dut.rst.value = 1
        self.src = StreamSource(self.dut, "i", pause_generator(self.rng, pauses))
        self.sink = StreamSink(self.dut, "o", pause_generator(self.rng, pauses))
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        self.expected.clear()
        self.sent_items = 0

    def send_group(self, items: int):
        """One group of ``items`` input items (chunks for the packer, beats for the unpacker)."""
        data = self.rng.randbytes(items * self.n_in)
        self.src.send([int.from_bytes(data[k * self.n_in:(k + 1) * self.n_in], "little") | (int(k == items - 1) << 8 * self.n_in)
                       for k in range(items)])
        self.sent_items += items
        n = self.n_out
        if self.kind == "pack":
            beats = [data[k:k + n] for k in range(0, len(data), n)]
            beats[-1] += bytes(n - len(beats[-1]))
        else:
            beats = [data[k:k + n] for k in range(0, len(data) - n + 1, n)]
        for j, b in enumerate(beats):
            self.expected.append((b, int(j == len(beats) - 1)))

    def got(self):
        mask = (1 << 8 * self.n_out) - 1
        return [((x & mask).to_bytes(self.n_out, "little"), x >> 8 * self.n_out) for x in self.sink.items]

    async def finish(self, limit: int | None = None):
        limit = limit or 100 * (len(self.expected) + self.sent_items) + 200
        for _ in range(limit):
            if len(self.sink.items) >= len(self.expected) and self.src.empty:
                break
            await RisingEdge(self.dut.clk)
        await ClockCycles(self.dut.clk, 10)
        got = self.got()
        for k, (g, e) in enumerate(zip(got, self.expected)):
            assert g == e, self.ctx(f"item {k}: got {g[0].hex()} last={g[1]}, expected {e[0].hex()} last={e[1]}")
        assert len(got) == len(self.expected), self.ctx(f"{len(got)} items out, expected {len(self.expected)}")
        self.check.assert_clean(self.ctx(""))


def group_sizes(tb) -> range:
    """Group sizes (in input items) covering the gearbox's phase cycle, which repeats every
    out / gcd(in, out) input items, plus two."""
    return range(1, tb.n_out // math.gcd(tb.n_in, tb.n_out) + 3)


@cocotb.test()
async def exhaustive_small(dut):
    """Every group size up to two periods of the phase cycle, each followed by every other size
    (so every group starts at every phase the previous group can leave), with and without pauses."""
    tb = TB(dut)
    for pauses in ("none", "mixed"):
        await tb.reset(pauses)
        sizes = list(group_sizes(tb))
        for a in sizes:
            for b in sizes:
                tb.send_group(a)
                tb.send_group(b)
        await tb.finish()


@cocotb.test()
async def random_groups(dut):
    """Random group sizes with random bubbles and backpressure on both sides."""
    tb = TB(dut)
    for pauses in ("random", "cycle", "mixed"):
        await tb.reset(pauses)
        for _ in range(int(os.environ.get("KVPATH_DDR_GROUPS", "150"))):
            tb.send_group(tb.rng.choice((1, 2, 3, tb.rng.randint(1, 40))))
        await tb.finish()


@cocotb.test()
async def throughput(dut):
    """One long group, no pauses: the narrow side (the packer's output, the unpacker's input) must
    move one beat per clock, measured from its first to its last handshake."""
    tb = TB(dut)
    await tb.reset("none")
    items = 40 * tb.n_out // math.gcd(tb.n_in, tb.n_out)
    tb.send_group(items)
    narrow = "o" if tb.kind == "pack" else "i"
    valid, ready = getattr(dut, f"{narrow}__valid"), getattr(dut, f"{narrow}__ready")
    want = len(tb.expected) if tb.kind == "pack" else items
    first = last = None
    seen = 0
    for cycle in itertools.count():
        await RisingEdge(dut.clk)
        if valid.value and ready.value:
            first = cycle if first is None else first
            last = cycle
            seen += 1
            if seen == want:
                break
        assert cycle < 100 * items, tb.ctx("throughput run timed out")
    await tb.finish()
    cycles = last - first + 1
    dut._log.info("THROUGHPUT %s %d->%d: %d narrow-side beats in %d cycles: %.4f beats/cycle",
                  tb.kind, tb.n_in, tb.n_out, seen, cycles, seen / cycles)
    assert cycles == seen, tb.ctx(f"{seen} narrow-side beats took {cycles} cycles")
