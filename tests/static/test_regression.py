"""Static-scale RTL (cache + quantizer / dequantizer) bit-exact against the golden model, through the
bulk harness with MEMSETs interleaved in the command stream, under bubbles and back-pressure."""

import pytest

from kvpath.config import STATIC_FORMATS
from kvpath.sim.static import regression as static_regression

SEED = 11


def check(result):
    assert result.mismatches == 0, "\n".join(result.details)
    assert result.steady_beats_per_cycle > 0.99, result.steady_beats_per_cycle


@pytest.mark.parametrize("target,fmt,lanes,elem", [
    ("quantizer", "int4_pc", 16, "fp16"),
    ("dequantizer", "int8_ph", 16, "bf16"),
])
def test_icarus_short(build_root, target, fmt, lanes, elem):
    check(static_regression.run(target, fmt, lanes, "icarus", 2048, SEED, build_root, elem=elem))


@pytest.mark.long
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("elem", ["fp16", "bf16"])
@pytest.mark.parametrize("fmt", STATIC_FORMATS)
@pytest.mark.parametrize("target,lanes", [("quantizer", 8), ("quantizer", 32), ("dequantizer", 16),
                                          ("dequantizer", 128)])
def test_matrix(build_root, simulator, elem, fmt, target, lanes):
    if simulator == "icarus" and lanes == 128 and fmt.endswith("_pc"):
        pytest.skip("Icarus needs about 10 minutes for 128 lanes of 2048-bit cache rows; Verilator covers it")
    vectors = 65536 if simulator == "verilator" else 8192
    check(static_regression.run(target, fmt, lanes, simulator, vectors, SEED, build_root, elem=elem))


def test_non_static_format_refused(build_root):
    with pytest.raises(ValueError, match="static"):
        static_regression.run("quantizer", "q8_0", 16, "icarus", 64, SEED, build_root)
