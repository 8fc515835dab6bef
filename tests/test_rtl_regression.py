"""The quantizer and dequantizer RTL, held byte for byte to the golden model on Icarus and Verilator.

Each parameter set builds in its own directory. Every run includes a no-pause pass (which must reach
0.99 beats per clock) and throttled passes with random input bubbles and output backpressure.
The default matrix keeps the suite short; KVPATH_LONG=1 runs every format x lanes x simulator with
larger vector counts.
"""

import itertools
import os

import pytest

from kvpath.config import DEQUANT_LANES, GGML_FORMATS, QUANT_LANES
from kvpath.sim import regression

LONG = os.environ.get("KVPATH_LONG") == "1"

SEED = 20261123


def cases():
    for fmt in GGML_FORMATS:
        # Icarus: every lane count, short runs.
        for lanes in QUANT_LANES:
            yield "quantizer", fmt, lanes, "icarus", 4096
        for lanes in (8, 32, 128):
            yield "dequantizer", fmt, lanes, "icarus", 4096
        # Verilator: the default lanes with more than a million elements.
        yield "quantizer", fmt, 16, "verilator", 1 << 20
        yield "dequantizer", fmt, 16, "verilator", 1 << 20
    if LONG:
        for fmt, lanes, sim in itertools.product(GGML_FORMATS, QUANT_LANES, ("icarus", "verilator")):
            yield pytest.param("quantizer", fmt, lanes, sim, 1 << 22 if sim == "verilator" else 1 << 16,
                               marks=pytest.mark.long, id=f"long-quantizer-{fmt}-l{lanes}-{sim}")
        for fmt, lanes, sim in itertools.product(GGML_FORMATS, DEQUANT_LANES, ("icarus", "verilator")):
            yield pytest.param("dequantizer", fmt, lanes, sim, 1 << 22 if sim == "verilator" else 1 << 16,
                               marks=pytest.mark.long, id=f"long-dequantizer-{fmt}-l{lanes}-{sim}")


@pytest.mark.parametrize("target,fmt,lanes,simulator,vectors", list(cases()))
def test_bit_exact(target, fmt, lanes, simulator, vectors, build_root):
    result = regression.run(target, fmt, lanes, simulator, vectors, SEED, build_root)
    print(result.summary(), f"wall_s={result.wall_s:.1f}")
    assert result.mismatches == 0, f"seed {SEED}: " + "\n".join(result.details)
    # Short runs are dominated by pipeline fill; the steady-state rate must be one beat per clock
    # whatever the run length, and long runs must reach 0.99 overall.
    assert result.steady_beats_per_cycle >= 0.999, result.summary()
    if vectors >= 1 << 20:
        assert result.beats_per_cycle >= 0.99, result.summary()
