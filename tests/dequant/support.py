"""Helpers the engine tests share: corner scales, grids of (d, m) pairs, and an engine driver for
the Amaranth simulator with a randomly toggling enable."""

import numpy as np
from amaranth.sim import Simulator

from kvpath.golden.ggml import dequant_steps as dm


def corner_scales() -> np.ndarray:
    """Every exponent field with edge and middle significands, both signs, and both zeros."""
    e = np.arange(31)
    frac = np.array([0, 1, 2, 0x155, 0x2AA, 0x3FE, 0x3FF])
    mag = ((e[:, None] << 10) | frac[None, :]).reshape(-1)
    return np.unique(np.concatenate([mag, mag | dm.SIGN]))


def run_engine(engine, d, m, codes, seed):
    """Drive ``engine`` with one beat per row of ``d`` (n, blocks), ``m`` (or None), ``codes`` (n, lanes)
    under a randomly toggling enable; return ``(values, sat)`` as (n, lanes) arrays."""
    rng = np.random.default_rng(seed)
    n, lanes, L = len(codes), engine.lanes, engine.latency
    values = np.full((n, lanes), -1, np.int64)
    sat = np.full((n, lanes), -1, np.int64)

    async def bench(ctx):
        j = 0  # enabled cycles so far = beats presented
        while j < n + L - 1:
            en = rng.random() < 0.8
            row = j if en and j < n else int(rng.integers(n))  # a disabled clock sees junk
            ctx.set(engine.en, en)
            for b in range(engine.blocks):
                ctx.set(engine.d[b], int(d[row, b]))
                if m is not None:
                    ctx.set(engine.m[b], int(m[row, b]))
            for i in range(lanes):
                ctx.set(engine.codes[i], int(codes[row, i]))
            before = [ctx.get(engine.value[i]) for i in range(lanes)]
            await ctx.tick()
            if not en:
                assert [ctx.get(engine.value[i]) for i in range(lanes)] == before
                continue
            k = j - L + 1
            if 0 <= k < n:
                values[k] = [ctx.get(engine.value[i]) for i in range(lanes)]
                sat[k] = [ctx.get(engine.sat[i]) for i in range(lanes)]
            j += 1

    sim = Simulator(engine)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return values, sat


def lane_blocks(engine) -> np.ndarray:
    return np.arange(engine.lanes) // 32 if engine.lanes >= 32 else np.zeros(engine.lanes, int)


def check(got, exp, what, seed, describe):
    bad = np.argwhere((got[0] != exp[0]) | (got[1] != exp[1]))
    if len(bad):
        t, i = bad[0]
        raise AssertionError(f"seed {seed}: {what}: {len(bad)} mismatching lanes; first beat {t} lane {i} "
                             f"({describe(t, i)}): rtl {got[0][t, i]:04x} sat {got[1][t, i]}, "
                             f"model {exp[0][t, i]:04x} sat {int(exp[1][t, i])}")


def scales_with_every_code(scales, code_count, slot):
    """Rows of (scale, codes) such that each scale meets every code: (scale per slot, codes)."""
    codes = np.arange(code_count)
    per = -(-code_count // slot)
    codes = np.resize(codes, per * slot).reshape(per, slot)
    return np.repeat(scales, per), np.tile(codes, (len(scales), 1))


def pack(engine, scales, codes, rng):
    """Spread slots (scale, slot codes) over beats of ``engine``; pad with random slots."""
    blocks, slot = engine.blocks, min(engine.lanes, 32)
    n = -(-len(scales) // blocks)
    pad = n * blocks - len(scales)
    scales = np.concatenate([scales, rng.choice(scales, pad)])
    codes = np.concatenate([codes, codes[rng.integers(len(codes), size=pad)]])
    return scales.reshape(n, blocks), codes.reshape(n, blocks * slot)


def q41_pairs(rng, count_grid: int):
    """(d, m) pairs: every exponent pair, the extremes against each other, and double-rounding cases."""
    e = np.arange(31)
    ed, em = (a.reshape(-1) for a in np.meshgrid(e, e))
    ed, em = np.repeat(ed, count_grid), np.repeat(em, count_grid)
    d = (rng.integers(0, 2, len(ed)) << 15) | (ed << 10) | rng.integers(0, 1024, len(ed))
    m = (rng.integers(0, 2, len(ed)) << 15) | (em << 10) | rng.integers(0, 1024, len(ed))
    ext = np.array([0, 0x8000, 1, 0x83FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF, 0x5A5A])
    xd, xm = (a.reshape(-1) for a in np.meshgrid(ext, ext))
    # Double rounding: fp16(fl32(s)) != fp16(s), mined from a random exponent grid.
    e2 = rng.integers(0, 31, (20000, 2))
    cd = (rng.integers(0, 2, 20000) << 15) | (e2[:, 0] << 10) | rng.integers(0, 1024, 20000)
    cm = (rng.integers(0, 2, 20000) << 15) | (e2[:, 1] << 10) | rng.integers(0, 1024, 20000)
    q = np.arange(16)
    exact = (cd.astype(np.uint16).view(np.float16).astype(np.float64)[:, None] * q
             + cm.astype(np.uint16).view(np.float16).astype(np.float64)[:, None])
    with np.errstate(over="ignore"):
        diff = (exact.astype(np.float16) != exact.astype(np.float32).astype(np.float16)).any(axis=1)
    assert diff.sum() >= 10
    return np.concatenate([d, xd, cd[diff]]), np.concatenate([m, xm, cm[diff]])
