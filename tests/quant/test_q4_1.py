"""The q4_1 quantizer datapath (hdl/quant/q4_1_fp16.py) and the divider, against gguf, unit by unit.

- Divider: quotient and remainder against Python for general, constant-divisor and
  constant-dividend instances.
- Block unit: header bytes against gguf (and kvpath.golden) for random normal, heavy-tailed,
  all-equal, signed-zero, subnormal, +-65504 and wide-spread blocks, random bit patterns, and
  spans whose d is an FP16 subnormal or rounds to zero; its lane constants against an independent
  derivation from numpy's fp32 r, d and id.
- Lane unit: codes against gguf for whole blocks (constants from the simulated block unit), for
  every finite x of selected (min, max) pairs, and for x whose fp32 product lands next to a
  rounding threshold (screened with numpy); and against gguf's expression itself for synthetic
  (x, min, id) sets that random sampling does not reach: products exactly on and just above the
  n = 1 threshold, and operands with bits below the lane's fixed-point window whose borrow or
  sticky bit decides t.
- Gating: random en = 0 cycles with scrambled inputs must change nothing.

Signed zeros: a zero block min (header m) takes the last zero's sign, kvpath's rule
(docs/numerics.md, section 7); gguf's numpy reduction usually but not always agrees, so those
header bytes are checked against the rule and against kvpath.golden rather than gguf.

KVPATH_LONG=1 runs much larger sets. KVPATH_SEED overrides the seed; failures print it.
"""

import os
import random

import gguf
import numpy as np
import pytest
from amaranth.hdl import Const, Fragment
from amaranth.sim import Simulator

from kvpath.hdl.lib.divider import Divider
from kvpath.hdl.quant.q4_1 import Q41Datapath
from kvpath.hdl.quant.q4_1_fp16 import CONST_LAYOUT, Q41BlockUnit, Q41LaneUnit

LONG = os.environ.get("KVPATH_LONG") == "1"
SEED = int(os.environ.get("KVPATH_SEED", "20261123"))
QT = gguf.GGMLQuantizationType.Q4_1
F32 = np.float32
FINITE = np.array([b for b in range(1 << 16) if b & 0x7C00 != 0x7C00], dtype=np.uint16)
FINITE_SORTED = FINITE[np.argsort(FINITE.view(np.float16).astype(np.float64), kind="stable")]
MASK31 = (1 << 31) - 1


# --- simulation ---------------------------------------------------------------------------------

def simulate(dut, items, drive, sample, idle=0.0, seed=SEED):
    """Present ``items`` on enabled cycles and return the outputs that belong to them.

    With ``idle`` > 0 a random share of cycles has en = 0 while a random other item is driven;
    such cycles must neither take that input nor change the outputs.
    """
    rng = random.Random(seed)
    outs = []

    async def bench(ctx):
        enabled, k, last = 0, 0, None
        while len(outs) < len(items):
            en = not (idle and rng.random() < idle)
            drive(ctx, items[min(k, len(items) - 1)] if en else items[rng.randrange(len(items))])
            ctx.set(dut.en, en)
            await ctx.tick()
            now = sample(ctx)
            if not en:
                assert last is None or now == last, f"seed {seed}: outputs moved while en = 0"
                continue
            k += 1
            enabled += 1
            last = now
            if enabled >= dut.latency:
                outs.append(now)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return outs


def run_block_unit(blocks, idle=0.0, seed=SEED):
    """(header int, const int) per block of FP16 bit patterns, a block per beat (32 lanes); the
    quantizer regressions (tests/datapath) cover blocks of several beats."""
    dut = Q41BlockUnit()

    def drive(ctx, blk):
        ctx.set(dut.beat, [int(v) for v in blk])
        ctx.set(dut.take, 1)
        ctx.set(dut.first, 1)

    def sample(ctx):
        return ctx.get(dut.header), Const.cast(ctx.get(dut.const)).value

    return simulate(dut, list(blocks), drive, sample, idle, seed)


def run_lane_unit(pairs, idle=0.0, seed=SEED):
    """Code per (x bits, const int) pair."""
    dut = Q41LaneUnit()

    def drive(ctx, item):
        ctx.set(dut.x, int(item[0]))
        ctx.set(dut.const, CONST_LAYOUT.const(unpack_const(item[1])))

    return simulate(dut, list(pairs), drive, lambda ctx: ctx.get(dut.code), idle, seed)


def unpack_const(value):
    return {name: value >> f.offset & ((1 << f.width) - 1) for name, f in CONST_LAYOUT}


# --- references ---------------------------------------------------------------------------------

def gguf_q41(blocks):
    """gguf's 20-byte blocks for finite FP16 blocks given as uint16, shape (n, 32)."""
    x = np.ascontiguousarray(blocks, dtype=np.uint16).view(np.float16).astype(np.float32)
    return gguf.quantize(x, QT).reshape(-1, 20)


def codes(q):
    qs = q[:, 4:]
    return np.concatenate([qs & 15, qs >> 4], axis=1).astype(np.int64)


def zero_min_rule(blocks):
    """FP16 bits of the block min under kvpath's rule, or -1 when the min is not a zero."""
    vals = blocks.view(np.float16).astype(np.float64)
    out = np.full(len(blocks), -1, np.int64)
    for i, (b, v) in enumerate(zip(blocks, vals)):
        if v.min() == 0:
            out[i] = int(b[np.nonzero(v == 0)[0][-1]])
    return out


def check_headers(blocks, got, seed=SEED):
    ref = gguf_q41(blocks)
    d_ref = ref[:, 0].astype(np.int64) | ref[:, 1].astype(np.int64) << 8
    m_ref = ref[:, 2].astype(np.int64) | ref[:, 3].astype(np.int64) << 8
    m_rule = zero_min_rule(blocks)
    m_ref = np.where(m_rule >= 0, m_rule, m_ref)
    for i, (h, _) in enumerate(got):
        assert (h & 0xFFFF, h >> 16) == (d_ref[i], m_ref[i]), \
            f"seed {seed}: block {[hex(v) for v in blocks[i]]}: header {h:#010x}, " \
            f"want d {d_ref[i]:#06x} m {m_ref[i]:#06x}"
    gold = _golden(blocks)
    if gold is not None:
        want = gold[:, :4].copy().view("<u4").reshape(-1)
        bad = [i for i, (h, _) in enumerate(got) if h != want[i]]
        assert not bad, f"seed {seed}: differs from kvpath.golden for {[hex(v) for v in blocks[bad[0]]]}"


def _golden(blocks):
    try:
        from kvpath import golden
    except ImportError:
        return None
    return golden.quantize(np.ascontiguousarray(blocks, np.uint16).view(np.float16), "q4_1").reshape(-1, 20)


def fixed24(bits):
    """Exact FP16 value times 2**24, as a Python int."""
    bits = int(bits)
    e, f = bits >> 10 & 31, bits & 1023
    v = (f | 1024) << (e - 1) if e else f
    return -v if bits >> 15 else v


def lane_const(min_bits, er, inv):
    """The lane constants for block min ``min_bits``, window exponent ``er`` and fp32 ``inv``.

    Derived from the definitions in hdl/quant/q4_1_fp16.py, independently of the block unit.
    """
    if inv == 0:
        scale = 0
    else:
        mant, e = np.frexp(np.float64(inv))
        ei = int(e) - 1
        assert er + ei in (2, 3), (er, ei)
        scale = int(mant * (1 << 24)) << (er + ei - 2)
    m = fixed24(min_bits)
    sh = 6 - er  # min / 2**(er - 30) = m * 2**(6 - er)
    mi, frac = (m << sh, 0) if sh >= 0 else (m >> -sh, int(m & ((1 << -sh) - 1) != 0))
    return {"scale": scale, "not_min": ~mi & MASK31, "neg_min": -mi & MASK31, "shift": 16 - er,
            "min_frac": frac}


def pack_const(fields):
    return Const.cast(CONST_LAYOUT.const(fields)).value


def numpy_block(blk):
    """(min bits, er, id) of a block with numpy's fp32 arithmetic, as gguf computes them."""
    v = blk.view(np.float16).astype(np.float32)
    r = v.max() - v.min()
    d = r / F32(15)
    inv = F32(0) if d == 0 else F32(1) / d
    er = int(np.frexp(np.float64(r))[1]) - 1 if r else 0
    mins = np.nonzero(v == v.min())[0]
    return int(blk[mins[-1]]), er, inv


def gguf_code(x_bits, min_bits, inv):
    """gguf's Q4_1 code expression, element-wise, for arbitrary fp32 ``inv``."""
    x = np.asarray(x_bits, np.uint16).view(np.float16).astype(np.float32)
    mn = np.asarray(min_bits, np.uint16).view(np.float16).astype(np.float32)
    q = np.trunc((x - mn) * np.asarray(inv, np.float32) + F32(0.5), dtype=np.float32)
    return q.astype(np.uint8).clip(0, 15).astype(np.int64)


# --- block sets ---------------------------------------------------------------------------------

def to_bits(x):
    return np.asarray(x, np.float16).view(np.uint16)


def block_sets(rng, n):
    """Named (k, 32) uint16 block sets."""
    sets = {}
    scale = np.exp2(rng.uniform(-20, 15, (n, 1)))
    sets["normal"] = to_bits(np.clip(rng.standard_normal((n, 32)) * scale, -65504, 65504))
    sets["heavy"] = to_bits(np.clip(rng.standard_t(1.5, (n, 32)) * scale / 8, -65504, 65504))
    sets["bits"] = rng.choice(FINITE, (n, 32))
    sets["equal"] = np.repeat(rng.choice(FINITE, (n // 4, 1)), 32, axis=1)
    # Signed zeros among zeros, among positives and among negatives.
    z = np.where(rng.random((n // 2, 32)) < 0.5, 0x8000, 0).astype(np.uint16)
    pos = np.abs(rng.standard_normal((n // 2, 32))).astype(np.float16).view(np.uint16)
    keep = rng.random((n // 2, 32)) < 0.6
    sets["zeros"] = np.concatenate([z, np.where(keep, pos, z), np.where(keep, pos | 0x8000, z)])
    sub = rng.integers(0, 1024, (n // 2, 32)).astype(np.uint16) | np.where(
        rng.random((n // 2, 32)) < 0.5, 0x8000, 0).astype(np.uint16)
    sets["subnormal"] = sub
    # Extremes: +-65504 with anything, and spans over the whole exponent range.
    ext = rng.choice(FINITE, (n // 2, 32))
    ext[:, 3] = 0x7BFF
    ext[: n // 4, 17] = 0xFBFF
    sets["extremes"] = ext
    wide = np.zeros((n // 2, 32), np.uint16)
    for i in range(len(wide)):
        lo, hi = rng.choice(FINITE_SORTED[:200], 1)[0], rng.choice(FINITE_SORTED[-200:], 1)[0]
        mid = rng.choice(FINITE, 30)
        wide[i] = np.concatenate([[lo, hi], mid])[rng.permutation(32)]
        if i % 2:  # both ends near zero, far apart in exponent
            wide[i] = np.where(rng.random(32) < 0.5, 0x0001, 0x8000 | rng.integers(1, 1024))
            wide[i, 0] = rng.choice([0x3C00, 0xBC00, 0x0400, 0x7BFF])
    sets["wide"] = wide
    # Spans whose d is an FP16 subnormal or rounds to zero: max - min below 15 * 2**-14.
    tiny = np.zeros((n // 2, 32), np.uint16)
    for i in range(len(tiny)):
        base = int(rng.choice(FINITE_SORTED[28000:37000]))  # around zero
        k = int(np.searchsorted(FINITE_SORTED, base))
        span = int(rng.integers(1, 300))
        tiny[i] = FINITE_SORTED[np.clip(k + rng.integers(0, span + 1, 32), 0, len(FINITE_SORTED) - 1)]
    sets["tiny_span"] = tiny
    # Spans of 1 .. 7 * 2**-24: fp16(d) rounds to zero while id, and so the codes, are not zero.
    k = rng.integers(-40, 40, (n // 4, 1)) + rng.integers(0, 8, (n // 4, 32))
    sets["d_to_zero"] = to_bits(k * 2.0 ** -24)
    # A min with bits below the lanes' window (a tiny subnormal next to a large max), with
    # elements equal to it and just above it: the window subtraction must borrow, never wrap.
    low = rng.integers(1, 8, (n // 2, 32)).astype(np.uint16)
    low[:, 0] = 1
    big = rng.integers(0x5800, 0x7C00, (n // 2, 1)).astype(np.uint16)  # 128 .. 65504
    low[:, 5] = big[:, 0]
    low[n // 4:] |= np.where(rng.random((n // 2 - n // 4, 32)) < 0.5, 0, 0x4000).astype(np.uint16)
    sets["tiny_min"] = low[:, rng.permutation(32)]
    return sets


# --- divider ------------------------------------------------------------------------------------

def _run_divider(dut, cases):
    def drive(ctx, c):
        if dut.num_const is None:
            ctx.set(dut.num, c[0])
        if dut.den_const is None:
            ctx.set(dut.den, c[1])
    return simulate(dut, cases, drive, lambda ctx: (ctx.get(dut.quot), ctx.get(dut.rem)), idle=0.2)


@pytest.mark.parametrize("steps", [1, 3, 4])
def test_divider_general(steps):
    rng = random.Random(SEED + steps)
    dut = Divider(30, 24, 20, steps_per_stage=steps)
    cases = []
    for _ in range(400):
        den = rng.choice([1, 2, 3, (1 << 24) - 1, rng.randrange(1, 1 << 24)])
        num = rng.choice([0, min((den << 20) - 1, (1 << 30) - 1), rng.randrange(min(den << 20, 1 << 30))])
        cases.append((num, den))
    for c, got in zip(cases, _run_divider(dut, cases)):
        assert got == divmod(*c), f"seed {SEED}: {c[0]} / {c[1]}"


def test_divider_constant_operands():
    rng = random.Random(SEED)
    by15 = Divider(30, 4, 27, steps_per_stage=6, den=15)
    cases = [(rng.randrange(1 << 30), 15) for _ in range(300)] + [(15 << 26, 15), (0, 15)]
    for c, got in zip(cases, _run_divider(by15, cases)):
        assert got == divmod(*c), f"seed {SEED}: {c[0]} / 15"
    recip = Divider(48, 24, 25, steps_per_stage=3, num=(1 << 48) - 1)
    cases = [((1 << 48) - 1, d) for d in [1 << 23, (1 << 24) - 1, 0xAAAAAB, 3 * 5 * 17 * 257 * 241]]
    cases += [((1 << 48) - 1, rng.randrange(1 << 23, 1 << 24)) for _ in range(300)]
    for c, got in zip(cases, _run_divider(recip, cases)):
        assert got == divmod(*c), f"seed {SEED}: (2**48 - 1) / {c[1]}"


# --- block unit ---------------------------------------------------------------------------------

def test_block_unit_headers_and_constants():
    rng = np.random.default_rng(SEED)
    sets = block_sets(rng, 600 if LONG else 60)
    blocks = np.concatenate(list(sets.values()))
    got = run_block_unit(blocks)
    check_headers(blocks, got)
    for blk, (_, const) in zip(blocks, got):
        mn, er, inv = numpy_block(blk)
        want = lane_const(mn, er, inv)
        have = unpack_const(const)
        if inv == 0:  # a constant block: every code is 0 through scale = 0 alone
            assert have["scale"] == 0, f"seed {SEED}: {[hex(v) for v in blk]}"
        else:
            assert have == want, f"seed {SEED}: {[hex(v) for v in blk]}: {have} != {want}"


def test_block_unit_is_gated_by_en():
    rng = np.random.default_rng(SEED + 1)
    blocks = np.concatenate(list(block_sets(rng, 16).values()))
    assert run_block_unit(blocks, idle=0.4, seed=SEED + 1) == run_block_unit(blocks)


def test_block_unit_signed_zero_rule():
    # Every position of the last zero, both signs, among positives or among zeros only.
    blocks = []
    for last in range(32):
        for sign in (0, 0x8000):
            b = np.full(32, 0x3C00, np.uint16)
            b[:last] = np.where(np.arange(last) % 2, 0, 0x8000)
            b[last] = sign
            blocks.append(b)
            z = np.where(np.arange(32) % 3 == 0, 0x8000, 0).astype(np.uint16)
            z[last] = sign
            z[last + 1:] = 0x3C00
            blocks.append(z)
    blocks = np.array(blocks)
    got = run_block_unit(blocks)
    check_headers(blocks, got)
    assert {h >> 16 for h, _ in got} == {0, 0x8000}


# --- lane unit ----------------------------------------------------------------------------------

def _lanes_vs_gguf(blocks, idle=0.0, seed=SEED):
    consts = [c for _, c in run_block_unit(blocks)]
    pairs = [(x, c) for blk, c in zip(blocks, consts) for x in blk]
    got = np.array(run_lane_unit(pairs, idle, seed)).reshape(len(blocks), 32)
    want = codes(gguf_q41(blocks))
    bad = np.nonzero((got != want).any(axis=1))[0]
    assert not len(bad), f"seed {seed}: block {[hex(v) for v in blocks[bad[0]]]}: " \
                         f"codes {got[bad[0]].tolist()} want {want[bad[0]].tolist()}"


def test_lane_unit_whole_blocks():
    rng = np.random.default_rng(SEED + 2)
    _lanes_vs_gguf(np.concatenate(list(block_sets(rng, 300 if LONG else 30).values())))


def test_lane_unit_is_gated_by_en():
    rng = np.random.default_rng(SEED + 3)
    _lanes_vs_gguf(np.concatenate(list(block_sets(rng, 8).values())), idle=0.4, seed=SEED + 3)


def pair_blocks(mn, mx, xs):
    """Blocks holding min, max and 30 of ``xs`` each, so gguf sees exactly that (min, max)."""
    xs = np.asarray(xs, np.uint16)
    n = -(-len(xs) // 30)
    pad = np.full(n * 30, mn, np.uint16)
    pad[: len(xs)] = xs
    out = np.empty((n, 32), np.uint16)
    out[:, 0], out[:, 1], out[:, 2:] = mn, mx, pad.reshape(n, 30)
    return out


def _pair_vs_gguf(mn, mx, xs):
    """Every x in ``xs`` (all within [min, max]) through one block's constants, against gguf."""
    blocks = pair_blocks(mn, mx, xs)
    (_, const), = run_block_unit(blocks[:1])
    got = np.array(run_lane_unit([(x, const) for x in blocks[:, 2:].reshape(-1)]))
    want = codes(gguf_q41(blocks))[:, 2:].reshape(-1)
    bad = np.nonzero(got != want)[0]
    if len(bad):
        x = blocks[:, 2:].reshape(-1)[bad[0]]
        pytest.fail(f"seed {SEED}: min {mn:#06x} max {mx:#06x} x {x:#06x}: code {got[bad[0]]} "
                    f"want {want[bad[0]]}")


def _between(mn, mx):
    v = FINITE_SORTED.view(np.float16)
    lo, hi = np.uint16(mn).view(np.float16), np.uint16(mx).view(np.float16)
    return FINITE_SORTED[(v >= lo) & (v <= hi)]


@pytest.mark.parametrize("mn, mx, stride", [(0xFBFF, 0x7BFF, 1 if LONG else 16), (0x8001, 0x5BFF, 1),
                                            (0xC479, 0x3E00, 1)])
def test_lane_unit_every_x(mn, mx, stride):
    """Every finite x in [min, max] (every ``stride``-th for the full +-65504 range by default)."""
    _pair_vs_gguf(mn, mx, _between(mn, mx)[::stride])


@pytest.mark.long
def test_lane_unit_every_x_many_pairs():
    rng = np.random.default_rng(SEED + 4)
    for _ in range(40):
        a, b = sorted(rng.integers(0, len(FINITE_SORTED), 2))
        _pair_vs_gguf(int(FINITE_SORTED[a]), int(FINITE_SORTED[b]), FINITE_SORTED[a:b + 1])


def near_threshold(rng, pairs, ulps=3):
    """(min, max, x) where fp32 rounding decides the code: the exact product y = t * id is within
    ``ulps`` fp32 ulps of a half-integer, or exact arithmetic would give another code."""
    found = []
    for _ in range(pairs):
        a, b = sorted(rng.integers(0, len(FINITE_SORTED), 2))
        if rng.random() < 0.5:  # narrow spans too
            b = min(len(FINITE_SORTED) - 1, a + int(rng.integers(1, 5000)))
        mn, mx = FINITE_SORTED[a], FINITE_SORTED[b]
        xs = FINITE_SORTED[a:b + 1]
        fmn = np.float16(mn.view(np.float16)).astype(F32)
        r = mx.view(np.float16).astype(F32) - fmn
        if r == 0:
            continue
        inv = F32(1) / (r / F32(15))
        t = xs.view(np.float16).astype(F32) - fmn
        y = t.astype(np.float64) * np.float64(inv)  # exact: 24 x 24 bits
        half = np.floor(y) + 0.5
        ulp = np.spacing(np.abs(y).astype(F32)).astype(np.float64)
        near = (np.abs(y - half) <= ulps * ulp) | (np.abs(y - (half - 1)) <= ulps * ulp)
        exact_code = np.minimum(np.floor(y + 0.5), 15)
        differs = exact_code != gguf_code(xs, mn, inv)
        for x in xs[near | differs]:
            found.append((int(mn), int(mx), int(x)))
    return found


def test_lane_unit_near_rounding_thresholds():
    rng = np.random.default_rng(SEED + 5)
    cases = near_threshold(rng, 4000 if LONG else 400)
    assert len(cases) > 50, f"seed {SEED + 5}: only {len(cases)} threshold cases found"
    blocks = np.array([pair_blocks(mn, mx, [x])[0] for mn, mx, x in cases])
    want = codes(gguf_q41(blocks))[:, 2]
    assert len(set(want.tolist())) > 8, "threshold cases should span many codes"
    _lanes_vs_gguf(blocks, seed=SEED + 5)


# --- lane unit, synthetic constants -------------------------------------------------------------

def _synthetic_vs_gguf(cases, seed):
    """cases: (x bits, min bits, er, id) with x - min < 2**(er + 1) and er + exp(id) in {2, 3}."""
    pairs = [(x, pack_const(lane_const(mn, er, inv))) for x, mn, er, inv in cases]
    got = np.array(run_lane_unit(pairs))
    want = gguf_code(*zip(*[(x, mn, inv) for x, mn, _, inv in cases]))
    bad = np.nonzero(got != want)[0]
    if len(bad):
        x, mn, er, inv = cases[bad[0]]
        pytest.fail(f"seed {seed}: x {x:#06x} min {mn:#06x} er {er} id {inv!r}: "
                    f"code {got[bad[0]]} want {want[bad[0]]}")


def _fp32(sig, exp):
    return F32(np.ldexp(np.float64(sig), exp))


def test_lane_unit_n1_threshold_exactly():
    # 2**25 - 3 = 479 * 70051: t = 479 * 2**j and id = 70051 * 2**(-26 - j) give
    # t * id = 0.5 - 3 * 2**-26 exactly, where fl32 rounds to 0.49999994 (code 0); one ulp more
    # of id and the product rounds to 0.49999997, which the +0.5 carries to 1.
    cases = []
    for j in range(-24, 4):
        x = int(to_bits(np.float64(479) * 2.0 ** j))
        inv0 = _fp32(70051, -26 - j)
        t = np.uint16(x).view(np.float16).astype(np.float64)
        assert t * np.float64(inv0) == 0.5 - 3 * 2.0 ** -26
        for k in range(-2, 3):
            inv = inv0
            for _ in range(abs(k)):
                inv = np.nextafter(inv, F32(np.inf if k > 0 else 0))
            for er in (12 + j, 13 + j):
                if -24 <= er <= 16:
                    cases.append((x, 0, er, inv))
    want = gguf_code(*zip(*[(x, mn, inv) for x, mn, _, inv in cases]))
    assert {0, 1} <= set(want.tolist())
    # Products just above that threshold, with the excess only in the product's lowest bits
    # (below 2**-34 of y), or only in the next ones: the sticky bit must see all of them. A min
    # 13 binades below x gives t = x - min all 24 significant bits, so those bits get used.
    rng = np.random.default_rng(SEED + 7)
    found = {"low": 0, "mid": 0}
    for _ in range(200000):
        if min(found.values()) >= 12:
            break
        ex = int(rng.integers(-1, 13))
        x = int(to_bits(np.float64(rng.integers(1024, 2048)) * 2.0 ** (ex - 10)))
        mn = int(to_bits(-np.float64(rng.integers(1024, 2048)) * 2.0 ** (ex - 23)))
        t = F32(np.uint16(x).view(np.float16).astype(F32) - np.uint16(mn).view(np.float16).astype(F32))
        er = int(np.floor(np.log2(t))) + int(rng.integers(4, 6))  # y ~ 0.5 with er + exp(id) = 2, 3
        inv = F32((0.5 - 3 * 2.0 ** -26) / float(t))
        for _ in range(3):
            mant, e = np.frexp(np.float64(inv))
            if er + int(e) - 1 in (2, 3) and er <= 16:
                p = int(np.float64(t) * 2.0 ** (30 - er)) * (int(mant * (1 << 24)) << (er + int(e) - 3))
                rest = p & ((1 << 25) - 1)
                kind = "low" if rest < 1 << 17 else "mid"
                if p >> 25 == (1 << 25) - 3 and rest and found[kind] < 12:
                    found[kind] += 1
                    cases.append((x, mn, er, inv))
            inv = np.nextafter(inv, F32(1))
    assert min(found.values()) >= 12, f"seed {SEED + 7}: sticky cases found: {found}"
    _synthetic_vs_gguf(cases, SEED)


def test_lane_unit_bits_below_window():
    # An operand of +-(k + 1/2) window LSBs has a bit below the window: the lane floors it
    # (borrowing for min, rounding a negative x down) and counts it as sticky. Those decide t
    # only through a carry (k = 2**j - 1) or a tie (k = 2**j) at the rounding position, and the
    # code only where y meets a threshold: so pair such an operand with a large other one and
    # walk id across each threshold. Random data essentially never does this.
    rng = np.random.default_rng(SEED + 8)
    cases = []
    for _ in range(60 if LONG else 12):
        er = int(rng.integers(8, 17))
        big = np.float64(rng.integers(1024, 2048)) * 2.0 ** (er - 1 - 10 + int(rng.integers(0, 2)))
        for k, form in ((k, f) for k in (31, 32, 63, 64, 127, 128, 255, 256, 511, 512) for f in range(3)):
            tiny = np.float64(2 * k + 1) * 2.0 ** (er - 31)
            # min tiny below zero and x large; min large below zero and x tiny of either sign
            x, mn = [(big, -tiny), (-tiny, -big), (tiny, -big)][form]
            x, mn = int(to_bits(x)), int(to_bits(mn))
            t = np.uint16(x).view(np.float16).astype(F32) - np.uint16(mn).view(np.float16).astype(F32)
            if not t < 2.0 ** (er + 1):
                continue
            for n in range(2, 16):
                inv = F32((n - 0.5) / float(t))
                for _ in range(3):
                    inv = np.nextafter(inv, F32(0))
                for _ in range(7):
                    if er + int(np.frexp(np.float64(inv))[1]) - 1 in (2, 3):
                        cases.append((x, mn, er, inv))
                    inv = np.nextafter(inv, F32(1))
    assert len(cases) > 500
    _synthetic_vs_gguf(cases, SEED + 8)


def synthetic_cases(rng, n):
    """Random (x, min, er, id) over the lane's whole domain, half of them aimed at thresholds."""
    cases = []
    while len(cases) < n:
        mn = int(rng.choice(FINITE))
        fmn = np.uint16(mn).view(np.float16).astype(np.float64)
        x = int(rng.choice(FINITE))
        if np.uint16(x).view(np.float16).astype(np.float64) < fmn:
            x, mn = mn, x
            fmn = np.uint16(mn).view(np.float16).astype(np.float64)
        span = np.uint16(x).view(np.float16).astype(np.float64) - fmn
        lo = -24 if span == 0 else max(-24, int(np.floor(np.log2(span))))
        if lo > 16:
            continue
        er = int(rng.integers(lo, min(16, lo + 3) + 1))
        ei = int(rng.integers(2, 4)) - er
        t = F32(np.uint16(x).view(np.float16).astype(F32) - F32(fmn))
        if rng.random() < 0.5 and t > 0:
            # aim y = t * id at a threshold n - 0.5 (n = 1 .. 16) and walk a few ulps
            target = F32((int(rng.integers(1, 17)) - 0.5) / float(t))
            inv = target
            for _ in range(int(rng.integers(0, 4))):
                inv = np.nextafter(inv, F32(np.inf if rng.random() < 0.5 else 0))
            if not (2.0 ** ei <= float(inv) < 2.0 ** (ei + 1)):
                continue
        else:
            inv = _fp32(int(rng.integers(1 << 23, 1 << 24)), ei - 23)
        cases.append((x, mn, er, inv))
    return cases


def test_lane_unit_synthetic_constants():
    rng = np.random.default_rng(SEED + 6)
    _synthetic_vs_gguf(synthetic_cases(rng, 60000 if LONG else 6000), SEED + 6)


# --- the FormatDatapath contract -----------------------------------------------------------------

def test_datapath_contract():
    dp = Q41Datapath("q4_1")
    assert dp.fmt.name == "q4_1" and dp.const_layout is CONST_LAYOUT
    bu, lu = dp.block_unit(), dp.lane_unit()
    assert isinstance(bu.latency, int) and isinstance(lu.latency, int)
    assert len(bu.header) == 32 and len(lu.code) == 4
    for unit in (bu, lu):
        Fragment.get(unit, None)  # elaborates cleanly on its own
