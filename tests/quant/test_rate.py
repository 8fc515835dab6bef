"""The quantizer at fewer elements per clock than its stream has lanes (``elems_per_clock``), in the
Amaranth simulator: the beat splitter alone, and whole quantizers behind it.

- BeatSplitter: parts in order, lowest elements first, under random bubbles and back-pressure and
  with none (then one part per clock), payload held while valid and not ready.
- Quantizer: q4_1 at its default rate (4 per clock behind 16 and 32 lanes) and q8_0 made narrow,
  bit-exact with the golden model under bubbles and back-pressure; the no-pause rate is exactly
  ``elems_per_clock / lanes`` beats per clock; a long output stall takes exactly ``stall_beats``;
  i.ready does not follow o.ready through the core.

KVPATH_SEED overrides the seed; failures print it.
"""

import itertools
import os

import numpy as np
import pytest
from amaranth.hdl import unsigned
from amaranth.sim import Simulator

from kvpath import golden
from kvpath.config import get_format
from kvpath.hdl.lib.streams import BeatSplitter
from kvpath.hdl.quant.frame import Quantizer
from kvpath.sim.lib.handshake import check_ready_paths
from tests.quant.test_frame import assert_blocks_equal, reference, run, sanitized, stimulus

SEED = int(os.environ.get("KVPATH_SEED", "20261207"))


def expected(bits, fmt):
    """gguf for q8_0; kvpath.golden for q4_1, whose zero-min sign rule gguf does not always share
    (tests/quant/test_q4_1.py checks the golden model against gguf)."""
    if fmt != "q4_1":
        return reference(bits, fmt)[0]
    clean, _ = sanitized(bits)
    return golden.quantize(clean.view(np.float16), fmt).reshape(-1, get_format(fmt).block_bytes)


def test_default_rates():
    assert Quantizer.rate("q4_1", 16) == 4
    assert Quantizer.rate("q4_1", 16, 16) == 16
    assert Quantizer.rate("q8_0", 16) == 16
    for bad in (2, 0):
        with pytest.raises(ValueError, match="elements per clock must be one of"):
            Quantizer.rate("q8_0", 16, bad)
    with pytest.raises(ValueError, match="more than its 8 lanes"):
        Quantizer.rate("q8_0", 8, 16)


@pytest.mark.parametrize("pattern", ["random", "none"])
@pytest.mark.parametrize("lanes_in,lanes_out", [(16, 4), (32, 8), (8, 8)])
def test_beat_splitter(lanes_in, lanes_out, pattern):
    seed = SEED + lanes_in + lanes_out
    rng = np.random.default_rng(seed)
    dut = BeatSplitter(unsigned(16), lanes_in, lanes_out)
    beats = rng.integers(0, 1 << 16, (40, lanes_in), dtype=np.uint64)
    want = [sum(int(v) << (16 * k) for k, v in enumerate(part))
            for beat in beats for part in beat.reshape(-1, lanes_out)]
    got, taken_at, held_bad = [], [], []
    stalls = itertools.cycle([1, 0, 0, 1, 1, 0, 1]) if pattern == "random" else itertools.repeat(0)

    async def source(ctx):
        for beat in beats:
            while pattern == "random" and rng.random() < 0.3:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload.as_value(), sum(int(v) << (16 * k) for k, v in enumerate(beat)))
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        cycle, held = 0, None
        while len(got) < len(want):
            ready = not next(stalls)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload.as_value())
            cycle += 1
            if held is not None and (not valid or payload != held):
                held_bad.append(cycle)
            held = payload if valid and not ready else None
            if valid and ready:
                got.append(payload)
                taken_at.append(cycle)
            assert cycle < 50 * len(want), f"seed {seed}: splitter stopped"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    assert got == want, f"seed {seed}: parts out of order or wrong"
    assert not held_bad, f"seed {seed}: payload changed while valid and not ready at {held_bad[:4]}"
    if pattern == "none":
        assert taken_at[-1] - taken_at[0] == len(want) - 1, f"seed {seed}: not one part per clock"


CASES = [("q4_1", 16, None), ("q4_1", 32, None), ("q8_0", 16, 4), ("q8_0", 32, 8)]


@pytest.mark.parametrize("fmt,lanes,rate", CASES)
def test_narrow_quantizer_is_bit_exact(fmt, lanes, rate):
    seed = SEED + lanes + (rate or 0)
    bits = stimulus(np.random.default_rng(seed), 64)
    got, stats = run(fmt, lanes, bits, seed, p_valid=0.6, p_ready=0.5, elems_per_clock=rate)
    assert_blocks_equal(got, expected(bits, fmt), fmt, lanes, seed)
    assert stats["count"] == sanitized(bits)[1], f"seed {seed}: nonfinite_count {stats['count']}"
    assert stats["held_violations"] == 0, f"seed {seed}: payload changed while valid and not ready"


@pytest.mark.parametrize("fmt,lanes,rate", CASES)
def test_narrow_quantizer_no_pause_rate(fmt, lanes, rate):
    seed = SEED + 7
    bits = stimulus(np.random.default_rng(seed), 32)
    got, stats = run(fmt, lanes, bits, seed, p_valid=1.0, p_ready=1.0, elems_per_clock=rate)
    assert_blocks_equal(got, expected(bits, fmt), fmt, lanes, seed)
    per_beat = lanes // Quantizer.rate(fmt, lanes, rate)
    span = stats["last_accept"] - stats["first_accept"]
    assert span == (stats["accepted"] - 1) * per_beat, (
        f"{stats['accepted']} beats over {span} clocks, want one every {per_beat}")


@pytest.mark.parametrize("fmt,lanes,rate", CASES[:1] + CASES[2:3])
def test_narrow_output_stall_fills_the_queue_and_loses_nothing(fmt, lanes, rate):
    seed = SEED + 31
    bits = stimulus(np.random.default_rng(seed), 64)
    stall = 600
    got, stats = run(fmt, lanes, bits, seed, p_valid=1.0, p_ready=0.0, ready_at=lambda c: c > stall,
                     elems_per_clock=rate)
    assert_blocks_equal(got, expected(bits, fmt), fmt, lanes, seed)
    taken = sum(c <= stall for c in stats["accept_cycles"])
    assert taken == stats["stall_beats"], f"seed {seed}: {taken} beats taken during the stall"


@pytest.mark.parametrize("fmt,lanes,rate", CASES[:1] + CASES[3:])
def test_narrow_handshake_paths(fmt, lanes, rate):
    check_ready_paths(Quantizer(fmt, lanes, elems_per_clock=rate), SEED)


def test_configuration_sets_the_rate():
    from kvpath.config import KVPathConfig
    from kvpath.hdl.top.top import build_datapaths

    for over, want in (({}, 4), ({"quant_elems_per_clock": 16}, 16), ({"quant_elems_per_clock": 8}, 8)):
        quant, dequant = build_datapaths(KVPathConfig(fmt="q4_1", **over))
        quant._MustUse__silence = dequant._MustUse__silence = True  # built to be inspected only
        assert quant.elems_per_clock == want, over
    with pytest.raises(ValueError, match="block-scaled"):
        KVPathConfig(fmt="int4_pc", quant_elems_per_clock=4)
    with pytest.raises(ValueError, match="more than its 8 lanes"):
        KVPathConfig(fmt="q4_1", quant_lanes=8, quant_elems_per_clock=16)
