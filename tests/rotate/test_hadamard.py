"""The Hadamard rotation: golden model against exact float64 arithmetic and llama.cpp's float32 product,
and the RTL unit against the golden model on Icarus and Verilator, integers compared."""

from __future__ import annotations

import numpy as np
import pytest

from kvpath.golden.hadamard import compare_with_float32, fwht_int, ref_hadamard, size_exponent
from kvpath.sim.rotate import regression

SEED = 20261205


def sylvester(n: int) -> np.ndarray:
    i = np.arange(n)
    return np.where(np.bitwise_count(i[:, None] & i[None, :]) & 1, -1, 1).astype(np.int64)


@pytest.mark.parametrize("n", [4, 16, 64, 256])
def test_fwht_int_is_the_sylvester_product(n):
    rng = np.random.default_rng(SEED)
    v = rng.integers(-(1 << 40), 1 << 40, (50, n))
    assert np.array_equal(fwht_int(v, n), v @ sylvester(n)), f"seed {SEED}"


@pytest.mark.parametrize("n", [16, 64, 256])
def test_golden_is_h_x_correctly_rounded(n):
    """float64 holds every sum exactly (|fx| < 2**48 < 2**53) and the scale is a power of two, so
    numpy's float64 -> float16 cast (RNE) of H x is the correctly rounded result to match bit for bit
    (saturation aside: numpy gives Inf where kvpath gives 65504 and counts)."""
    x = regression.stimulus(n, 400, SEED)
    y, nonfinite, saturated = ref_hadamard(x, n)
    # kvpath's input rule, written independently: +/-Inf -> +/-65504, NaN -> 0.
    inf, nan = (x & 0x7FFF) == 0x7C00, (x & 0x7FFF) > 0x7C00
    xs = np.where(inf, (x & 0x8000) | 0x7BFF, np.where(nan, 0, x)).astype(np.uint16)
    with np.errstate(over="ignore"):
        want = ((xs.view(np.float16).astype(np.float64) @ sylvester(n)) / np.sqrt(n)).astype(np.float16)
    want = want.view(np.uint16)
    over = (want & 0x7FFF) == 0x7C00
    want = np.where(over, (want & 0x8000) | 0x7BFF, want)
    assert np.array_equal(y, want), f"seed {SEED}"
    assert saturated == int(over.sum()) > 0 and nonfinite == int((inf | nan).sum()) > 0
    assert y[4, :].tolist().count(0x8000) == n   # a -2**-24 spread over n rounds to -0 everywhere


def test_close_to_llama_cpp_float32():
    """llama.cpp multiplies in float32 and rounds once more when it stores FP16: at most 1 ulp apart."""
    r = compare_with_float32(2000, 64, SEED)   # what docs/numerics.md quotes
    assert r["elements"] == 128000 and r["max_ulp"] <= 1, f"seed {SEED}: {r}"


def test_sizes_that_are_not_powers_of_four_are_refused():
    assert size_exponent(64) == 3 and size_exponent(256) == 4
    for n in (2, 8, 32, 128, 96):
        with pytest.raises(ValueError, match="4\\*\\*k"):
            size_exponent(n)


def test_handshake_paths():
    """Front and back never stall: with a beat waiting at the output, neither o.valid nor i.ready
    follows o.ready within a cycle (i.ready is the front queue's room register)."""
    from kvpath.hdl.rotate.hadamard import Hadamard
    from kvpath.sim.lib.handshake import check_ready_paths

    check_ready_paths(Hadamard(64, 16), SEED)


def check(result):
    assert result.mismatches == 0, "\n".join(result.details) + f"\nseed {SEED}"


@pytest.mark.parametrize("n,lanes", [(64, 16), *(pytest.param(n, l, marks=pytest.mark.long)
                                                  for n, l in ((256, 16), (16, 16), (4, 16), (64, 32)))])
def test_rtl_icarus(build_root, n, lanes):
    check(regression.run(n, lanes, "icarus", 64, SEED, build_root))


@pytest.mark.verilator
def test_rtl_verilator(build_root):
    result = regression.run(64, 16, "verilator", 2048, SEED, build_root)
    check(result)
    assert result.steady_beats_per_cycle > 0.99, result   # one beat per clock without pauses


@pytest.mark.long
@pytest.mark.verilator
@pytest.mark.parametrize("n,lanes", [(256, 16), (64, 8), (16, 4)])
def test_rtl_verilator_long(build_root, n, lanes):
    check(regression.run(n, lanes, "verilator", 8192, SEED, build_root))


def test_generate_writes_the_rotation_unit(tmp_path, capsys):
    """`kvpath generate --rotation N` builds the engine with the rotation on its write path and adds
    kvpath_hadamard (the unit these tests hold to the golden model) for the attention side; a size the
    unit does not implement is a clear error."""
    from kvpath.cli import main

    assert main(["generate", "-o", str(tmp_path / "ok"), "--rotation", "64", "--lanes", "16"]) == 0
    text = (tmp_path / "ok" / "kvpath_hadamard.v").read_text()
    assert "module kvpath_hadamard(" in text and "input [255:0] i__payload;" in text
    assert "module \\kvpath_axi_top.kvcache.engine.rotation " in (tmp_path / "ok" / "kvpath_axi_top.v").read_text()
    assert "wrote " + str(tmp_path / "ok" / "kvpath_hadamard.v") in capsys.readouterr().out
    assert main(["generate", "-o", str(tmp_path / "bad"), "--rotation", "32"]) == 2
    assert "rotation must be 0, 16, 64 or 256" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "kvpath_hadamard.v").exists()
    assert main(["generate", "-o", str(tmp_path / "bf16"), "--rotation", "64", "--input", "bf16"]) == 2
