"""cocotb tests of BurstWriter against cocotbext-axi's AXI RAM (with error injection).

Every byte of the RAM is compared with a Python model (bytes outside the commands must stay as
they were), every AW is checked against the burst rules and the bursts must tile the commands'
bus beats in order, every handshake on every channel is watched for withdrawn VALIDs and
changed payloads, ``done`` must match the commands in order.

Environment: ``KVPATH_DDR_PARAMS`` (JSON of the writer's parameters), ``KVPATH_DDR_SEED``,
``KVPATH_DDR_COMMANDS`` (commands per random test), ``KVPATH_DDR_BULK_BEATS`` (data beats of the bulk test).
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiWriteBus

from kvpath.hdl.ddr.writer import BurstWriter
from kvpath.hdl.ddr.bursts import MoverParams
from kvpath.sim.lib.axi_ram import ErrorMap, ErrorRamWrite
from kvpath.sim.lib.streams import HandshakeChecker, StreamSink, StreamSource, pause_generator, pack_fields as pack, unpack_fields as unpack
from kvpath.sim.ddr.movers import RAM_BITS, n_commands, random_command

AW_FIELDS = ("id", "addr", "len", "size", "burst", "lock", "cache", "prot", "qos")


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.params = json.loads(os.environ.get("KVPATH_DDR_PARAMS", "{}"))
        self.p = MoverParams(**self.params)
        self.layouts = BurstWriter(**self.params)
        self.seed = int(os.environ.get("KVPATH_DDR_SEED", "1"))
        self.rng = random.Random(f"{self.seed}-{cocotb.top._name}")
        self.lanes = self.p.data_bytes
        self.size = 1 << RAM_BITS
        # Commands live at a high address so the upper address bits are exercised too; the RAM
        # model wraps addresses modulo its size.
        self.base = self.rng.randrange(1 << (self.p.addr_width - RAM_BITS)) << RAM_BITS
        self.errors = ErrorMap(max(16, self.p.data_bytes))
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        self.ram = ErrorRamWrite(AxiWriteBus.from_prefix(dut, "axi_"), dut.clk, dut.rst, self.size, self.errors)
        background = self.rng.randbytes(self.size)
        self.ram.write(0, background)
        self.model = bytearray(background)
        self.check = HandshakeChecker(dut, dut.rst)
        self.check.add_axi(dut, "axi_", "aw", AW_FIELDS, keep=True)
        self.check.add_axi(dut, "axi_", "w", ("data", "strb", "last"))
        self.check.add_axi(dut, "axi_", "b", ("id", "resp"))
        self.check.add_stream(dut, "cmd")
        self.check.add_stream(dut, "data")
        self.check.add_stream(dut, "done", keep=True)
        self.cmd = self.data = self.done = None
        self.commands: list[tuple[int, int, int]] = []   # (addr offset in RAM, length, tag)
        self.expected_beats: list[int] = []              # bus beat addresses, in order
        self.next_tag = 0

    def ctx(self, what: str) -> str:
        return f"seed={self.seed} params={self.params}: {what}"

    # --- setup
    async def reset(self, pauses: str = "mixed"):
        dut = self.dut
        for s in (self.cmd, self.data, self.done):
            if s is not None:
                s.stop()
        dut.drain.value = 0
        dut.rst.value = 1
        self.cmd = StreamSource(dut, "cmd", pause_generator(self.rng, pauses))
        self.data = StreamSource(dut, "data", pause_generator(self.rng, pauses))
        self.done = StreamSink(dut, "done", pause_generator(self.rng, pauses))
        for ch in (self.ram.aw_channel, self.ram.w_channel, self.ram.b_channel):
            ch.set_pause_generator(pause_generator(self.rng, pauses))
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await RisingEdge(dut.clk)
        self.commands.clear()
        self.expected_beats.clear()
        self.check.kept["aw"].clear()
        self.check.kept["done"].clear()
        self.check.count["w"] = 0

    # --- stimulus
    def submit(self, offset: int, length: int, payload: bytes | None = None):
        """Queue one command writing ``length`` bytes at RAM offset ``offset``."""
        assert 0 <= offset and offset + length <= self.size
        tag = self.next_tag
        self.next_tag = (self.next_tag + 1) % (1 << self.p.tag_bits)
        payload = self.rng.randbytes(length) if payload is None else payload
        self.cmd.send([pack(self.layouts.cmd_layout, addr=self.base + offset, length=length, tag=tag)])
        beats = []
        for k in range(0, length, self.lanes):
            chunk = payload[k:k + self.lanes]
            chunk += self.rng.randbytes(self.lanes - len(chunk))  # lanes past length: must be ignored
            beats.append(int.from_bytes(chunk, "little"))
        self.data.send(beats)
        for k in range(length):
            if not self.errors.blocked(offset + k):
                self.model[offset + k] = payload[k]
        if length:
            first, last = offset // self.lanes, (offset + length - 1) // self.lanes
            self.expected_beats.extend(range(first, last + 1))
        self.commands.append((offset, length, tag))

    def random_command(self, max_len: int = 5000) -> tuple[int, int]:
        return random_command(self.rng, self.size, self.lanes, max_len)

    def expected_done(self):
        out = []
        for offset, length, tag in self.commands:
            resp = self.errors.worst(offset, offset + length)
            out.append((tag, resp, int(resp != 0)))
        return out

    def done_records(self):
        return [(d["tag"], d["resp"], d["error"]) for d in
                (unpack(self.layouts.done_layout, x["payload"]) for x in self.check.kept["done"])]

    async def wait_done(self, n: int, limit: int | None = None):
        limit = limit or 200 * sum(l // self.lanes + 8 for _, l, _ in self.commands) + 5000
        for _ in range(limit):
            if len(self.done.items) >= n:
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError(self.ctx(f"timeout: {len(self.done.items)} of {n} done records after {limit} cycles"))

    # --- checks
    def check_aw(self, prefix_only: bool = False):
        p = self.p
        beats = []
        for aw in self.check.kept["aw"]:
            addr, n = aw["addr"], aw["len"] + 1
            what = self.ctx(f"AW addr=0x{addr:x} len={aw['len']}")
            assert n <= p.max_burst, what + " longer than max_burst"
            assert aw["size"] == p.shift and aw["burst"] == 1, what + " not full-width INCR"
            assert aw["cache"] == p.cache and aw["prot"] == p.prot, what + " cache/prot"
            assert aw["lock"] == 0 and aw["id"] == 0 and aw["qos"] == 0, what + " lock/id/qos"
            assert addr % self.lanes == 0, what + " unaligned"
            assert addr % 4096 + n * self.lanes <= 4096, what + " crosses 4 KiB"
            assert addr >> RAM_BITS == self.base >> RAM_BITS, what + " upper address bits"
            first = (addr % self.size) // self.lanes
            beats.extend(range(first, first + n))
        if prefix_only:
            assert beats == self.expected_beats[:len(beats)], self.ctx("bursts do not tile the commands")
        else:
            assert beats == self.expected_beats, self.ctx("bursts do not tile the commands' bus beats")
            assert self.check.count["w"] == len(self.expected_beats), self.ctx(
                f"{self.check.count['w']} W beats, expected {len(self.expected_beats)}")

    def check_memory(self):
        mem = self.ram.read(0, self.size)
        if mem != self.model:
            bad = [k for k in range(self.size) if mem[k] != self.model[k]]
            raise AssertionError(self.ctx(f"{len(bad)} RAM bytes differ, first at offset 0x{bad[0]:x}: "
                                          f"got {mem[bad[0]]:02x}, expected {self.model[bad[0]]:02x}"))

    async def finish(self):
        await self.wait_done(len(self.commands))
        await ClockCycles(self.dut.clk, 20)
        assert self.done_records() == self.expected_done(), self.ctx("done records differ")
        assert len(self.done.items) == len(self.commands), self.ctx("extra done records")
        self.check_aw()
        self.check_memory()
        self.check.assert_clean(self.ctx(""))


@cocotb.test()
async def directed(dut):
    """Hand-picked edge cases, no pauses: every alignment of short commands, length 0 between
    others, a command ending exactly on and one crossing 4 KiB, a full window and a long one."""
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
    """Random commands with every channel always ready: the full-speed path."""
    tb = TB(dut)
    await tb.reset("none")
    for _ in range(n_commands(150)):
        tb.submit(*tb.random_command())
    await tb.finish()


@cocotb.test()
async def error_responses(dut):
    """Bursts touching error granules get SLVERR/DECERR: exactly the commands touching them
    complete with the worst response, the others with OKAY, and traffic goes on."""
    tb = TB(dut)
    tb.errors.scatter(tb.rng, tb.size)
    await tb.reset("mixed")
    for _ in range(n_commands(150)):
        tb.submit(*tb.random_command(2000))
    await tb.finish()
    assert any(e for _, _, e in tb.done_records()), tb.ctx("no command hit an error granule")
    assert not all(e for _, _, e in tb.done_records()), tb.ctx("every command failed")


@cocotb.test()
async def drain_and_reset(dut):
    """Drain at a random moment of random traffic (non-overlapping commands): the channels stay
    legal, ``idle`` rises, the completed commands are a prefix with their bytes written, dropped
    commands wrote at most a prefix of their bytes, nothing else changed; after a reset the writer
    works again."""
    tb = TB(dut)
    for round_ in range(int(os.environ.get("KVPATH_DDR_DRAIN_ROUNDS", "6"))):
        await tb.reset(tb.rng.choice(("mixed", "none", "random")))
        before = bytes(tb.ram.read(0, tb.size))
        slots = tb.rng.sample(range(tb.size // 8192), 24)
        for slot in slots:
            length = tb.rng.choice((tb.rng.randint(0, 100), tb.rng.randint(1, 8000)))
            tb.submit(slot * 8192 + tb.rng.randrange(8192 - length + 1), length)
        await ClockCycles(dut.clk, tb.rng.randint(0, 1200))
        dut.drain.value = 1
        if tb.rng.random() < 0.5:
            await RisingEdge(dut.clk)
            dut.drain.value = 0  # drain is latched: a one-cycle pulse is enough
        for cycle in range(20000):
            await RisingEdge(dut.clk)
            if dut.idle.value:
                break
        else:
            raise AssertionError(tb.ctx(f"round {round_}: idle never rose"))
        counts = dict(tb.check.count)
        assert not dut.axi__awvalid.value and not dut.axi__wvalid.value, tb.ctx(f"round {round_}: VALID at idle")
        await ClockCycles(dut.clk, 30)
        assert all(tb.check.count[c] == counts[c] for c in ("aw", "w", "b")), tb.ctx(f"round {round_}: traffic after idle")
        assert not dut.cmd__ready.value and not dut.data__ready.value, tb.ctx("draining writer takes input")
        tb.check.assert_clean(tb.ctx(f"round {round_}: "))
        records = tb.done_records()
        expected = tb.expected_done()
        assert records == expected[:len(records)], tb.ctx(f"round {round_}: done records are not a prefix")
        tb.check_aw(prefix_only=True)
        # memory: completed commands fully written, dropped ones at most a prefix, rest untouched
        mem = tb.ram.read(0, tb.size)
        completed = len(records)
        covered = bytearray(before)
        for i, (offset, length, _) in enumerate(tb.commands):
            new, old = tb.model[offset:offset + length], before[offset:offset + length]
            got = mem[offset:offset + length]
            if i < completed:
                assert got == new, tb.ctx(f"round {round_}: completed command {i} not written")
            else:
                written = 0
                for j in range(length):   # the written bytes must be a prefix (bytes equal in both are ambiguous)
                    if got[j] != old[j]:
                        assert got[j] == new[j], tb.ctx(f"round {round_}: command {i} byte {j} garbage")
                        written = j + 1
                assert all(got[j] == new[j] for j in range(written)), tb.ctx(
                    f"round {round_}: dropped command {i} wrote a non-prefix")
            covered[offset:offset + length] = mem[offset:offset + length]
        assert mem == covered, tb.ctx(f"round {round_}: bytes outside the commands changed")
        # the model must continue from what memory really holds now
        tb.model[:] = mem
        dut._log.info("round %d: drained after %d of %d commands", round_, completed, len(tb.commands))
    # after the last drain: reset and run normal traffic
    await tb.reset("mixed")
    for _ in range(40):
        tb.submit(*tb.random_command())
    await tb.finish()


@cocotb.test()
async def bulk(dut):
    """At least KVPATH_DDR_BULK_BEATS data beats with random pauses: every byte lands once (checked in
    memory), every command completes once, beats on W are counted."""
    tb = TB(dut)
    await tb.reset("random")
    target = int(os.environ.get("KVPATH_DDR_BULK_BEATS", "20000"))
    beats = 0
    while beats < target:
        offset, length = tb.random_command(4000)
        tb.submit(offset, length)
        beats += -(-length // tb.lanes)
    await tb.finish()
    assert tb.data.sent == beats, tb.ctx(f"{tb.data.sent} data beats taken, {beats} offered")
    dut._log.info("bulk: %d commands, %d data beats, %d W beats, %d cycles", len(tb.commands), beats,
                  tb.check.count["w"], tb.check.cycle)
