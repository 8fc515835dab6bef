"""The driver's KV manager: the Gemma 3n E4B preset, the memory budget, policies and traffic."""

import pytest

from kvpath.config import FORMATS
from kvpath.driver.kv_budget import MemoryBudgetError, vector_bytes
from kvpath.driver.kv_policy import LayerPolicy
from kvpath.driver.presets import GEMMA_3N_E4B, describe_model
from kvpath.driver.ring_manager import KVManager, KVOverflowError

GLOBALS = [4, 9, 14, 19]
FP16_TOKEN_LAYER = 2 * 256 * 2 * 2  # 2 KV heads x head_dim 256 x (K, V) x 2 bytes


def test_gemma_preset_matches_the_reference_facts():
    g = GEMMA_3N_E4B
    assert (g.n_layers, g.kv_heads, g.head_dim, g.local_window) == (35, 2, 256, 512)
    assert [la.index for la in g.kv_layers] == list(range(20))
    assert [la.index for la in g.kv_layers if la.attention == "global"] == GLOBALS
    shared = {la.index: la.kv_source for la in g.layers if not la.owns_kv}
    assert set(shared) == set(range(20, 35))
    assert all(src == (19 if (i + 1) % 5 == 0 else 18) for i, src in shared.items())


def test_gemma_memory_at_32k_context():
    m = KVManager("gemma-3n-e4b", kv_max_tokens=32768, ddr_bytes=1 << 32, k_format="fp16")
    fp16 = (4 * 32768 + 16 * 512) * FP16_TOKEN_LAYER
    assert fp16 == 285_212_672  # the facts file's "~285 MB with the 512 window on local layers"
    by_fmt = m.bytes_by_format()
    assert by_fmt["fp16"] == fp16
    for name, f in FORMATS.items():
        per_vector = 256 // 32 * f.block_bytes
        assert by_fmt[name] == (4 * 32768 + 16 * 512) * 2 * 2 * per_vector
    everything_full = KVManager("gemma-3n-e4b", kv_max_tokens=32768, ddr_bytes=1 << 32, k_format="fp16",
                                policies={"local": LayerPolicy.full()})
    # The facts file's 1.31 GB: all 20 KV layers at full context.
    assert everything_full.bytes_by_format()["fp16"] == 20 * 32768 * FP16_TOKEN_LAYER == 1_342_177_280
    assert everything_full.setup.plan.total_bytes == 1_342_177_280


def test_budget_refusal_names_the_numbers_and_the_largest_fit():
    region = 256 << 20
    with pytest.raises(MemoryBudgetError) as e:
        KVManager("gemma-3n-e4b", kv_max_tokens=32768, ddr_bytes=region, k_format="fp16")
    msg = str(e.value)
    for text in ("285,212,672", "268,435,456", "q8_0 151,519,232", "KV_MAX_TOKENS=32768",
                 "largest KV_MAX_TOKENS that fits with K fp16 / V fp16: 30720"):
        assert text in msg, msg
    KVManager("gemma-3n-e4b", kv_max_tokens=30720, ddr_bytes=region, k_format="fp16")
    with pytest.raises(MemoryBudgetError):
        KVManager("gemma-3n-e4b", kv_max_tokens=30721, ddr_bytes=region, k_format="fp16")


def test_configuration_errors():
    with pytest.raises(ValueError, match="KV_MAX_TOKENS=40000 must be in"):
        KVManager("gemma-3n-e4b", kv_max_tokens=40000, ddr_bytes=1 << 34)
    with pytest.raises(ValueError, match=r"layer 0 \(sliding window 512.*more than KV_MAX_TOKENS = 256"):
        KVManager("gemma-3n-e4b", kv_max_tokens=256, ddr_bytes=1 << 34)
    with pytest.raises(ValueError, match="layer 24 of gemma-3n-e4b owns no KV cache"):
        KVManager("gemma-3n-e4b", kv_max_tokens=4096, ddr_bytes=1 << 34,
                  layer_policies={24: LayerPolicy.full()})
    with pytest.raises(ValueError, match="unknown KV format"):
        KVManager("gemma-3n-e4b", kv_max_tokens=4096, ddr_bytes=1 << 34, k_format="q2_k")


def _small(**kw):
    model = describe_model("tiny", n_layers=4, kv_heads=1, head_dim=32, global_layers={1, 3},
                           local_window=2, kv_shared_layers=1)
    return KVManager(model, ddr_bytes=1 << 20, hw_max_tokens=16, **kw)


def test_policies_per_layer_type_and_reads_through_shared_layers():
    m = _small(kv_max_tokens=6, policies={"global": LayerPolicy.sink_window(1, 3)})
    s = m.add_sequence()
    for _ in range(8):
        m.append(s)
    assert [e.pos for e in m.read_order(s, 0)] == [6, 7]  # sliding window 2
    assert [e.pos for e in m.read_order(s, 1)] == [0, 5, 6, 7]  # 1 sink + 3
    assert m.read_order(s, 3) == m.read_order(s, 1)  # layer 3 reads layer 1's KV
    assert [e.cache_pos for e in m.read_order(s, 1)] == [0, 1, 2, 3]
    assert m.position(s) == 8


def test_overflow_error_writes_nothing_anywhere():
    m = _small(kv_max_tokens=4, layer_policies={1: LayerPolicy.full(overflow="error")})
    s = m.add_sequence()
    for _ in range(4):
        m.append(s)
    before = {la: m.valid(s, la) for la in range(4)}
    with pytest.raises(KVOverflowError, match=r"position 4 would evict from layer\(s\) \[1\]"):
        m.append(s)
    assert {la: m.valid(s, la) for la in range(4)} == before and m.position(s) == 4
    m.evict_upto(s, 2, layers=[1])  # make room explicitly
    assert m.append(s)[1].evicted is None
    assert [e.pos for e in m.read_order(s, 1)] == [2, 3, 4]


def test_evict_upto_defaults_to_all_layers_and_rejects_shared_ones():
    m = _small(kv_max_tokens=8)
    s = m.add_sequence()
    for _ in range(6):
        m.append(s)
    gone = m.evict_upto(s, 5)
    assert {la: [e.pos for e in ev] for la, ev in gone.items()} == {0: [4], 1: [0, 1, 2, 3, 4], 2: [4]}
    with pytest.raises(ValueError, match="layer 3 owns no KV cache"):
        m.evict_upto(s, 5, layers=[3])


def test_traffic_for_the_current_state():
    m = KVManager("gemma-3n-e4b", kv_max_tokens=32768, ddr_bytes=1 << 32, k_format="fp16")
    s = m.add_sequence()
    for _ in range(1000):
        m.append(s)
    t = m.traffic(s)
    assert t.write_bytes_per_token == 40_960  # the facts file's pccx figure
    global_readers = [i for i in range(35) if (i + 1) % 5 == 0]
    assert len(global_readers) == 7
    assert t.read_bytes_per_step == (7 * 1000 + 28 * 512) * FP16_TOKEN_LAYER
    q4 = m.traffic_by_format(s)["q4_0"]
    assert q4.write_bytes_per_token == 20 * 2 * 2 * vector_bytes("q4_0", 256) == 20 * 4 * 144


def test_slot_addresses_tile_the_region():
    m = _small(kv_max_tokens=5, k_format="q8_0", v_format="fp16", max_sequences=2)
    a, b = m.add_sequence(), m.add_sequence()
    seen = set()
    for seq in (a, b):
        for layer in (0, 1, 2):
            ring = m.setup.rings[layer].kv_max_tokens
            for kv, size in ((0, 34), (1, 64)):
                for slot in range(ring):
                    addr = m.slot_address(seq, layer, kv, 0, slot)
                    seen.update(range(addr, addr + size))
    assert seen == set(range(m.setup.plan.total_bytes))
    assert m.slot_address(a, 3, 0, 0, 1) == m.slot_address(a, 1, 0, 0, 1)


def test_sequences_are_independent_and_limited():
    m = _small(kv_max_tokens=6, max_sequences=2)
    a, b = m.add_sequence("a"), m.add_sequence("b")
    for _ in range(3):
        m.append(a)
    assert m.position(a) == 3 and m.position(b) == 0
    with pytest.raises(ValueError, match="all 2 sequence regions are in use"):
        m.add_sequence()
    m.remove_sequence("a")
    assert m.add_sequence("c") == "c" and m.position("c") == 0


def test_reconfigure_is_all_or_nothing():
    m = _small(kv_max_tokens=6)
    s = m.add_sequence()
    m.append(s)
    with pytest.raises(ValueError):
        m.reconfigure(kv_max_tokens=1)  # the local window of 2 no longer fits
    assert m.setup.kv_max_tokens == 6 and m.position(s) == 1
    m.reconfigure(kv_max_tokens=8)
    assert m.setup.kv_max_tokens == 8 and m.position(s) == 0


def test_describe_another_model():
    llama = describe_model("llama-3.1-8b", n_layers=32, kv_heads=8, head_dim=128, max_positions=131072)
    m = KVManager(llama, kv_max_tokens=8192, ddr_bytes=2 << 30, k_format="q8_0")
    assert m.bytes_by_format()["fp16"] == 32 * 8192 * 8 * 128 * 2 * 2
    with pytest.raises(ValueError, match="local layers need local_window"):
        describe_model("x", n_layers=2, kv_heads=1, head_dim=32, global_layers=[0])
    with pytest.raises(ValueError, match="shares KV but no earlier global layer"):
        describe_model("x", n_layers=3, kv_heads=1, head_dim=32, global_layers=[2], local_window=4,
                       kv_shared_layers=1)
