"""The golden model's public API: argument checks, shapes, dtypes, reports and exported tables."""

from __future__ import annotations

import numpy as np
import pytest

from kvpath import golden
from kvpath.config import GGML_FORMATS, get_format


@pytest.mark.parametrize("fmt", GGML_FORMATS)
def test_shapes_and_dtypes(fmt):
    f = get_format(fmt)
    x = np.linspace(-3, 3, 2 * 3 * 64).astype(np.float16).reshape(2, 3, 64)
    q = golden.quantize(x, fmt)
    assert q.dtype == np.uint8 and q.shape == (2, 3, 2 * f.block_bytes)
    y = golden.dequantize(q, fmt)
    assert y.dtype == np.float16 and y.shape == x.shape
    # Exact values are the quantize/dequantize tests' business; here only that the round trip
    # lands elements back in their places (sign of every element clearly away from zero).
    assert np.all(np.sign(y[np.abs(x) > 0.5]) == np.sign(x[np.abs(x) > 0.5]))
    assert golden.quantize(np.zeros((0, 32), np.float16), fmt).shape == (0, f.block_bytes)


@pytest.mark.parametrize("bad", [np.zeros(32, np.float32), np.zeros(32, np.int16), [0.0] * 32])
def test_quantize_rejects_non_float16(bad):
    with pytest.raises(ValueError, match="float16"):
        golden.quantize(bad, "q8_0")


@pytest.mark.parametrize("shape", [(33,), (4, 48), ()])
def test_quantize_rejects_bad_last_dimension(shape):
    with pytest.raises(ValueError, match="multiple of 32"):
        golden.quantize(np.zeros(shape, np.float16), "q4_0")


def test_unknown_format_and_bad_block_bytes():
    with pytest.raises(ValueError, match="unknown format"):
        golden.quantize(np.zeros(32, np.float16), "q5_0")
    with pytest.raises(ValueError, match="multiple of 20 bytes"):
        golden.dequantize(np.zeros(21, np.uint8), "q4_1")
    with pytest.raises(ValueError, match="uint8"):
        golden.dequantize(np.zeros(34, np.int8), "q8_0")


@pytest.mark.parametrize("fmt", GGML_FORMATS)
def test_reports_agree_with_plain_calls(fmt):
    x = np.array([np.inf, -np.inf, np.nan, 1.0] * 8, np.float16)
    q, n = golden.quantize_report(x, fmt)
    assert n == 24 and np.array_equal(q, golden.quantize(x, fmt))
    y, n_sat, n_bad = golden.dequantize_report(q, fmt)
    assert np.array_equal(y.view(np.uint16), golden.dequantize(q, fmt).view(np.uint16))
    assert n_bad == 0


def test_sanitize_returns_bits_and_count():
    bits = np.array([0x7C00, 0x7E00, 0x3C00, 0xFC00], np.uint16)
    out, n = golden.sanitize(bits)
    assert n == 3 and out.tolist() == [0x7BFF, 0x0000, 0x3C00, 0xFBFF]


def test_rom_tables_are_exported_for_the_rtl():
    for table in (golden.recip_table_q8_0(), golden.recip_table_q4_0()):
        assert len(table.id_sig) == 1024 and table.id_sig.dtype == np.int64
        assert not table.id_sig.flags.writeable  # shared, cached: callers must not modify
    sig, exp = golden.fp32_div(np.array([3 << 22]), np.array([0]), 15)
    assert sig[0] * 2.0 ** exp[0] == np.float32(3 << 22) / np.float32(15)
    sig, exp = golden.fp32_recip(np.array([3 << 22]), np.array([-22]))
    assert sig[0] * 2.0 ** exp[0] == np.float32(1) / np.float32(3)
