"""The software fast path (fast.py) against the exact lane chains it stands in for.

test_golden_quantize already compares both paths with gguf; these tests check the fast path's
own claims directly: the q4 screen flags every element whose code depends on fp32 rounding,
and it flags few elements on ordinary data (otherwise the fast path would silently be slow).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from kvpath.golden.ggml import fast, q4_0, q4_1, q8_0
from kvpath import stimulus as V

SEED = int(os.environ.get("KVPATH_SEED", "20251123"))
UNITS = {"q8_0": q8_0, "q4_0": q4_0, "q4_1": q4_1}


CODES = {"q4_0": fast.q4_0_codes, "q4_1": fast.q4_1_codes}


@pytest.mark.parametrize("fmt", ["q4_0", "q4_1"])
def test_screen_flags_every_element_whose_code_it_could_get_wrong(fmt):
    rng = np.random.default_rng([SEED, 1, fmt == "q4_1"])
    x = np.concatenate([V.near_ties(fmt, rng, 300, tol=2.0**-10), V.exact_ties(fmt, rng, 4000)])
    bits = x.view(np.uint16)
    unit = UNITS[fmt]
    _, c = unit.header(bits)
    exact = unit.lane(bits, c)
    unpatched, flagged_idx = CODES[fmt](bits, c, None, fast.Workspace())
    flagged = np.zeros(bits.size, bool)
    flagged[flagged_idx] = True
    wrong = (unpatched != exact).reshape(-1)
    assert wrong.any(), "the vectors should contain elements where rounding decides the code"
    assert not (wrong & ~flagged).any(), f"an element the screen got wrong was not flagged (seed={SEED})"
    assert np.array_equal(CODES[fmt](bits, c, unit.lane, fast.Workspace()), exact), f"seed={SEED}"


@pytest.mark.parametrize("fmt", ["q4_0", "q4_1"])
def test_screen_flags_few_elements_on_ordinary_data(fmt):
    rng = np.random.default_rng([SEED, 2, fmt == "q4_1"])
    bits = V.heavy_tailed_blocks(rng, 8192).view(np.uint16)
    _, c = UNITS[fmt].header(bits)
    _, flagged_idx = CODES[fmt](bits, c, None, fast.Workspace())
    assert flagged_idx.size < 1e-3 * bits.size, f"{flagged_idx.size} of {bits.size} flagged (seed={SEED})"


def fused_vs_lane(rows, exp_fields, rng):
    for m in rows:
        for exp_field in exp_fields:
            big = (exp_field << 10) | int(m)
            bits = V.packed_with(big, rng).view(np.uint16)  # every pattern with |x| <= |max|
            _, c = q8_0.header(bits)
            got = fast.q8_0_codes(bits, c, fast.Workspace())
            assert np.array_equal(got, q8_0.lane(bits, c)), f"max {big:04x} (seed={SEED})"


def test_q8_0_fused_rounding_equals_lane():
    """Sampled reciprocal-table rows, each with every finite pattern of smaller magnitude."""
    rng = np.random.default_rng([SEED, 3])
    fused_vs_lane(rng.choice(1024, 64, replace=False), (1, 30), rng)


@pytest.mark.long
@pytest.mark.skipif(os.environ.get("KVPATH_LONG") != "1", reason="long regression: set KVPATH_LONG=1")
def test_long_q8_0_fused_rounding_every_table_row():
    fused_vs_lane(range(1024), (1, 15, 30), np.random.default_rng([SEED, 4]))
