"""Every finite FP16 scale with every code through the Dequantizer RTL, on Verilator (long runs).

q8_0 and q4_0: all 63,488 finite d values x all codes; q4_1: all d against the m extremes and
seven seeded random m values x all codes. One block per beat (32 lanes), no pauses, compared bit
for bit with gguf (``kvpath.golden.oracle.gguf.gguf_dequantize`` holds the reference rule).
"""

import numpy as np
import pytest

from kvpath.config import get_format
from kvpath.sim.datapath import regression
from kvpath.sim.lib import harness

from kvpath.golden.oracle.gguf import gguf_dequantize

FINITE = np.arange(1 << 16, dtype=np.uint16)
FINITE = FINITE[(FINITE & 0x7C00) != 0x7C00]
SEED = 20261127
M_VALUES = np.concatenate([
    np.array([0x0000, 0x8000, 0x0001, 0x83FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0xFBFF], np.uint16),
    np.random.default_rng(SEED).choice(FINITE, 7, replace=False),
])


def every_scale_blocks(fmt: str) -> np.ndarray:
    f = get_format(fmt)
    if fmt == "q8_0":
        codes = np.arange(256, dtype=np.uint8).reshape(8, 32)
        hdr = np.repeat(FINITE, 8)
        body = np.tile(codes, (len(FINITE), 1))
    else:
        q = np.arange(16, dtype=np.uint8)
        nibbles = q | (q[::-1] << 4)
        if fmt == "q4_0":
            hdr = FINITE
        else:
            d, m = np.meshgrid(FINITE, M_VALUES, indexing="ij")
            hdr = np.stack([d.reshape(-1), m.reshape(-1)], axis=1)
        body = np.tile(nibbles, (len(hdr), 1))
    header = np.ascontiguousarray(hdr, dtype=np.uint16).reshape(len(body), -1).view(np.uint8)
    blocks = np.concatenate([header, body], axis=1)
    assert blocks.shape[1] == f.block_bytes
    return blocks


@pytest.mark.long
@pytest.mark.verilator
@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1"])
def test_every_scale_every_code(fmt, build_root):
    blocks = every_scale_blocks(fmt)
    values, exp_sat, exp_nonfinite = gguf_dequantize(blocks, fmt)
    exp = values.reshape(-1).view(np.uint16).astype(np.int64)
    runs = regression.rtl_dequantize(blocks, fmt, 32, simulator="verilator",
                                     build_dir=build_root / f"deq_every_{fmt}",
                                     throttles=((harness.NO_PAUSE, harness.NO_PAUSE),))
    got = runs[0].outputs.view(np.uint16).reshape(-1).astype(np.int64)
    bad = np.flatnonzero(got != exp)
    assert len(got) == len(exp)
    assert not len(bad), (f"seed {SEED}: {fmt}: {len(bad)} wrong elements; first {bad[0]} "
                          f"(block {bad[0] // 32}): got {got[bad[0]]:04x} expected {exp[bad[0]]:04x}")
    assert runs[0].counters == {"saturated_count": exp_sat, "nonfinite_count": exp_nonfinite}
