"""cocotb tests of BurstReader against cocotbext-axi's AXI RAM (with error injection).

Every output beat is compared with the RAM's bytes (data, zero padding, last, tag, error), every
AR is checked against the burst rules and the bursts must tile the commands' bus beats in order,
every handshake on every channel is watched for withdrawn VALIDs and changed payloads, and RREADY
must never be low while RVALID is high (the credit rule).

Environment: ``KVPATH_DDR_PARAMS``, ``KVPATH_DDR_SEED``, ``KVPATH_DDR_COMMANDS``, ``KVPATH_DDR_BULK_BEATS``,
``KVPATH_DDR_DRAIN_ROUNDS``.
"""

from __future__ import annotations

import itertools
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiReadBus

from kvpath.hdl.ddr.reader import BurstReader
from kvpath.hdl.ddr.bursts import MoverParams
from kvpath.sim.lib.axi_ram import ErrorMap, ErrorRamRead
from kvpath.sim.lib.streams import HandshakeChecker, StreamSink, StreamSource, pause_generator, pack_fields as pack, unpack_fields as unpack
from kvpath.sim.ddr.movers import RAM_BITS, n_commands, random_command

AR_FIELDS = ("id", "addr", "len", "size", "burst", "lock", "cache", "prot", "qos")


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.params = json.loads(os.environ.get("KVPATH_DDR_PARAMS", "{}"))
        reader_params = dict(self.params)
        self.p = MoverParams(**{k: v for k, v in reader_params.items() if k != "buffer_beats"})
        self.layouts = BurstReader(**reader_params)
        self.seed = int(os.environ.get("KVPATH_DDR_SEED", "1"))
        self.rng = random.Random(f"{self.seed}-{cocotb.top._name}-reader")
        self.lanes = self.p.data_bytes
        self.size = 1 << RAM_BITS
        self.base = self.rng.randrange(1 << (self.p.addr_width - RAM_BITS)) << RAM_BITS
        self.errors = ErrorMap(max(16, self.p.data_bytes))
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.ram = ErrorRamRead(AxiReadBus.from_prefix(dut, "axi_"), dut.clk, dut.rst, self.size, self.errors)
        self.mem = self.rng.randbytes(self.size)
        self.ram.write(0, self.mem)
        self.check = HandshakeChecker(dut, dut.rst)
        self.check.add_axi(dut, "axi_", "ar", AR_FIELDS, keep=True)
        self.check.add_axi(dut, "axi_", "r", ("id", "data", "resp", "last"))
        self.check.add_stream(dut, "cmd")
        self.check.add_stream(dut, "data")
        self.cmd = self.out = None
        self.commands: list[tuple[int, int, int]] = []
        self.expected_beats: list[int] = []
        self.next_tag = 0
        self.rready_low = 0
        cocotb.start_soon(self._watch_rready())

    def ctx(self, what: str) -> str:
        return f"seed={self.seed} params={self.params}: {what}"

    async def _watch_rready(self):
        while True:
            await RisingEdge(self.dut.clk)
            if self.dut.axi__rvalid.value and not self.dut.axi__rready.value:
                self.rready_low += 1

    async def reset(self, pauses: str = "mixed"):
        dut = self.dut
        for s in (self.cmd, self.out):
            if s is not None:
                s.stop()
        dut.drain.value = 0
        dut.rst.value = 1
        self.cmd = StreamSource(dut, "cmd", pause_generator(self.rng, pauses))
        self.out = StreamSink(dut, "data", pause_generator(self.rng, pauses))
        for ch in (self.ram.ar_channel, self.ram.r_channel):
            ch.set_pause_generator(pause_generator(self.rng, pauses))
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        self.commands.clear()
        self.expected_beats.clear()
        self.check.kept["ar"].clear()
        self.check.count["r"] = 0
        self.out.items.clear()

    def submit(self, offset: int, length: int):
        assert 0 <= offset and offset + length <= self.size
        tag = self.next_tag
        self.next_tag = (self.next_tag + 1) % (1 << self.p.tag_bits)
        self.cmd.send([pack(self.layouts.cmd_layout, addr=self.base + offset, length=length, tag=tag)])
        if length:
            first, last = offset // self.lanes, (offset + length - 1) // self.lanes
            self.expected_beats.extend(range(first, last + 1))
        self.commands.append((offset, length, tag))

    def random_command(self, max_len: int = 5000) -> tuple[int, int]:
        return random_command(self.rng, self.size, self.lanes, max_len)

    def expected_output(self):
        beats = []
        for offset, length, tag in self.commands:
            err = int(self.errors.worst(offset, offset + length) != 0)
            n = -(-length // self.lanes)
            for j in range(n):
                chunk = self.mem[offset + j * self.lanes:offset + min(length, (j + 1) * self.lanes)]
                beats.append((int.from_bytes(chunk, "little"), int(j == n - 1), err, tag))
        return beats

    def output(self):
        return [(b["data"], b["last"], b["error"], b["tag"]) for b in
                (unpack(self.layouts.data_layout, x) for x in self.out.items)]

    def compare(self, got, expected, what: str):
        """Data, last and tag must match; error must be set on the last beat exactly as expected,
        never on a beat of a clean command, and once set stay set within the command."""
        for i, (g, e) in enumerate(zip(got, expected)):
            if (g[0], g[1], g[3]) != (e[0], e[1], e[3]):
                raise AssertionError(self.ctx(f"{what}: beat {i} got data=0x{g[0]:x} last={g[1]} tag={g[3]}, "
                                              f"expected data=0x{e[0]:x} last={e[1]} tag={e[3]}"))
            if e[1] and g[2] != e[2] or not e[2] and g[2]:
                raise AssertionError(self.ctx(f"{what}: beat {i} error={g[2]}, expected {e[2]} (last={e[1]})"))
            if i and g[2] == 0 and got[i - 1][2] and not got[i - 1][1]:
                raise AssertionError(self.ctx(f"{what}: beat {i} dropped a raised error flag"))
        assert len(got) <= len(expected), self.ctx(f"{what}: {len(got) - len(expected)} extra beats")

    def check_ar(self, prefix_only: bool = False):
        p = self.p
        beats = []
        for ar in self.check.kept["ar"]:
            addr, n = ar["addr"], ar["len"] + 1
            what = self.ctx(f"AR addr=0x{addr:x} len={ar['len']}")
            assert n <= p.max_burst, what + " longer than max_burst"
            assert ar["size"] == p.shift and ar["burst"] == 1, what + " not full-width INCR"
            assert ar["cache"] == p.cache and ar["prot"] == p.prot, what + " cache/prot"
            assert ar["lock"] == 0 and ar["id"] == 0 and ar["qos"] == 0, what + " lock/id/qos"
            assert addr % self.lanes == 0, what + " unaligned"
            assert addr % 4096 + n * self.lanes <= 4096, what + " crosses 4 KiB"
            assert addr >> RAM_BITS == self.base >> RAM_BITS, what + " upper address bits"
            first = (addr % self.size) // self.lanes
            beats.extend(range(first, first + n))
        expected = self.expected_beats[:len(beats)] if prefix_only else self.expected_beats
        assert beats == expected, self.ctx("bursts do not tile the commands' bus beats")

    async def wait_beats(self, n: int, limit: int | None = None):
        limit = limit or 200 * n + 5000
        for _ in range(limit):
            if len(self.out.items) >= n:
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError(self.ctx(f"timeout: {len(self.out.items)} of {n} beats after {limit} cycles"))

    async def finish(self):
        expected = self.expected_output()
        await self.wait_beats(len(expected))
        await ClockCycles(self.dut.clk, 30)
        self.compare(self.output(), expected, "output")
        assert len(self.out.items) == len(expected), self.ctx("extra output beats")
        self.check_ar()
        assert self.check.count["r"] == len(self.expected_beats), self.ctx("R beat count")
        assert self.rready_low == 0, self.ctx(f"RREADY low under RVALID for {self.rready_low} cycles")
        self.check.assert_clean(self.ctx(""))


@cocotb.test()
async def directed(dut):
    """Every alignment of short commands, length 0 between others, 4 KiB crossings, a full window."""
    tb = TB(dut)
    await tb.reset("none")
    lanes = tb.lanes
    for off in range(lanes):
        for length in (1, lanes - off, lanes - off + 1, lanes, 2 * lanes + 3):
            tb.submit(4096 + 64 * (off * 8 + length % 8) + off, length)
    tb.submit(8192, 0)
    tb.submit(8192 - 7, 7)
    tb.submit(3 * 4096 - 100, 300)
    tb.submit(16384 + 5, 0)
    tb.submit(5 * 4096, tb.p.max_burst * lanes)
    tb.submit(6 * 4096 + 3, 3 * 4096 + 50)
    await tb.finish()


@cocotb.test()
async def random_traffic(dut):
    """Seeded random commands with bubbles and backpressure on every channel."""
    tb = TB(dut)
    for mode in ("mixed", "random", "cycle"):
        await tb.reset(mode)
        for _ in range(n_commands(150)):
            tb.submit(*tb.random_command())
        await tb.finish()


@cocotb.test()
async def no_pauses(dut):
    tb = TB(dut)
    await tb.reset("none")
    for _ in range(n_commands(150)):
        tb.submit(*tb.random_command())
    await tb.finish()


@cocotb.test()
async def slow_consumer(dut):
    """The output is rarely ready: the buffer fills, ARs wait for credit, RREADY stays high."""
    tb = TB(dut)
    await tb.reset("none")
    tb.out.pauses = (int(tb.rng.random() < 0.85) for _ in itertools.count())
    for _ in range(n_commands(150) // 3):
        tb.submit(*tb.random_command(1500))
    await tb.finish()


@cocotb.test()
async def error_responses(dut):
    """R beats in error granules answer SLVERR/DECERR: exactly the commands touching them carry
    error (on their last beat at least), and traffic goes on."""
    tb = TB(dut)
    tb.errors.scatter(tb.rng, tb.size)
    await tb.reset("mixed")
    for _ in range(n_commands(150)):
        tb.submit(*tb.random_command(2000))
    await tb.finish()
    flags = [b[2] for b in tb.output() if b[1]]
    assert any(flags) and not all(flags), tb.ctx("error test hit no command or every command")


@cocotb.test()
async def drain_and_reset(dut):
    """Drain at a random moment: channels stay legal, ``idle`` rises once every owed R beat is in,
    output beats before the drain are correct, none after it; after a reset the reader works."""
    tb = TB(dut)
    for round_ in range(int(os.environ.get("KVPATH_DDR_DRAIN_ROUNDS", "6"))):
        await tb.reset(tb.rng.choice(("mixed", "none", "random")))
        for _ in range(24):
            tb.submit(*tb.random_command(6000))
        await ClockCycles(dut.clk, tb.rng.randint(0, 3000))
        dut.drain.value = 1
        if tb.rng.random() < 0.5:
            await RisingEdge(dut.clk)
            dut.drain.value = 0
        for _ in range(20000):
            await RisingEdge(dut.clk)
            if dut.idle.value:
                break
        else:
            raise AssertionError(tb.ctx(f"round {round_}: idle never rose"))
        # idle means nothing is owed: no R beat may follow; what is offered stays, nothing new comes
        r_at_idle = tb.check.count["r"]
        assert not dut.axi__arvalid.value, tb.ctx(f"round {round_}: ARVALID high at idle")
        await ClockCycles(dut.clk, 30)
        assert tb.check.count["r"] == r_at_idle, tb.ctx(f"round {round_}: R beats after idle")
        n = len(tb.out.items)
        tb.out.pauses = itertools.repeat(0)  # always ready
        await ClockCycles(dut.clk, 30)
        assert len(tb.out.items) <= n + 1, tb.ctx(f"round {round_}: beats after the drain")
        assert not dut.cmd__ready.value, tb.ctx("draining reader takes commands")
        tb.check.assert_clean(tb.ctx(f"round {round_}: "))
        tb.compare(tb.output(), tb.expected_output(), f"round {round_}")
        tb.check_ar(prefix_only=True)
        assert tb.rready_low == 0, tb.ctx("RREADY low under RVALID")
        dut._log.info("round %d: %d beats out before idle", round_, len(tb.out.items))
    await tb.reset("mixed")
    for _ in range(40):
        tb.submit(*tb.random_command())
    await tb.finish()


@cocotb.test()
async def bulk(dut):
    """At least KVPATH_DDR_BULK_BEATS output beats with random pauses, every one checked and counted."""
    tb = TB(dut)
    await tb.reset("random")
    target = int(os.environ.get("KVPATH_DDR_BULK_BEATS", "20000"))
    beats = 0
    while beats < target:
        offset, length = tb.random_command(4000)
        tb.submit(offset, length)
        beats += -(-length // tb.lanes)
    await tb.finish()
    assert len(tb.out.items) == beats, tb.ctx(f"{len(tb.out.items)} beats out, {beats} expected")
    dut._log.info("bulk: %d commands, %d output beats, %d R beats, %d cycles", len(tb.commands), beats,
                  tb.check.count["r"], tb.check.cycle)
