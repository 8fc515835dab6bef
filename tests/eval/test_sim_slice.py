"""A slice of the eval through the simulated RTL: SmolLM2's real K/V (first and last layer, 32 tokens of
GPL-3, rotated by the hardware rotation's golden model) go through the driver on the generated top
(Icarus, random pauses on every channel) and on the engine model; both must read back the same bits and
leave the same DDR image. The formats are the recommended tiered mode's: q8_0 (hot) and mxfp4 (cold)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from kvpath.eval import forward as fw, model as model_mod, run
from kvpath.eval.kvio import DriverKV
from kvpath.golden.kvcache import KVCacheModel

SEED = int(os.environ.get("KVPATH_SEED", "20261205"))
GPL3 = Path("/usr/share/common-licenses/GPL-3")
TOKENS = 32


@pytest.fixture(scope="module")
def layer_kv():
    """K/V of layers 0 and 29 for the first TOKENS tokens, as the eval gives them to the cache."""
    model = model_mod.load()
    ids = run.load_tokens(GPL3, TOKENS)
    kept = {}

    def hook(layer, k, v):
        if layer in (0, model.hp.n_layers - 1):
            kept[layer] = (k.copy(), v.copy())
        return k, v

    fw.forward(model, ids, kv=hook, rotation="hadamard_rtl")
    return kept


# mxfp4 (the cold tier: most of the cache) by default; the hot tier's q8_0 engine is also on the RTL in
# tests/driver/test_tiered.py::test_reads_take_sinks_and_window_hot_the_rest_cold[sim].
@pytest.mark.parametrize("fmt", ["mxfp4", pytest.param("q8_0", marks=pytest.mark.long)])
def test_eval_slice_on_rtl_equals_model(fmt, layer_kv, build_root):
    from kvpath.sim.top.remote import RemoteSim

    sims = []

    def simulated(config, mem_bytes):
        base = KVCacheModel(config, mem_bytes=mem_bytes).mem_base
        sims.append(RemoteSim(config, build_dir=build_root / f"eval_slice_{fmt}", simulator="icarus",
                              mem_base=base, mem_bytes=mem_bytes, seed=SEED, run_name=f"eval_slice_{fmt}").start())
        return sims[-1]

    on_model = DriverKV(fmt, kv_heads=3, head_dim=64, max_tokens=TOKENS)
    on_rtl = DriverKV(fmt, kv_heads=3, head_dim=64, max_tokens=TOKENS, transport=simulated)
    try:
        for layer, (k, v) in layer_kv.items():
            want = on_model.roundtrip(k, v)
            got = on_rtl.roundtrip(k, v)
            for side, (g, w) in enumerate(zip(got, want)):
                bad = np.argwhere(g.view(np.uint32) != w.view(np.uint32))
                assert bad.size == 0, (f"{fmt} layer {layer} {'KV'[side]}: {len(bad)} elements differ, first at "
                                       f"{bad[0].tolist()} (seed={SEED})")
            image = on_model.transport.mem_read(on_model.transport.mem_base, on_model.transport.mem_bytes)
            assert on_rtl.transport.mem_read(on_rtl.transport.mem_base, on_rtl.transport.mem_bytes) == image, (
                f"{fmt} layer {layer}: DDR images differ (seed={SEED})")
    finally:
        for sim in sims:
            sim.close()
