"""Golden dequantize vs gguf-py: every scale with every code, saturation, non-finite scale fields."""

from __future__ import annotations

import os

import numpy as np
import pytest

from kvpath import golden
from kvpath.config import get_format
from kvpath import stimulus as V
from kvpath.golden.oracle.gguf import gguf_dequantize

SEED = int(os.environ.get("KVPATH_SEED", "20251123"))
LONG = pytest.mark.skipif(os.environ.get("KVPATH_LONG") != "1", reason="long regression: set KVPATH_LONG=1")


def check(blocks: np.ndarray, fmt: str, what: str):
    vals, n_sat, n_bad = golden.dequantize_report(blocks, fmt)
    ref, n_inf, _ = gguf_dequantize(blocks, fmt)
    got, want = vals.view(np.uint16).reshape(-1), ref.view(np.uint16).reshape(-1)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (
        f"{what} (seed={SEED}): {bad.size} values differ; first at element {bad[0]}: "
        f"kvpath {got[bad[0]]:04x} gguf {want[bad[0]]:04x}, block "
        f"{blocks.reshape(-1, get_format(fmt).block_bytes)[bad[0] // 32].tobytes().hex(' ')}"
    )
    assert n_sat == n_inf, f"{what}: saturated count {n_sat}, gguf gave {n_inf} infinities (seed={SEED})"
    return n_sat, n_bad


def headers(d: np.ndarray, m: np.ndarray | None = None) -> np.ndarray:
    fields = [d] if m is None else [d, m]
    return np.stack(fields, axis=1).astype("<u2").view(np.uint8)


def test_q8_0_every_scale_with_every_code():
    d = np.repeat(V.FINITE, 8)
    codes = np.tile(np.arange(256, dtype=np.uint8).reshape(8, 32), (V.FINITE.size, 1))
    n_sat, n_bad = check(np.concatenate([headers(d), codes], axis=1), "q8_0", "q8_0 d x code")
    assert n_sat > 0 and n_bad == 0  # large d times large codes overflow FP16


def test_q4_0_every_scale_with_every_code():
    nib = np.arange(16, dtype=np.uint8)
    codes = np.tile(nib | (nib[::-1] << 4), (V.FINITE.size, 1))
    n_sat, _ = check(np.concatenate([headers(V.FINITE), codes], axis=1), "q4_0", "q4_0 d x code")
    assert n_sat > 0


# Zeros of both signs, the smallest subnormal, 1, -65504 and the largest negative subnormal;
# the long test sweeps many more.
Q4_1_SPECIAL = [0x0000, 0x8000, 0x0001, 0x3C00, 0xFBFF, 0x83FF]


def q4_1_blocks(d: np.ndarray, m: np.ndarray) -> np.ndarray:
    nib = np.arange(16, dtype=np.uint8)
    codes = np.tile(nib | (nib[::-1] << 4), (d.size, 1))
    return np.concatenate([headers(d, m), codes], axis=1)


def test_q4_1_every_d_with_every_code_for_chosen_m():
    rng = np.random.default_rng([SEED, 1])
    for m in Q4_1_SPECIAL + list(rng.choice(V.FINITE, 2)):
        check(q4_1_blocks(V.FINITE, np.full(V.FINITE.size, m, np.uint16)), "q4_1", f"q4_1 every d, m={m:04x}")


def test_q4_1_every_m_with_every_code_for_chosen_d():
    rng = np.random.default_rng([SEED, 2])
    for d in Q4_1_SPECIAL + list(rng.choice(V.FINITE, 2)):
        check(q4_1_blocks(np.full(V.FINITE.size, d, np.uint16), V.FINITE), "q4_1", f"q4_1 every m, d={d:04x}")


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1"])
def test_random_blocks(fmt):
    rng = np.random.default_rng([SEED, 3, get_format(fmt).block_bytes])
    f = get_format(fmt)
    blocks = rng.integers(0, 256, (100_000, f.block_bytes)).astype(np.uint8)
    hdr = blocks[:, : f.header_bytes].copy().view(np.uint16)
    hdr[(hdr & 0x7C00) == 0x7C00] &= 0xBBFF  # keep scale fields finite here
    blocks[:, : f.header_bytes] = hdr.view(np.uint8)
    check(blocks, fmt, f"{fmt} random blocks")
    # A (rows, blocks) array keeps its leading shape.
    vals = golden.dequantize(blocks[:64].reshape(4, 16 * f.block_bytes), fmt)
    assert vals.shape == (4, 16 * 32) and vals.dtype == np.float16


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1"])
def test_nonfinite_scale_fields_are_sanitized_and_counted(fmt):
    f = get_format(fmt)
    rng = np.random.default_rng([SEED, 4, f.block_bytes])
    n = V.NONFINITE.size
    blocks = rng.integers(0, 256, (n, f.block_bytes)).astype(np.uint8)
    fields = np.stack([rng.permutation(V.NONFINITE) for _ in f.scale_fields], axis=1)
    blocks[:, : f.header_bytes] = fields.astype("<u2").view(np.uint8)
    _, n_bad = check(blocks, fmt, f"{fmt} non-finite scale fields")
    assert n_bad == n * len(f.scale_fields), f"non-finite scale count {n_bad} (seed={SEED})"
    # The rule spelled out: a +Inf d reads as 65504 and a NaN d as +0.
    one = np.zeros((2, f.block_bytes), np.uint8)
    one[:, : f.header_bytes] = np.array([[0x7C00] + [0] * (len(f.scale_fields) - 1), [0x7E01] + [0] * (len(f.scale_fields) - 1)], "<u2").view(np.uint8)
    one[:, f.header_bytes :] = 0x99  # q8_0: code -103; q4: code 9
    vals, _, n_bad = golden.dequantize_report(one, fmt)
    code = -103 if fmt == "q8_0" else (1 if fmt == "q4_0" else 9)
    want_inf = np.float32(65504) * code
    assert n_bad == 2
    assert vals[0, 0] == np.float16(np.clip(want_inf, -65504, 65504)) and vals[1, 0] == 0


def test_saturation_values_and_counts():
    # q8_0 with d = 65504: every code beyond +/-1 overflows FP16 and must read +/-65504.
    blocks = np.zeros((1, 34), np.uint8)
    blocks[0, :2] = np.array([0x7BFF], "<u2").view(np.uint8)
    blocks[0, 2:] = np.arange(-16, 16, dtype=np.int8).view(np.uint8)
    vals, n_sat, _ = golden.dequantize_report(blocks, "q8_0")
    q = np.arange(-16, 16)
    assert n_sat == int((np.abs(q) > 1).sum())
    assert np.array_equal(vals[0, np.abs(q) > 1], np.sign(q[np.abs(q) > 1]) * np.float16(65504))


@pytest.mark.long
@LONG
def test_long_q4_1_every_m_for_many_d():
    rng = np.random.default_rng([SEED, 5])
    for d in rng.choice(V.FINITE, 256, replace=False):
        check(q4_1_blocks(np.full(V.FINITE.size, d, np.uint16), V.FINITE), "q4_1", f"q4_1 every m, d={d:04x}")
