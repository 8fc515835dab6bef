"""The eval's K/V path (kvpath/eval/kvio.py) and rotation, without the model: what the driver's model
backend reads back equals a direct golden quantize -> dequantize of the same K/V, bit for bit; reading a
chunk back once equals reading after every token; the Hadamard matrix is llama.cpp's."""

import os

import numpy as np
import pytest

from kvpath import golden
from kvpath.eval import kvio, rotation
from kvpath.eval.kvio import DriverKV, KVStore

SEED = int(os.environ.get("KVPATH_SEED", "11"))
FORMATS = ("q8_0", "q4_0", "q4_1", "mxfp4")


def kv_like(rng, tokens, heads=3, head_dim=64) -> np.ndarray:
    """K-like vectors: unit-scale channels plus outlier channels in the second block (as SmolLM2's keys)."""
    x = rng.standard_normal((tokens, heads, head_dim)).astype(np.float32) * 2.3
    x[..., 42:] *= rng.uniform(1, 7, size=head_dim - 42).astype(np.float32)
    return x


@pytest.mark.parametrize("fmt", FORMATS)
def test_driver_reads_equal_golden_roundtrip(fmt):
    rng = np.random.default_rng(SEED)
    k, v = kv_like(rng, 24), kv_like(rng, 24)
    engine = DriverKV(fmt, kv_heads=3, head_dim=64, max_tokens=32)
    k_hat, v_hat = engine.roundtrip(k, v)
    for name, x, got in (("K", k, k_hat), ("V", v, v_hat)):
        x16 = x.astype(np.float16)
        want = golden.dequantize(golden.quantize(x16, fmt), fmt).astype(np.float32)
        assert got.dtype == np.float32 and got.shape == x.shape
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), \
            f"seed={SEED} fmt={fmt} {name}: {np.sum(got != want)} elements differ from golden quantize->dequantize"


def test_chunk_read_equals_per_token_reads():
    """Quantization is per token row, so a row read after the whole chunk is the row read right after
    its own token was appended (what decoding token by token would have attended to)."""
    rng = np.random.default_rng(SEED)
    T = 10
    k, v = kv_like(rng, T), kv_like(rng, T)
    engine = DriverKV("q4_0", kv_heads=3, head_dim=64, max_tokens=16)
    per_token = []
    engine.cache.reset_sequence(0)
    for t in range(T):
        engine.cache.append(0, k[t:t + 1].astype(np.float16).reshape(1, 3, 64),
                            v[t:t + 1].astype(np.float16).reshape(1, 3, 64))
        per_token.append((engine.read(0), engine.read(1)))
    k_all, v_all = engine.roundtrip(k, v)
    for t, (k_t, v_t) in enumerate(per_token):
        assert k_t.shape[0] == t + 1
        assert np.array_equal(k_t, k_all[:t + 1]), f"seed={SEED}: K rows after token {t} differ from the chunk read"
        assert np.array_equal(v_t, v_all[:t + 1]), f"seed={SEED}: V rows after token {t} differ from the chunk read"


def test_store_mixed_and_float_formats():
    rng = np.random.default_rng(SEED)
    k, v = kv_like(rng, 8), kv_like(rng, 8)
    k_hat, v_hat = KVStore("q8_0", "q4_0", 3, 64, 8)(k, v)
    assert np.array_equal(k_hat, golden.dequantize(golden.quantize(k.astype(np.float16), "q8_0"), "q8_0").astype(np.float32))
    assert np.array_equal(v_hat, golden.dequantize(golden.quantize(v.astype(np.float16), "q4_0"), "q4_0").astype(np.float32))
    k_hat, v_hat = KVStore("f32", "f16", 3, 64, 8)(k, v)
    assert np.array_equal(k_hat, k) and np.array_equal(v_hat, v.astype(np.float16).astype(np.float32))
    assert kvio.bits_per_element("q4_0") == 4.5 and kvio.bits_per_element("mxfp4") == 4.25
    with pytest.raises(ValueError, match="static"):
        KVStore("int8_ph", "q8_0", 3, 64, 8)


def test_hadamard_is_llama_cpp_construction():
    assert np.allclose(rotation.hadamard(2) * np.sqrt(2), [[1, 1], [1, -1]], atol=1e-6)
    h = rotation.hadamard(64).astype(np.float64)
    assert np.allclose(h @ h.T, np.eye(64), atol=1e-6) and np.array_equal(h, h.T)
    # Row by row: H[i+s][j] = H[i][j+s] = H[i][j], H[i+s][j+s] = -H[i][j].
    ref = np.zeros((64, 64))
    ref[0, 0] = 1 / 8
    s = 1
    while s < 64:
        for i in range(s):
            for j in range(s):
                ref[i + s, j] = ref[i, j + s] = ref[i, j]
                ref[i + s, j + s] = -ref[i, j]
        s *= 2
    assert np.allclose(h, ref, atol=1e-7)
    assert rotation.k_size(64) == 64 and rotation.k_size(256) == 256 and rotation.k_size(96) == 0
    x = np.random.default_rng(SEED).standard_normal((5, 3, 128)).astype(np.float32)
    assert np.allclose(rotation.unrotate(rotation.rotate(x, 64), 64), x, atol=1e-5), f"seed={SEED}"


def test_rtl_rotation_is_the_golden_unit_on_fp16_inputs():
    """``hadamard_rtl``: K/V rounded to FP16, then the bit-exact unit; the same FP16 bits as the float32
    rotation of the FP16 values rounded once more, except where float32's extra rounding moved an
    ulp (it sums in float32 first): at most 1 ulp apart, and exactly H x rounded once (float64 holds
    the sums exactly)."""
    rng = np.random.default_rng(SEED)
    x = kv_like(rng, 40)
    got = rotation.rotate_fp16_exact(x, 64).astype(np.float16).view(np.uint16)
    x16 = x.astype(np.float16).astype(np.float64)
    h = rotation.hadamard(64).astype(np.float64) * 8   # +-1 exactly
    want = ((x16.reshape(-1, 64) @ h.T) / 8).astype(np.float16).view(np.uint16).reshape(got.shape)
    assert np.array_equal(got, want), f"seed={SEED}"
    float32 = rotation.rotate(x16.astype(np.float32), 64)   # llama.cpp's arithmetic
    ulps = np.abs(got.astype(np.int32) - float32.astype(np.float16).view(np.uint16).astype(np.int32))
    assert ulps.max() <= 1, f"seed={SEED}"


def test_tiered_store_is_what_the_tiered_driver_reads_token_by_token():
    """The eval reads a tiered configuration once per chunk (``TieredRows``: cold and hot rows of every
    position, and which of them query t takes). That must be, for every t, exactly what
    ``TieredKVCache`` returns when read right after token t, with its hot ring of sinks + window."""
    from kvpath.driver.kvcache import KVCache
    from kvpath.driver.tiered import TieredKVCache
    from kvpath.eval.forward import attention
    from kvpath.golden.kvcache import KVCacheModel

    rng = np.random.default_rng(SEED)
    T, sinks, window = 14, 2, 4
    k, v = kv_like(rng, T), kv_like(rng, T)
    k_rows, v_rows = KVStore("mxfp4", "mxfp4", 3, 64, 16, hot="q8_0", window=window, sinks=sinks)(k, v)
    engines = [DriverKV(fmt, kv_heads=3, head_dim=64, max_tokens=16).cache for fmt in ("q8_0", "mxfp4")]
    cache = TieredKVCache(*[KVCache(KVCacheModel(e.config, mem_bytes=1 << 20), e.config) for e in engines])
    cache.configure(n_sink=sinks, window=window, layers=1, kv_heads=3, head_dim=64, kv_max_tokens=16)
    mask = k_rows.hot_mask(T)
    for t in range(T):
        cache.append(0, k[t].astype(np.float16)[None], v[t].astype(np.float16)[None])
        for side, rows in ((0, k_rows), (1, v_rows)):
            for head in range(3):
                values, positions, hot = cache.read(0, 0, head, side)
                assert positions.tolist() == list(range(t + 1))
                assert hot.tolist() == mask[t, :t + 1].tolist(), f"seed={SEED}: token {t}"
                want = np.where(hot[:, None], rows.hot[:t + 1, head], rows.cold[:t + 1, head])
                assert np.array_equal(values.astype(np.float32), want), f"seed={SEED}: token {t} head {head}"
    # Attention over tiered rows is attention over, for each query, the rows it was given.
    q = rng.standard_normal((T, 9, 64)).astype(np.float32)
    out = attention(q, k_rows, v_rows)
    for t in (0, 5, T - 1):
        kt = np.where(mask[t, :, None, None], k_rows.hot, k_rows.cold)
        vt = np.where(mask[t, :, None, None], v_rows.hot, v_rows.cold)
        np.testing.assert_allclose(out[t], attention(q, kt, vt)[t], rtol=1e-6, atol=1e-6)  # float32 sums
