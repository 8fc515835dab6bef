"""Mixed precision by token age (driver/tiered.py) over two engines on the model and sim backends: after
every token, a read gives the hot engine's rows for exactly the sinks and the newest tokens, the cold
engine's for the rest, each bit-exact with the golden quantize -> dequantize of its format; the
byte counters show what the read cost."""

from __future__ import annotations

import numpy as np
import pytest

from kvpath import golden, layout
from kvpath.driver.kvcache import KVCache
from kvpath.driver.tiered import TieredKVCache, read_bits
from kvpath.golden.hadamard import ref_hadamard
from tests.driver.test_kvcache import SEED, backend, sim_default, small, tokens  # noqa: F401 (fixture)

DIMS = dict(layers=2, kv_heads=2, head_dim=64)
SINKS, WINDOW, COLD_CAP = 2, 3, 16


def tiered(backend, hot="q8_0", cold="mxfp4", cap=COLD_CAP, rotation=0):
    caches = []
    for fmt in (hot, cold):
        config = small(fmt, rotation=rotation)
        caches.append(KVCache(backend(config), config))
    cache = TieredKVCache(*caches)
    cache.configure(n_sink=SINKS, window=WINDOW, kv_max_tokens=cap, **DIMS)
    return cache


def want_bits(x: np.ndarray, fmt: str, rotation: int = 0) -> np.ndarray:
    if rotation:
        x = ref_hadamard(x.view(np.uint16), rotation)[0].astype(np.uint16).view(x.dtype)
    return golden.dequantize(golden.quantize(x, fmt), fmt, x.dtype).view(np.uint16)


def check_step(cache: TieredKVCache, toks, t: int, hot_fmt: str, cold_fmt: str, layer: int, head: int, kv: int,
               rotation: int = 0):
    values, positions, hot = cache.read(0, layer, head, kv)
    oldest_cold = max(0, t + 1 - COLD_CAP)
    want_pos = sorted(set(range(oldest_cold, t + 1)) | set(range(min(SINKS, t + 1))))
    assert positions.tolist() == want_pos, f"after token {t} (seed={SEED})"
    want_hot = (positions < SINKS) | (t - positions < WINDOW)
    assert hot.tolist() == want_hot.tolist(), f"after token {t}: hot flags (seed={SEED})"
    x = np.stack([toks[p][kv][layer, head] for p in positions])
    want = np.where(want_hot[:, None], want_bits(x, hot_fmt, rotation), want_bits(x, cold_fmt, rotation))
    got = values.view(np.uint16)
    bad = np.argwhere(got != want)
    assert bad.size == 0, (f"after token {t}: layer {layer} head {head} {'KV'[kv]}: {len(bad)} elements differ, "
                           f"first at {bad[0].tolist()} (seed={SEED})")


@sim_default
@pytest.mark.parametrize("rotation", [64, pytest.param(0, marks=pytest.mark.long)])
def test_reads_take_sinks_and_window_hot_the_rest_cold(backend, rotation):
    """The recommended mode (docs/formats.md) with rotation=64: both engines rotate on their write path."""
    rng = np.random.default_rng([SEED, 31])
    cache = tiered(backend, rotation=rotation)
    toks = tokens(rng, 20, 2, 2, 64)  # past the cold ring's 16: it evicts 0..3, the hot ring keeps 0, 1
    for t, (k, v) in enumerate(toks):
        cache.append(0, k, v)
        check_step(cache, toks, t, "q8_0", "mxfp4", t % 2, (t // 2) % 2, t % 2, rotation)
    for layer in range(2):
        for head in range(2):
            for kv in (0, 1):
                check_step(cache, toks, len(toks) - 1, "q8_0", "mxfp4", layer, head, kv, rotation)


def test_read_costs_what_read_bits_says(backend):
    rng = np.random.default_rng([SEED, 32])
    cache = tiered(backend, cap=64)
    for k, v in tokens(rng, 40, 2, 2, 64):
        cache.append(0, k, v)
    before = [c.counters()["ddr_bytes_read"] for c in (cache.hot, cache.cold)]
    cache.read(0, 1, 0, 0)
    moved = sum(c.counters()["ddr_bytes_read"] - b for c, b in zip((cache.hot, cache.cold), before))
    rows = layout.row_bytes(cache.hot.config, 64) * (SINKS + WINDOW) + layout.row_bytes(cache.cold.config, 64) * 40
    assert moved == rows
    # q8_0 rows and mxfp4 rows of 64 elements are whole blocks: bytes read = bits * elements / 8.
    assert moved * 8 == pytest.approx(read_bits("mxfp4", "q8_0", 40, SINKS + WINDOW) * 40 * 64, abs=1e-9)


def test_engines_must_agree():
    from kvpath.golden.kvcache import KVCacheModel

    caches = [KVCache(KVCacheModel(small(f)), small(f)) for f in ("q8_0", "mxfp4")]
    cache = TieredKVCache(*caches)
    with pytest.raises(ValueError, match="fewer than the hot ring"):
        cache.configure(n_sink=4, window=12, kv_max_tokens=8, **DIMS)
    cache.configure(n_sink=SINKS, window=WINDOW, kv_max_tokens=COLD_CAP, **DIMS)
    k = np.zeros((2, 2, 64), np.float16)
    cache.append(0, k, k)
    cache.hot.reset_sequence(0)  # one engine reset alone: the next append must say so
    with pytest.raises(Exception, match="hot engine is at position 0, the cold one at 1"):
        cache.append(0, k, k)
    bf16 = small("q8_0", elem="bf16")
    with pytest.raises(ValueError, match="different elements"):
        TieredKVCache(KVCache(KVCacheModel(bf16), bf16), caches[1])


def test_read_bits():
    assert read_bits("mxfp4", "q8_0", 2048, 60) == pytest.approx(4.25 + 8.5 * 60 / 2048)
    assert read_bits("mxfp4", "q8_0", 10, 60) == pytest.approx(4.25 + 8.5)
    with pytest.raises(ValueError):
        read_bits("mxfp4", "q8_0", 0, 60)
