"""The Dequantizer end to end in the Amaranth simulator, against gguf-py.

Blocks from gguf's quantizer, arbitrary bytes (Inf/NaN scales included) and edge blocks stream
through under seeded random input bubbles and output back-pressure; outputs must equal
``gguf.dequantize`` of the sanitized blocks cast to FP16 with Inf saturated to +/-65504, the counters
must match, and the lib.stream rules must hold. A no-pause run must emit one beat per clock; a long
output stall must fill the output queue and no more; i.ready and o.valid must not follow o.ready.
"""

import gguf
import numpy as np
import pytest
from amaranth.sim import Simulator

from kvpath.config import BLOCK_ELEMS, get_format
from kvpath.golden.oracle.gguf import gguf_dequantize
from kvpath.hdl.dequant.frame import Dequantizer
from kvpath.sim.lib.handshake import check_ready_paths

SEED = 20261126


def expected(blocks: np.ndarray, fmt: str) -> tuple[np.ndarray, int, int]:
    """FP16 bit patterns (element order), saturated count, non-finite field count, from gguf."""
    values, n_sat, n_nonfinite = gguf_dequantize(blocks, fmt)
    return values.reshape(-1).view(np.uint16).astype(np.int64), n_sat, n_nonfinite


def stimulus(fmt: str, n_blocks: int, rng) -> np.ndarray:
    """Quantized data, arbitrary bytes with forced Inf/NaN scales, and saturating edge blocks."""
    f = get_format(fmt)
    qtype = getattr(gguf.GGMLQuantizationType, f.ggml_type)
    scale = np.exp(rng.uniform(-12, 11, (n_blocks, 1)))
    x = (rng.standard_normal((n_blocks, BLOCK_ELEMS)) * scale).clip(-60000, 60000).astype(np.float16)
    blocks = gguf.quantize(x.astype(np.float32), qtype).reshape(n_blocks, f.block_bytes)
    junk = rng.integers(0, 256, blocks.shape, dtype=np.uint8)
    special = np.array([0x7C00, 0xFC00, 0x7E00, 0xFFFF, 0x7BFF, 0xFBFF, 0x0001, 0x8000], np.uint16)
    hdr = junk[:, :f.header_bytes].copy().view(np.uint16)
    force = rng.random(hdr.shape) < 0.4
    hdr[force] = rng.choice(special, force.sum())
    junk[:, :f.header_bytes] = hdr.view(np.uint8)
    kind = rng.random(n_blocks)
    return np.where((kind < 0.4)[:, None], junk, blocks)


def run_stream(fmt, lanes, n_blocks, seed, p_valid, p_ready, ready_at=None):
    """Stream ``n_blocks`` blocks; returns the results and a record of the run. ``ready_at(cycle)``,
    if given, sets o.ready instead of ``p_ready``."""
    f = get_format(fmt)
    rng = np.random.default_rng(seed)
    dut = Dequantizer(fmt, lanes)
    per_beat = dut.blocks_per_beat
    n_blocks -= n_blocks % per_beat
    blocks = stimulus(fmt, n_blocks, rng)
    words = [int.from_bytes(b.tobytes(), "little") for b in blocks.reshape(-1, f.block_bytes * per_beat)]
    n_out = n_blocks * BLOCK_ELEMS // lanes
    rec = {"out": [], "in_cycles": [], "out_cycles": []}

    async def producer(ctx):
        cycle = 0
        for w in words:
            while rng.random() >= p_valid:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
                cycle += 1
            ctx.set(dut.i.payload, w)
            ctx.set(dut.i.valid, 1)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                cycle += 1
                if ready:
                    rec["in_cycles"].append(cycle - 1)
                    break
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        cycle, held = 0, None
        while len(rec["out"]) < n_out:
            ready = bool(ready_at(cycle)) if ready_at else bool(rng.random() < p_ready)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            payload = [int(payload[i]) for i in range(lanes)]
            if held is not None:  # lib.stream: a presented beat stays, unchanged, until taken
                assert valid and payload == held, f"seed {seed}: beat withdrawn or changed at cycle {cycle}"
            if valid and ready:
                rec["out"].append(payload)
                rec["out_cycles"].append(cycle)
            held = payload if valid and not ready else None
            cycle += 1
            if cycle > 20 * n_out + 1000:
                raise AssertionError(f"seed {seed}: {len(rec['out'])} of {n_out} beats, then none")
        ctx.set(dut.o.ready, 0)
        for _ in range(4):
            await ctx.tick()
        rec["saturated"] = ctx.get(dut.saturated_count)
        rec["nonfinite"] = ctx.get(dut.nonfinite_count)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    rec["dut"] = dut
    rec["expected"] = expected(blocks, fmt)
    return rec


def check_results(rec, fmt, lanes, seed):
    exp, exp_sat, exp_nonfinite = rec["expected"]
    got = np.array(rec["out"], dtype=np.int64).reshape(-1)
    bad = np.flatnonzero(got != exp)
    assert not len(bad), (f"seed {seed}: {fmt} lanes {lanes}: {len(bad)} wrong elements; first "
                          f"{bad[0]} (block {bad[0] // 32}): got {got[bad[0]]:04x} "
                          f"expected {exp[bad[0]]:04x}")
    assert rec["saturated"] == exp_sat, f"seed {seed}: saturated_count {rec['saturated']} != {exp_sat}"
    assert rec["nonfinite"] == exp_nonfinite, \
        f"seed {seed}: nonfinite_count {rec['nonfinite']} != {exp_nonfinite}"
    assert exp_sat > 0 and exp_nonfinite > 0  # the stimulus reaches both counters


CASES = [("q8_0", 8), ("q8_0", 128), ("q4_0", 16), ("q4_0", 64), ("q4_1", 8), ("q4_1", 32)]
LONG_CASES = [(f, n) for f in ("q8_0", "q4_0", "q4_1") for n in (8, 16, 32, 64, 128) if (f, n) not in CASES]


@pytest.mark.parametrize("fmt,lanes", CASES + [pytest.param(*c, marks=pytest.mark.long) for c in LONG_CASES])
def test_throttled(fmt, lanes):
    seed = SEED + lanes + 1000 * ("q8_0", "q4_0", "q4_1").index(fmt)
    rec = run_stream(fmt, lanes, 64, seed, p_valid=0.6, p_ready=0.5)
    check_results(rec, fmt, lanes, seed)


@pytest.mark.parametrize("fmt,lanes", CASES + [pytest.param(*c, marks=pytest.mark.long) for c in LONG_CASES])
def test_no_pause_one_beat_per_clock(fmt, lanes):
    seed = SEED + 7 * lanes + 1000 * ("q8_0", "q4_0", "q4_1").index(fmt)
    rec = run_stream(fmt, lanes, 48, seed, p_valid=1.0, p_ready=1.0)
    check_results(rec, fmt, lanes, seed)
    out, inp, dut = rec["out_cycles"], rec["in_cycles"], rec["dut"]
    beats = len(out)
    span = out[-1] - out[0] + 1
    print(f"{fmt} lanes {lanes}: {beats} beats in {span} clocks = {beats / span:.3f} beats/clock, "
          f"first beat {out[0] - inp[0]} clocks after the first input")
    assert span == beats, f"{beats} output beats took {span} clocks"
    assert out[0] - inp[0] == dut.latency


@pytest.mark.parametrize("fmt,lanes,n_blocks", [("q4_1", 8, 64), ("q8_0", 128, 160)])
def test_output_stall_fills_the_queue_and_loses_nothing(fmt, lanes, n_blocks):
    """o.ready low for a long time: the dequantizer takes the input beats whose output beats its
    queue can hold (the pipeline never stalls, so nothing else may be in flight), then resumes."""
    seed = SEED + 31 * lanes
    stall = 300
    rec = run_stream(fmt, lanes, n_blocks, seed, p_valid=1.0, p_ready=0.0, ready_at=lambda c: c > stall)
    check_results(rec, fmt, lanes, seed)
    dut = rec["dut"]
    taken = sum(c < stall for c in rec["in_cycles"])
    assert taken == (dut.out_queue_depth + 1) // dut.beats_per_block, f"seed {seed}: {taken} input beats"


def test_handshake_paths():
    """Neither o.valid nor i.ready follows o.ready within a cycle: i.ready comes from registers."""
    check_ready_paths(Dequantizer("q4_1", 8), SEED)
