"""The quantizer framework end to end in the Amaranth simulator, against gguf plus kvpath's input rule.

Every format with a datapath here (q8_0, q4_0) at every lane count: random input bubbles and output
back-pressure (seeded; failures print the seed), blocks with Inf/NaN/subnormals/signed zeros/ties,
the non-finite counter, lib.stream rules (payload held while valid and not ready, o.valid
registered), i.ready from registers only, a long output stall that fills the output queue, and a no-pause run whose
measured throughput must be one input beat per clock.
"""

import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from kvpath.config import QUANT_LANES, get_format
from kvpath.hdl.quant.frame import COUNT_LAG, Quantizer
from kvpath.sim.lib.handshake import check_ready_paths

SEED = int(os.environ.get("KVPATH_SEED", "20261123"))
LONG = os.environ.get("KVPATH_LONG") == "1"
FORMATS = ("q8_0", "q4_0")


def sanitized(bits: np.ndarray) -> tuple[np.ndarray, int]:
    """kvpath's input rule on FP16 bit patterns: +-Inf -> +-65504, NaN -> +0; and the count."""
    bits = bits.copy()
    exp_max = (bits & 0x7C00) == 0x7C00
    inf = exp_max & ((bits & 0x03FF) == 0)
    nan = exp_max & ~inf
    bits[inf] = (bits[inf] & 0x8000) | 0x7BFF
    bits[nan] = 0
    return bits, int(exp_max.sum())


def reference(bits: np.ndarray, fmt: str) -> tuple[np.ndarray, int]:
    clean, count = sanitized(bits)
    x = clean.view(np.float16).astype(np.float32).reshape(-1, 32)
    return gguf.quantize(x, getattr(gguf.GGMLQuantizationType, fmt.upper())), count


def stimulus(rng, blocks: int) -> np.ndarray:
    """FP16 bit patterns: Gaussian blocks over a wide range of scales, plus special blocks."""
    scale = np.exp2(rng.uniform(-30, 17, (blocks, 1)))
    with np.errstate(over="ignore"):  # overflow to Inf is wanted: the input rule must handle it
        x = (rng.standard_normal((blocks, 32)) * scale).astype(np.float16).view(np.uint16)
    specials = np.array([0x7C00, 0xFC00, 0x7E00, 0xFE00, 0x7C01, 0xFFFF, 0x0000, 0x8000, 0x0001,
                         0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF], np.uint16)
    sprinkle = rng.random(x.shape) < 0.02
    x[sprinkle] = rng.choice(specials, sprinkle.sum())
    x[0] = 0x0000  # all-zero blocks: q4_0's d takes the first zero's sign
    x[1] = 0x8000
    x[2, :] = rng.choice(np.array([0, 0x8000], np.uint16), 32)
    x[3, :] = 0x7C00  # all +Inf -> all 65504
    x[4, :] = 0x7E00  # all NaN -> all zero
    x[5, 7], x[5, 9] = 0xBC00, 0x3C00  # equal magnitudes: the first (negative) is the maximum
    x[5, [k for k in range(32) if k not in (7, 9)]] = 0x3800
    return x.reshape(-1)


def run(fmt: str, lanes: int, bits: np.ndarray, seed: int, p_valid: float, p_ready: float,
        ready_at=None, elems_per_clock=None):
    """Stream ``bits`` through the quantizer; returns (blocks, stats). ``ready_at(cycle)``, if
    given, sets o.ready instead of ``p_ready``."""
    dut = Quantizer(fmt, lanes, elems_per_clock=elems_per_clock)
    block_bytes = get_format(fmt).block_bytes
    beats = bits.reshape(-1, lanes)
    n_blocks = len(bits) // 32
    rng_in = np.random.default_rng(seed)
    rng_out = np.random.default_rng(seed + 1)
    got = []
    stats = {"cycles": 0, "accepted": 0, "first_accept": None, "last_accept": None, "accept_cycles": [],
             "held_violations": 0, "count": None, "count_errors": 0}
    nonfinite_in = []  # per cycle: non-finite elements of the beat accepted in that cycle
    count_seen = []  # per cycle: nonfinite_count as sampled at that clock edge

    packed = [int.from_bytes(b.astype("<u2").tobytes(), "little") for b in beats]

    async def source(ctx):
        for beat in packed:
            while rng_in.random() >= p_valid:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload.as_value(), beat)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        cycle = 0
        held = None  # payload offered but not taken in the previous cycle
        while len(got) < n_blocks:
            ready = bool(ready_at(cycle)) if ready_at else bool(rng_out.random() < p_ready)
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload, i_valid, i_ready, i_payload, count = await ctx.tick().sample(
                dut.o.valid, dut.o.payload, dut.i.valid, dut.i.ready, dut.i.payload.as_value(),
                dut.nonfinite_count)
            cycle += 1
            accepted = bool(i_valid and i_ready)
            nonfinite_in.append(sum((i_payload >> (16 * k) & 0x7C00) == 0x7C00 for k in range(lanes))
                                if accepted else 0)
            count_seen.append(count)
            if accepted:
                stats["accepted"] += 1
                stats["first_accept"] = stats["first_accept"] or cycle
                stats["last_accept"] = cycle
                stats["accept_cycles"].append(cycle)
            if held is not None and (not valid or payload != held):
                stats["held_violations"] += 1
            held = payload if valid and not ready else None
            if valid and ready:
                got.append(payload)
            if cycle > 40 * len(beats) + 600:
                raise AssertionError("quantizer stopped producing blocks")
        await ctx.tick().repeat(COUNT_LAG)
        stats["count"] = ctx.get(dut.nonfinite_count)
        stats["cycles"] = cycle

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    total = np.cumsum([0] * COUNT_LAG + nonfinite_in)  # what the counter may show, cycle by cycle
    stats["count_errors"] = int(sum(c != t for c, t in zip(count_seen, total)))
    stats["stall_beats"] = dut.stall_beats
    out = np.array([[p >> (8 * k) & 0xFF for k in range(block_bytes)] for p in got], np.uint8)
    return out, stats


def assert_blocks_equal(got, want, fmt, lanes, seed):
    assert got.shape == want.shape, f"seed {seed}: {got.shape} blocks, want {want.shape}"
    bad = np.nonzero((got != want).any(axis=1))[0]
    if len(bad):
        lines = [f"block {b}: got {got[b].tobytes().hex()} want {want[b].tobytes().hex()}"
                 for b in bad[:4]]
        pytest.fail(f"{fmt} lanes={lanes} seed {seed}: {len(bad)} of {len(want)} blocks differ\n"
                    + "\n".join(lines))


@pytest.mark.parametrize("lanes", QUANT_LANES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_throttled_stream_is_bit_exact(fmt, lanes):
    seed = SEED + lanes + (0 if fmt == "q8_0" else 1000)
    rng = np.random.default_rng(seed)
    bits = stimulus(rng, 600 if LONG else 96)
    want, want_count = reference(bits, fmt)
    got, stats = run(fmt, lanes, bits, seed, p_valid=0.6, p_ready=0.5)
    assert_blocks_equal(got, want, fmt, lanes, seed)
    assert stats["count"] == want_count, f"seed {seed}: nonfinite_count {stats['count']}, want {want_count}"
    assert stats["count_errors"] == 0, f"seed {seed}: the counter does not trail by {COUNT_LAG} cycles"
    assert stats["held_violations"] == 0, f"seed {seed}: payload changed while valid and not ready"


@pytest.mark.parametrize("lanes", QUANT_LANES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_no_pause_throughput(fmt, lanes):
    seed = SEED + 7
    bits = stimulus(np.random.default_rng(seed), 64)
    want, _ = reference(bits, fmt)
    got, stats = run(fmt, lanes, bits, seed, p_valid=1.0, p_ready=1.0)
    assert_blocks_equal(got, want, fmt, lanes, seed)
    beats = len(bits) // lanes
    span = stats["last_accept"] - stats["first_accept"] + 1
    rate = stats["accepted"] / span
    print(f"{fmt} lanes={lanes}: {stats['accepted']} beats in {span} cycles = {rate:.3f} beats/cycle")
    assert stats["accepted"] == beats
    assert rate == 1.0, f"{rate:.3f} beats per cycle without pauses"


@pytest.mark.parametrize("fmt", FORMATS)
def test_handshake_paths(fmt):
    """Neither o.valid nor i.ready follows o.ready within a cycle: i.ready comes from registers."""
    check_ready_paths(Quantizer(fmt, 32), SEED)


@pytest.mark.parametrize("lanes", (8, 32))
@pytest.mark.parametrize("fmt", FORMATS)
def test_output_stall_fills_the_queue_and_loses_nothing(fmt, lanes):
    """o.ready low for a long time: the quantizer takes exactly the blocks its output queue can
    hold (the pipeline never stalls, so nothing else may be in flight), then resumes bit-exact."""
    seed = SEED + 31 + lanes
    bits = stimulus(np.random.default_rng(seed), 96)
    want, _ = reference(bits, fmt)
    stall = 400
    got, stats = run(fmt, lanes, bits, seed, p_valid=1.0, p_ready=0.0, ready_at=lambda c: c > stall)
    assert_blocks_equal(got, want, fmt, lanes, seed)
    taken = sum(c <= stall for c in stats["accept_cycles"])
    assert taken == stats["stall_beats"], f"seed {seed}: {taken} beats taken during the stall"


def test_nonfinite_count_accumulates_per_lane():
    """Every lane's flag counts, including several in one beat, and only for accepted beats."""
    lanes = 16
    bits = np.zeros(32 * 8, np.uint16)
    bits[::3] = 0x7C00
    bits[1::7] = 0xFE00
    want, want_count = reference(bits, "q8_0")
    got, stats = run("q8_0", lanes, bits, SEED, p_valid=0.5, p_ready=0.3)
    assert_blocks_equal(got, want, "q8_0", lanes, SEED)
    assert stats["count"] == want_count
    assert stats["count_errors"] == 0


def test_verilog_ports():
    text = verilog.convert(Quantizer("q4_0", 8), name="kvpath_quantizer")
    header = text[text.index("module kvpath_quantizer("):].split(";")[0]
    for port in ("clk", "rst", "i__valid", "i__ready", "i__payload", "o__valid", "o__ready",
                 "o__payload", "nonfinite_count"):
        assert port in header, port
    assert "posedge rst" not in text  # synchronous reset only


def test_q4_1_datapath_is_imported_lazily():
    code = ("import sys; from kvpath.hdl.quant.frame import Quantizer; Quantizer('q8_0', 16); "
            "Quantizer('q4_0', 8); print('kvpath.hdl.quant.q4_1_fp16' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
