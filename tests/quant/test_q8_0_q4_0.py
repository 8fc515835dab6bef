"""The q8_0 and q4_0 quantizer datapaths, unit by unit, against numpy fp32 and gguf.

- ROMs: all 1024 entries against numpy's fp32 division (and kvpath.golden's tables when present).
- Block unit + one lane unit, simulated together: each vector is a whole block and an element
  index; the header and that element's code must equal gguf's bytes. Vector sets: random blocks,
  maxima sweeping the FP16 range (every subnormal, every fraction at several exponents), crafted
  ties and signed zeros, and (x, max) pairs where fp32 rounding decides the code (found by
  screening every FP16 x against each maximum with numpy).

KVPATH_LONG=1 sweeps every FP16 maximum and a much larger rounding-sensitive set. KVPATH_SEED
overrides the seed; failures print it.
"""

import os

import gguf
import numpy as np
import pytest
from gguf.quants import np_roundf
from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from kvpath.hdl.quant.fp32 import ProductFront, round_div
from kvpath.hdl.quant.q4_0 import Q40Datapath
from kvpath.hdl.quant.q4_0 import rom_entry as q4_rom_entry
from kvpath.hdl.quant.q8_0 import Q80Datapath, d_to_fp16_plan
from kvpath.hdl.quant.q8_0 import rom_entry as q8_rom_entry

LONG = os.environ.get("KVPATH_LONG") == "1"
SEED = int(os.environ.get("KVPATH_SEED", "20261123"))
DATAPATHS = {"q8_0": Q80Datapath, "q4_0": Q40Datapath}
FINITE_POS = np.arange(0, 0x7C00, dtype=np.uint16)  # +0 .. 65504


# --- references ---------------------------------------------------------------------------------

def gguf_blocks(blocks_bits: np.ndarray, fmt: str) -> np.ndarray:
    """gguf's bytes for finite FP16 blocks given as uint16 bit patterns, shape (n, 32)."""
    x = np.ascontiguousarray(blocks_bits, dtype=np.uint16).view(np.float16).astype(np.float32)
    return gguf.quantize(x, getattr(gguf.GGMLQuantizationType, fmt.upper()))


def expected(blocks_bits: np.ndarray, index: np.ndarray, fmt: str):
    q = gguf_blocks(blocks_bits, fmt)
    header = q[:, 0].astype(np.int64) | q[:, 1].astype(np.int64) << 8
    rows = np.arange(len(q))
    if fmt == "q8_0":
        code = q[rows, 2 + index]
    else:
        byte = q[rows, 2 + index % 16]
        code = np.where(index < 16, byte & 15, byte >> 4)
    return header, code.astype(np.int64)


# --- ROM contents -------------------------------------------------------------------------------

def test_round_div_is_ieee_division():
    rng = np.random.default_rng(SEED)
    num = rng.integers(1, 1 << 24, 20000)
    den = rng.integers(1, 1 << 24, 20000)
    for a, b in zip(num, den):
        sig, exp = round_div(int(a), int(b))
        want = np.float32(a) / np.float32(b)  # a, b < 2**24 are exact in fp32
        assert float(sig) * 2.0 ** exp == float(want), f"seed {SEED}: {a}/{b}"


def test_q8_0_rom_every_entry_matches_numpy():
    for frac in range(1024):
        e = q8_rom_entry(frac)
        m = np.float32(1024 + frac)
        d = m / np.float32(127)
        inv = np.float32(1) / d
        dsig = (1 << 23) | e["d"]
        mi = (1 << 23) | e["mi"]
        assert float(dsig) * 2.0 ** (e["de"] - 20) == float(d), frac
        assert float(mi) * 2.0 ** (e["ie"] - e["de"] - 27) == float(inv), frac
        assert dsig & ((1 << e["ctz"]) - 1) == 0 and dsig >> e["ctz"] & 1, frac


def test_q4_0_rom_every_entry_matches_numpy():
    for frac in range(1024):
        e = q4_rom_entry(frac)
        m = np.float32(1024 + frac)
        inv = np.float32(1) / (m / np.float32(-8))  # ggml: id = 1 / (max / -8)
        mi = (1 << 23) | e["mi"]
        assert -float(mi) * 2.0 ** (e["ie"] - 31) == float(inv), frac


def test_roms_agree_with_golden_tables():
    golden = pytest.importorskip("kvpath.golden")
    if not hasattr(golden, "recip_table_q8_0"):
        pytest.skip("kvpath.golden has no reciprocal tables yet")
    t8, t4 = golden.recip_table_q8_0(), golden.recip_table_q4_0()
    for frac in range(1024):
        e8, e4 = q8_rom_entry(frac), q4_rom_entry(frac)
        assert (1 << 23 | e8["d"], e8["de"] - 20) == (int(t8.d_sig[frac]), int(t8.d_exp[frac])), frac
        assert ((1 << 23 | e8["mi"]) * 2 ** (e8["ie"] - e8["de"] + 20)
                == int(t8.id_sig[frac]) * 2 ** (int(t8.id_exp[frac]) + 47)), frac
        assert ((1 << 23 | e4["mi"]) * 2 ** (e4["ie"])
                == int(t4.id_sig[frac]) * 2 ** (int(t4.id_exp[frac]) + 34)), frac


def test_d_to_fp16_plan_against_numpy():
    # Every block-maximum exponent the unit can see, both ROM exponent offsets, a spread of
    # significands: base * 1024 + RNE(dsig >> shift) must be numpy's float32 -> float16.
    rng = np.random.default_rng(SEED)
    for ean in range(-9, 31):
        for de in (0, 1):
            sp, base = d_to_fp16_plan(ean, de)
            shift = sp + 13
            for dsig in [1 << 23, (1 << 24) - 1, *rng.integers(1 << 23, 1 << 24, 200)]:
                dsig = int(dsig)
                q, rem = dsig >> shift, dsig & ((1 << shift) - 1)
                half = 1 << (shift - 1)
                q += rem > half or (rem == half and q & 1)
                value = np.float32(dsig * 2.0 ** (ean + de - 45))
                want = int(np.array(value).astype(np.float16).view(np.uint16))
                assert base * 1024 + q == want, (ean, de, dsig)


# --- the shared fp32 product -------------------------------------------------------------------

def fp16_normalized(bits: int) -> tuple[int, int]:
    """(11-bit normalized significand, exponent) with |x| = sig * 2**(exp - 25)."""
    e, f = bits >> 10 & 31, bits & 0x3FF
    sig, exp = (f, 1) if e == 0 else (1024 | f, e)
    lz = 11 - sig.bit_length()
    return sig << lz, exp - lz


def tie_vectors(rng, count: int):
    """(x, mi) whose exact product lies halfway between two fp32 values."""
    xs, mis = [], []
    sig = np.arange(1024, 2048, dtype=np.int64)
    while len(xs) < count:
        mi = int(rng.integers(1 << 23, 1 << 24))
        product = sig * mi
        lsb = np.where(product >= 1 << 34, 11, 10)
        for s in sig[(product & ((1 << lsb) - 1)) == 1 << (lsb - 1)]:
            exp = int(rng.integers(1, 31))
            xs.append(int(rng.integers(0, 2)) << 15 | exp << 10 | (int(s) - 1024))
            mis.append(mi)
    return xs[:count], mis[:count]


def test_product_front_rounds_like_fp32():
    """w is the product of the normalized significands rounded to 24 bits as numpy's float32
    conversion does (nearest, ties to even), over random operands and exact ties; r, far, sign,
    zero follow their definitions."""
    rng = np.random.default_rng(SEED)
    n = 3000
    xs = [int(v) for v in rng.integers(0, 0x7C00, n) | rng.integers(0, 2, n) << 15]
    xs[:64] = range(64)  # zero and the smallest subnormals
    mis = [int(v) for v in rng.integers(1 << 23, 1 << 24, n)]
    tx, tm = tie_vectors(rng, 600)
    xs += tx
    mis += tm
    rbs = [int(v) for v in rng.integers(-40, 60, len(xs))]
    negs = [int(v) for v in rng.integers(0, 2, len(xs))]
    front = ProductFront(r_limit=10)
    got = []

    async def bench(ctx):
        ctx.set(front.en, 1)
        for t in range(len(xs) + front.latency):
            if t < len(xs):
                ctx.set(front.x, xs[t])
                ctx.set(front.mi, mis[t])
                ctx.set(front.rb, rbs[t])
                ctx.set(front.neg, negs[t])
            await ctx.tick()
            if t + 1 >= front.latency:
                got.append(tuple(ctx.get(s) for s in (front.w, front.r, front.far, front.sign,
                                                      front.zero)))

    sim = Simulator(front)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    ties = 0
    for k, (x, mi, rb, neg) in enumerate(zip(xs, mis, rbs, negs)):
        w, r, far, sign, zero = got[k]
        where = f"seed {SEED}: x={x:#06x} mi={mi:#08x} rb={rb}"
        assert sign == (x >> 15) ^ neg, where
        if x & 0x7FFF == 0:
            assert zero, where
            continue
        assert not zero, where
        sig, exp = fp16_normalized(x & 0x7FFF)
        product = sig * mi
        rounded = int(np.float32(float(product)))  # exact in float64, RNE to float32
        lsb = 11 if product >= 1 << 34 else 10
        ties += (product & ((1 << lsb) - 1)) == 1 << (lsb - 1)
        assert w << 10 == rounded, where
        shift = rb - exp
        assert far == (shift < 0 or shift >= 10), where
        if not far:
            assert r == shift, where
    assert ties >= 600, "the tie vectors must reach the unit"


# --- block unit + lane unit in simulation ------------------------------------------------------

class BlockAndLane(wiring.Component):
    """One block unit feeding one lane unit; the lane sees element ``index`` of the block."""

    def __init__(self, datapath):
        self.bu = datapath.block_unit()
        self.lu = datapath.lane_unit()
        self.latency = self.bu.latency + self.lu.latency
        super().__init__({
            "block": In(data.ArrayLayout(16, 32)),
            "index": In(5),
            "header": Out(len(self.bu.header)),
            "code": Out(datapath.fmt.code_bits),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.bu, m.submodules.lu = bu, lu = self.bu, self.lu
        m.d.comb += [bu.en.eq(1), lu.en.eq(1)]
        m.d.comb += [bu.beat.eq(self.block), bu.take.eq(1), bu.first.eq(1)]  # 32 lanes: a block per beat
        x = Signal(16)
        m.d.sync += x.eq(self.block[self.index])  # element k of the block, one cycle late
        for _ in range(bu.latency - 1):
            nxt = Signal(16)
            m.d.sync += nxt.eq(x)
            x = nxt
        header = bu.header
        for _ in range(lu.latency):
            nxt = Signal.like(header)
            m.d.sync += nxt.eq(header)
            header = nxt
        m.d.comb += [lu.x.eq(x), lu.const.eq(bu.const), self.header.eq(header), self.code.eq(lu.code)]
        return m


def simulate(fmt: str, blocks: np.ndarray, index: np.ndarray):
    dut = BlockAndLane(DATAPATHS[fmt]())
    n = len(blocks)
    header = np.zeros(n, np.int64)
    code = np.zeros(n, np.int64)

    packed = [int.from_bytes(b.astype("<u2").tobytes(), "little") for b in blocks]

    async def bench(ctx):
        for t in range(n + dut.latency):
            if t < n:
                ctx.set(dut.block.as_value(), packed[t])
                ctx.set(dut.index, int(index[t]))
            await ctx.tick()
            j = t + 1 - dut.latency
            if 0 <= j < n:
                header[j], code[j] = ctx.get(dut.header), ctx.get(dut.code)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return header, code


def check(fmt: str, blocks: np.ndarray, index: np.ndarray, what: str):
    blocks = np.ascontiguousarray(blocks, dtype=np.uint16)
    index = np.asarray(index, dtype=np.int64)
    got_h, got_c = simulate(fmt, blocks, index)
    want_h, want_c = expected(blocks, index, fmt)
    bad = np.nonzero((got_h != want_h) | (got_c != want_c))[0]
    if len(bad):
        lines = [f"block {[hex(v) for v in blocks[j]]} index {index[j]}: header {got_h[j]:#06x} "
                 f"want {want_h[j]:#06x}, code {got_c[j]} want {want_c[j]}" for j in bad[:5]]
        pytest.fail(f"{fmt} {what}: {len(bad)} of {len(blocks)} vectors differ (seed {SEED})\n"
                    + "\n".join(lines))


def pair_blocks(rng, maxima: np.ndarray, xs: np.ndarray):
    """Blocks holding ``max`` and ``x`` at random distinct places, zeros elsewhere; index of x.

    q4_0's maximum must be the first of its magnitude, so x (|x| <= |max|) follows max.
    """
    n = len(maxima)
    blocks = np.zeros((n, 32), np.uint16)
    where_max = rng.integers(0, 31, n)
    where_x = where_max + 1 + (rng.integers(0, 1 << 30, n) % (31 - where_max))
    rows = np.arange(n)
    blocks[rows, where_max] = maxima
    blocks[rows, where_x] = xs
    return blocks, where_x


def scale_pairs(rng, maxima: np.ndarray):
    """For each maximum, a random x with |x| <= |max| (a random fraction of it, either sign)."""
    mag = maxima.view(np.float16).astype(np.float32)
    x = (mag * rng.uniform(-1, 1, len(maxima)).astype(np.float32)).astype(np.float16)
    return x.view(np.uint16)


@pytest.mark.parametrize("fmt", DATAPATHS)
def test_random_blocks(fmt):
    rng = np.random.default_rng(SEED)
    n = 4000
    scale = np.exp2(rng.uniform(-26, 16, (n, 1)))
    with np.errstate(over="ignore"):
        blocks = (rng.standard_normal((n, 32)) * scale).astype(np.float16)
    blocks[~np.isfinite(blocks)] = 0
    check(fmt, blocks.view(np.uint16), rng.integers(0, 32, n), "random blocks")


@pytest.mark.parametrize("fmt", DATAPATHS)
def test_maximum_sweep(fmt):
    """Headers for maxima across the FP16 range: all of them in the long run."""
    rng = np.random.default_rng(SEED)
    if LONG:
        maxima = FINITE_POS[1:]
    else:
        fracs = np.arange(1024, dtype=np.uint16)
        maxima = np.concatenate([
            FINITE_POS[1:1024],  # every subnormal
            fracs | (1 << 10), fracs | (15 << 10), fracs | (30 << 10),  # every fraction, 3 binades
            (np.arange(1, 31, dtype=np.uint16) << 10) | 0x3FF,  # largest of every binade
        ])
    if fmt == "q4_0":
        maxima = maxima | (rng.integers(0, 2, len(maxima)).astype(np.uint16) << 15)
    blocks, index = pair_blocks(rng, maxima, scale_pairs(rng, maxima))
    check(fmt, blocks, index, "maximum sweep")


@pytest.mark.parametrize("fmt", DATAPATHS)
def test_ties_and_signed_zeros(fmt):
    """First-of-equal-magnitude maxima, all-zero blocks of either first sign, -0 elements."""
    rng = np.random.default_rng(SEED)
    blocks, index = [], []
    for v in (0x3C00, 0x0001, 0x7BFF, 0x1234, 0x0400, 0x03FF):
        for first_neg in (0, 1):
            b = (rng.integers(0, v, 32) % max(v // 2, 1)).astype(np.uint16)
            i, j = sorted(rng.choice(32, 2, replace=False))
            b[i] = v | first_neg << 15
            b[j] = v | (1 - first_neg) << 15  # same magnitude, other sign, later
            for k in (i, j, int(rng.integers(0, 32))):
                blocks.append(b.copy())
                index.append(k)
    for first in (0x0000, 0x8000):
        b = rng.choice(np.array([0x0000, 0x8000], np.uint16), 32)
        b[0] = first
        for k in range(32):
            blocks.append(b.copy())
            index.append(k)
    check(fmt, np.stack(blocks), np.array(index), "ties and signed zeros")


def all_finite_fp16() -> np.ndarray:
    bits = np.arange(0x10000, dtype=np.uint32).astype(np.uint16)
    return bits[np.isfinite(bits.view(np.float16))]


def rounding_sensitive_pairs(fmt: str, maxima: np.ndarray):
    """(max, x) pairs whose code fp32 rounding decides, screened over every finite FP16 x.

    A pair qualifies when its fp32 product is next to a code boundary (moving it by one ulp
    changes ggml's code), or when ggml's code differs from the same formula in exact arithmetic,
    or (q4_0) when the fp32 rounding of p + 8.5 decides the code.
    """
    xb = all_finite_fp16()
    xf = xb.view(np.float16).astype(np.float32)
    out_max, out_x = [], []
    for mb in maxima:
        mf = np.float32(np.uint16(mb).view(np.float16))
        keep = np.abs(xf) <= abs(mf)
        x, bits = xf[keep], xb[keep]
        if fmt == "q8_0":
            inv = np.float32(1) / np.float32(abs(mf) / np.float32(127))

            def tail(p):
                return np_roundf(p)
        else:
            inv = np.float32(1) / np.float32(mf / np.float32(-8))

            def tail(p):
                return np.trunc(p + np.float32(8.5))
        p = x * inv
        code = tail(p)
        pick = ((tail(np.nextafter(p, np.float32(np.inf))) != code)
                | (tail(np.nextafter(p, np.float32(-np.inf))) != code))
        exact = x.astype(np.float64) * np.float64(inv)
        if fmt == "q8_0":
            pick |= np.sign(exact) * np.floor(np.abs(exact) + 0.5) != code
        else:
            pick |= (np.trunc(exact + 8.5) != code) | (np.trunc(p.astype(np.float64) + 8.5) != code)
        out_max.append(np.full(pick.sum(), mb, np.uint16))
        out_x.append(bits[pick])
    return np.concatenate(out_max), np.concatenate(out_x)


@pytest.mark.parametrize("fmt", DATAPATHS)
def test_rounding_sensitive_pairs(fmt):
    rng = np.random.default_rng(SEED)
    count = 6000 if LONG else 1200
    maxima = np.concatenate([
        rng.integers(1, 0x7C00, count).astype(np.uint16),
        np.arange(1, 0x400, 37 if not LONG else 3, dtype=np.uint16),  # subnormal maxima
        np.arange(1, 31, dtype=np.uint16) << 10,  # powers of two
    ])
    if fmt == "q4_0":
        maxima = maxima | (rng.integers(0, 2, len(maxima)).astype(np.uint16) << 15)
    mx, xs = rounding_sensitive_pairs(fmt, maxima)
    assert len(mx) > 700, "the screen found too few boundary cases to mean anything"
    blocks, index = pair_blocks(rng, mx, xs)
    check(fmt, blocks, index, f"{len(mx)} rounding-sensitive pairs")
