"""BF16 quantizer datapaths (q8_0, q4_0, q4_1) in the Amaranth simulator, against the golden model.

The streaming regressions (`kvpath sim --input bf16`) see mostly ordinary blocks; here every block
is chosen at a boundary of the BF16 scale logic: FP16 ``d``/``m`` overflow and underflow, fp32
subnormal ``d``, reciprocal overflow (void blocks), q4_1 spans that overflow fp32, subnormal and
largest BF16 values, zero blocks. A 32-lane quantizer takes one block per clock. Also checks that
the ROMs are the golden model's tables and that the FP16 datapaths refuse nothing they used to.
KVPATH_SEED overrides the seed; failures print it.
"""

from __future__ import annotations

import os

import ml_dtypes
import numpy as np
import pytest
from amaranth.sim import Simulator

from kvpath.golden.ggml import bf16 as ggml_bf16
from kvpath.elements import ELEMENTS
from kvpath.golden.num.elem import sanitize
from kvpath.hdl.quant import ggml_bf16 as S
from kvpath.hdl.quant.frame import Quantizer

SEED = int(os.environ.get("KVPATH_SEED", "20251125"))
BF16 = np.dtype(ml_dtypes.bfloat16)
# BF16 exponent fields where the scale logic changes: subnormal / void / fp32-subnormal d (0-12),
# FP16 d and m underflow (95-120) and overflow (140-152), fp32 span overflow (250-254).
EXPONENTS = [*range(0, 13), *range(95, 121, 3), *range(140, 153), *range(250, 255)]


def boundary_blocks(rng: np.random.Generator, fmt: str) -> np.ndarray:
    blocks = [np.zeros(32, np.uint16), np.full(32, 0x8000, np.uint16)]
    for e in EXPONENTS:
        for frac in (int(rng.choice([0, 0x7E])), int(rng.choice([0x7F, rng.integers(1, 0x7F)]))):
            top = np.uint16(e << 7 | frac)
            # The maximum with random company spread over 16 binades below it, either sign.
            rest = (rng.integers(0, 1 << 15, 32) % np.maximum(int(top), 1)).astype(np.uint16)
            rest |= (rng.integers(0, 2, 32) << 15).astype(np.uint16)
            b = rest.copy()
            b[rng.integers(32)] = top | np.uint16(rng.integers(0, 2) << 15)
            blocks.append(b)
            # q4_1: +max and -max together (span = 2 max: overflows fp32 at the top exponents).
            pair = np.full(32, top, np.uint16)
            pair[rng.integers(32)] = top | 0x8000
            blocks.append(pair)
            # A constant block: zero span (q4_1's d is +0 whatever the exponent says).
            blocks.append(np.full(32, top | np.uint16(frac & 1) << 15, np.uint16))
            # Tiny span next to a large value (the adder's sticky path).
            wide = np.full(32, top, np.uint16)
            wide[rng.integers(32)] = np.uint16(rng.integers(0, 0x80))
            blocks.append(wide)
    blocks = sanitize(np.stack(blocks), ELEMENTS["bf16"])[0]
    void = ggml_bf16.void_blocks(blocks, fmt)
    assert 0 < void.sum() < len(blocks), f"{fmt}: the set must hold void and ordinary blocks"
    return blocks


def simulate(fmt: str, blocks: np.ndarray) -> np.ndarray:
    dut = Quantizer(fmt, 32, "bf16")
    nbytes = dut.fmt.block_bytes
    got: list[int] = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for row in blocks:
            ctx.set(dut.i.valid, 1)
            for k in range(32):
                ctx.set(dut.i.payload[k], int(row[k]))
            taken = False
            while not taken:  # q4_1 takes a 32-lane beat every 8 clocks (Quantizer.elems_per_clock)
                _, _, taken, valid, payload = await ctx.tick().sample(dut.i.ready, dut.o.valid, dut.o.payload)
                if valid:
                    got.append(payload)
        ctx.set(dut.i.valid, 0)
        for _ in range(60):
            if len(got) == len(blocks):
                break
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(got) == len(blocks)
    return np.array([list(v.to_bytes(nbytes, "little")) for v in got], np.uint8)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1"])
def test_boundary_blocks_match_golden(fmt):
    rng = np.random.default_rng([SEED, ord(fmt[1]), ord(fmt[3])])
    blocks = boundary_blocks(rng, fmt)
    got = simulate(fmt, blocks)
    want = ggml_bf16.quantize_blocks(blocks, fmt)
    bad = np.flatnonzero((got != want).any(axis=1))
    if bad.size:
        i = bad[0]
        pytest.fail(f"{fmt} (seed={SEED}): {bad.size} of {len(blocks)} blocks differ; block {i}\n"
                    f"  input  {' '.join(f'{v:04x}' for v in blocks[i])}\n"
                    f"  rtl    {got[i].tobytes().hex(' ')}\n  golden {want[i].tobytes().hex(' ')}")


def test_q8_0_rom_rows_are_the_golden_table():
    rom = S.q8_0_rom()
    _, i_sig, i_exp, void = ggml_bf16.q8_0_scale_table()
    for e in (*S.Q80_TINY_E, 8, 127, 254):
        for frac in range(128):
            pat = e << 7 | frac
            row = rom[(S.Q80_TINY_E.index(e) if e in S.Q80_TINY_E else S.Q80_NORMAL_SEL) * 128 + frac]
            assert row["void"] == void[pat], pat
            if not void[pat]:
                assert (1 << 23 | row["mi"]) == i_sig[pat]
                assert S.RB_BASE["q8_0"] - row["rb_off"] - e == i_exp[pat], pat


def test_q4_0_rom_rows_are_the_golden_table():
    rom = S.q4_0_rom()
    _, i_sig, i_exp, void = ggml_bf16.q4_0_scale_table()
    for e in (3, 100, 254):
        for frac in range(128):
            pat = e << 7 | frac
            assert not void[pat] and (1 << 23 | rom[frac]["mi"]) == i_sig[pat], pat
            assert S.RB_BASE["q4_0"] - rom[frac]["rb_off"] - e == i_exp[pat], pat
    assert void[S.Q40_VOID_MAX] and not void[S.Q40_VOID_MAX + 1]
