"""The KV cache driver (driver/kvcache.py) against a backend: bit-exact round trips, gguf-decodable
DDR images, ring order and eviction, error paths, and the engine's flags and counters.

Every test takes the ``backend`` fixture: a factory ``backend(config, mem_bytes=...)`` returning a
Transport. Two backends run the same tests:

* ``model``: the engine model (``kvpath.golden.kvcache.KVCacheModel``), NumPy, milliseconds.
* ``sim``: the generated KVCacheTop on Icarus through ``RemoteSim`` (one simulator per test, one
  build per configuration and worker), with random pauses on every AXI and stream channel, and the
  engine model beside it (``Twin``): every read-back beat and every DDR read is compared with the
  model's as it happens, and the whole DDR window when the test ends, so both backends produce
  identical read-back bytes and identical DDR images. The tests marked ``sim_default`` run on it by
  default; the rest with ``KVPATH_LONG=1`` (``KVPATH_DRIVER_SIM=verilator`` picks Verilator).

Backends also provide ``inject_ddr_error(addr, nbytes)`` (SLVERR on those bus granules, the way
sim/lib/axi_ram.py's ErrorMap does) and ``irq``.
"""

from __future__ import annotations

import hashlib
import json
import os

import gguf
import numpy as np
import pytest

from kvpath import golden, layout
from kvpath.config import KVPathConfig, get_format
from kvpath.driver.kv_policy import LayerPolicy
from kvpath.driver.kvcache import (CommandError, DDRError, FormatMismatch, KVCache, KVCacheError,
                                   VectorsDropped)
from kvpath.driver.presets import GEMMA_3N_E4B
from kvpath.golden import static
from kvpath.golden.kvcache import KVCacheModel
from kvpath.golden.ring import RingModel
from kvpath.layout import Op

SEED = int(os.environ.get("KVPATH_SEED", "20261204"))
LONG = os.environ.get("KVPATH_LONG") == "1"
SIMULATOR = os.environ.get("KVPATH_DRIVER_SIM", "icarus")
MEM_BYTES = 1 << 20
SMALL = dict(max_layers=4, max_kv_heads=2, max_head_dim=64, kv_max_tokens=64)
DIMS = dict(layers=3, kv_heads=2, head_dim=64)
# A READ the engine refused never answers; the simulated stream gives up after this many idle cycles
# (a healthy READ of these sizes moves a beat every few cycles, pauses included).
SIM_STALL_CYCLES = 4096

sim_default = pytest.mark.sim_default


class Twin:
    """The simulated top with the engine model beside it. Calls that change state go to both; the
    driver sees the simulation's answers; read-back beats and DDR reads must be identical."""

    def __init__(self, sim, model: KVCacheModel):
        self.sim, self.model = sim, model
        self.mem_base, self.mem_bytes = sim.mem_base, sim.mem_bytes

    def _both(self, name: str, *args):
        """Run on the model, then on the simulation; both must succeed or both fail."""
        try:
            want, want_error = getattr(self.model, name)(*args), None
        except Exception as e:
            want, want_error = None, e
        try:
            got = getattr(self.sim, name)(*args)
        except Exception as e:
            assert want_error is not None, f"seed={SEED}: {name} failed on the simulation only: {e}"
            raise
        assert want_error is None, f"seed={SEED}: {name} failed on the model only: {want_error}"
        return got, want

    def read32(self, addr: int) -> int:
        # Live bits (busy) and counters in flight differ in time: the driver waits for the hardware.
        return self.sim.read32(addr)

    def write32(self, addr: int, value: int) -> None:
        self._both("write32", addr, value)

    def send_kv(self, beats) -> None:
        self._both("send_kv", beats)

    def receive_kv(self, port: int, n_beats: int):
        got, want = self._both("receive_kv", port, n_beats)
        assert [tuple(b) for b in got] == [tuple(b) for b in want], (
            f"seed={SEED}: m_axis_kv{port} beats differ between simulation and model")
        return got

    def mem_write(self, addr: int, data: bytes) -> None:
        self._both("mem_write", addr, data)

    def mem_read(self, addr: int, n: int) -> bytes:
        got, want = self._both("mem_read", addr, n)
        assert got == want, f"seed={SEED}: DDR [0x{addr:x}, +{n}) differs between simulation and model"
        return got

    def inject_ddr_error(self, addr: int, nbytes: int) -> None:
        self._both("inject_ddr_error", addr, nbytes)

    @property
    def irq(self) -> bool:
        return self.sim.irq

    def close(self) -> None:
        """End the simulation after comparing the whole DDR window."""
        try:
            self.mem_read(self.mem_base, self.mem_bytes)
        finally:
            self.sim.close()


def make_backend(kind: str, config: KVPathConfig, mem_bytes: int = MEM_BYTES, *, build_root=None, name="sim"):
    """The one place a backend is built."""
    if kind == "model":
        return KVCacheModel(config, mem_bytes=mem_bytes)
    if kind == "sim":
        from kvpath.sim.top.remote import RemoteSim

        model = KVCacheModel(config, mem_bytes=mem_bytes)
        key = hashlib.sha256(json.dumps(config.__dict__, sort_keys=True).encode()).hexdigest()[:12]
        sim = RemoteSim(config, build_dir=build_root / f"driver_{SIMULATOR}_{config.fmt}_{key}",
                        simulator=SIMULATOR, mem_base=model.mem_base, mem_bytes=mem_bytes, seed=SEED,
                        stall_cycles=SIM_STALL_CYCLES, run_name=name)
        return Twin(sim.start(), model)
    raise ValueError(f"unknown backend {kind!r}")


@pytest.fixture(params=["model", pytest.param("sim", marks=pytest.mark.sim)])
def backend(request, build_root):
    if request.param == "sim" and not LONG and request.node.get_closest_marker("sim_default") is None:
        pytest.skip("long run: set KVPATH_LONG=1 (this test on the sim backend)")
    made = []

    def factory(config, **kw):
        made.append(make_backend(request.param, config, build_root=build_root,
                                 name=f"{request.node.name}_{len(made)}"[-60:].replace("/", "_"), **kw))
        return made[-1]

    yield factory
    for transport in made:
        if isinstance(transport, Twin):
            transport.close()


def small(fmt: str = "q8_0", **over) -> KVPathConfig:
    return KVPathConfig(fmt=fmt, **{**SMALL, **over})


def tokens(rng, n: int, layers: int, heads: int, head_dim: int, dtype=np.float16) -> list:
    """``n`` tokens of (K, V), each ``[layers, heads, head_dim]``, with a spread of magnitudes per
    vector so blocks get different scales."""
    def one():
        scale = 2.0 ** rng.integers(-6, 6, size=(layers, heads, 1))
        return (rng.standard_normal((layers, heads, head_dim)) * scale).astype(dtype)
    return [(one(), one()) for _ in range(n)]


def configured(backend, fmt="q8_0", *, config_over=None, **configure):
    config = small(fmt, **(config_over or {}))
    transport = backend(config)
    cache = KVCache(transport, config)
    cache.configure(**{**DIMS, "kv_max_tokens": 16, **configure})
    return transport, cache


def expected_rows(token_list, cache: KVCache, layer: int, head: int, kv: int, positions,
                  scale_table=None) -> np.ndarray:
    """Golden quantize -> dequantize of the vectors at ``positions``: uint16 bit patterns."""
    hw = cache.setup.hw_layer[layer]
    x = np.stack([token_list[p][kv][hw, head] for p in positions])
    fmt = cache.config.fmt
    if get_format(fmt).needs_scale_cache:
        table = scale_table
        codes = static.quantize(x, fmt, table, hw, head, kv, config=cache.config)
        return static.dequantize(codes, fmt, table, hw, head, kv, dtype=x.dtype, config=cache.config).view(np.uint16)
    return golden.dequantize(golden.quantize(x, fmt), fmt, x.dtype).view(np.uint16)


def check_reads(cache: KVCache, token_list, what: str, seq: int = 0, port: int = 0, scale_table=None) -> None:
    setup = cache.setup
    for layer in range(setup.model.n_layers):
        for head in range(setup.model.kv_heads):
            for kv in (0, 1):
                values, positions = cache.read(seq, layer, head, kv, port)
                ring = cache.ring(seq, layer=layer)
                assert list(positions) == [e.pos for e in ring.read_order()], f"{what} (seed={SEED})"
                want = expected_rows(token_list, cache, layer, head, kv, positions, scale_table)
                got = values.view(np.uint16)
                bad = np.argwhere(got != want)
                assert bad.size == 0, (f"{what}: layer {layer} head {head} {'KV'[kv]}: {len(bad)} elements differ, "
                                       f"first at {bad[0].tolist()}: {got[tuple(bad[0])]:04x} vs "
                                       f"{want[tuple(bad[0])]:04x} (seed={SEED})")


# --- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1", "mxfp4", "mxint8", "mxfp8_e4m3"])
def test_append_read_round_trip_is_bit_exact(backend, fmt):
    rng = np.random.default_rng([SEED, 1])
    _, cache = configured(backend, fmt)
    toks = tokens(rng, 21, 3, 2, 64)  # more than the ring's 16 slots: the window wraps
    for k, v in toks:
        cache.append(0, k, v)
    check_reads(cache, toks, f"{fmt} round trip")
    counts = cache.counters()
    vectors = 21 * 3 * 2 * 2
    row = layout.row_bytes(cache.config, 64)
    assert counts["vectors_written"] == vectors and counts["vectors_dropped"] == 0, f"seed={SEED}"
    assert counts["ddr_bytes_written"] == vectors * row
    assert counts["elems_quantized"] == vectors * 64 and counts["blocks_written"] == vectors * 2
    reads = 3 * 2 * 2
    assert counts["ddr_bytes_read"] == reads * 16 * row and counts["blocks_read"] == reads * 16 * 2
    assert counts["commands_done"] == 1 + reads  # one CLEAR (one class), then the READs


def test_bf16_round_trip(backend):
    import ml_dtypes

    rng = np.random.default_rng([SEED, 2])
    _, cache = configured(backend, "q4_1", config_over={"elem": "bf16"})
    toks = tokens(rng, 5, 3, 2, 64, dtype=ml_dtypes.bfloat16)
    for k, v in toks:
        cache.append(0, k, v)
    check_reads(cache, toks, "bf16 q4_1 round trip")


@pytest.mark.parametrize("fmt", ["int8_ph", "int4_pc"])
def test_static_formats_use_the_loaded_scales(backend, fmt):
    rng = np.random.default_rng([SEED, 3])
    _, cache = configured(backend, fmt)
    shape = (3, 2, 2) + ((64,) if get_format(fmt).scope == "channel" else ())
    scales = 2.0 ** rng.integers(-8, -2, size=shape)
    cache.load_scales(scales)
    toks = tokens(rng, 4, 3, 2, 64)
    for k, v in toks:
        cache.append(0, k, v)
    check_reads(cache, toks, f"{fmt} round trip", scale_table=cache.scale_table(scales))


@sim_default
def test_sequences_and_read_ports_are_independent(backend):
    rng = np.random.default_rng([SEED, 12])
    _, cache = configured(backend, config_over={"max_seqs": 2, "read_ports": 2}, seqs=2)
    per_seq = {0: tokens(rng, 7, 3, 2, 64), 1: tokens(rng, 18, 3, 2, 64)}
    for n in range(18):
        for seq, toks in per_seq.items():
            if n < len(toks):
                cache.append(seq, *toks[n])
    check_reads(cache, per_seq[0], "sequence 0 on port 1", seq=0, port=1)
    check_reads(cache, per_seq[1], "sequence 1 on port 0", seq=1, port=0)


def test_nonfinite_and_saturated_counts_are_the_golden_models(backend):
    _, cache = configured(backend)
    k = np.ones((3, 2, 64), np.float16)
    k[0, 0, 5], k[1, 1, 7] = np.inf, np.nan
    k[2, 0, :32] = np.float16(65504)  # d rounds up: d * 127 exceeds 65504 on the way back
    cache.append(0, k, k)
    n_nonfinite = golden.quantize_report(k, "q8_0")[1]
    assert cache.counters()["nonfinite_elems"] == 2 * n_nonfinite and cache.status()["nonfinite_seen"] == 1
    cache.read(0, 2, 0, 0)
    _, n_saturated, _ = golden.dequantize_report(golden.quantize(k[2, 0], "q8_0"), "q8_0")
    assert n_saturated > 0 and cache.counters()["saturated_elems"] == n_saturated
    assert cache.status()["saturated_seen"] == 1


@pytest.mark.parametrize("fmt", [pytest.param("q8_0", marks=sim_default), "q4_0", "q4_1", "mxfp4"])
def test_region_image_decodes_with_gguf(backend, fmt):
    rng = np.random.default_rng([SEED, 4])
    _, cache = configured(backend, fmt)
    for k, v in tokens(rng, 19, 3, 2, 64):
        cache.append(0, k, v)
    qtype = gguf.GGMLQuantizationType[get_format(fmt).ggml_type]
    for layer, head, kv in ((0, 0, 0), (2, 1, 1)):
        image = cache.region_image(0, layer, head, kv)
        values, _ = cache.read(0, layer, head, kv)
        decoded = gguf.quants.dequantize(np.frombuffer(image, np.uint8).reshape(len(values), -1), qtype)
        want = decoded.astype(np.float16).view(np.uint16)
        assert np.array_equal(values.view(np.uint16), want), f"{fmt} layer {layer} head {head} (seed={SEED})"


# --- rings -----------------------------------------------------------------------------------------

def test_sinks_window_and_evict_upto_follow_the_golden_ring(backend):
    rng = np.random.default_rng([SEED, 5])
    policy = LayerPolicy.sink_window(n_sink=3, window=6)
    _, cache = configured(backend, "q8_0", policies={"global": policy})
    ring = RingModel(9, 3, 6, max_tokens=64)
    toks = []
    for step in range(40):
        if rng.random() < 0.15 and ring.appended:
            upto = int(rng.integers(0, ring.appended + 2))
            cache.evict_upto(0, upto, cls=0)
            ring.evict_upto(upto)
        else:
            k, v = tokens(rng, 1, 3, 2, 64)[0]
            toks.append((k, v))
            assert cache.append(0, k, v) == ring.append().pos
        if step % 7 == 6:
            _, positions = cache.read(0, int(rng.integers(3)), int(rng.integers(2)), int(rng.integers(2)))
            assert list(positions) == [e.pos for e in ring.read_order()], f"step {step} (seed={SEED})"
    check_reads(cache, toks, "sinks + window")


def test_evict_upto_names_a_layer_or_a_class(backend):
    rng = np.random.default_rng([SEED, 6])
    _, cache = configured(backend)
    for k, v in tokens(rng, 10, 3, 2, 64):
        cache.append(0, k, v)
    cache.evict_upto(0, 7, layer=1)
    assert list(cache.read(0, 2, 0, 1)[1]) == [7, 8, 9]
    with pytest.raises(ValueError, match="exactly one"):
        cache.evict_upto(0, 3)


def test_reset_sequence_empties_the_rings(backend):
    rng = np.random.default_rng([SEED, 7])
    _, cache = configured(backend)
    for k, v in tokens(rng, 5, 3, 2, 64):
        cache.append(0, k, v)
    cache.reset_sequence(0)
    values, positions = cache.read(0, 0, 0, 0)
    assert values.shape == (0, 64) and positions.size == 0
    toks = tokens(rng, 3, 3, 2, 64)
    for k, v in toks:
        cache.append(0, k, v)
    check_reads(cache, toks, "after reset_sequence")


def test_gemma_3n_global_and_local_classes(backend):
    """Gemma 3n E4B's shape: 20 KV layers (4 global), 2 KV heads, head_dim 256; the last 15 model
    layers read layer 18's (local) or 19's (global) cache."""
    rng = np.random.default_rng([SEED, 8])
    config = KVPathConfig(fmt="q4_0", kv_max_tokens=64)
    cache = KVCache(backend(config), config)
    setup = cache.configure("gemma-3n-e4b", kv_max_tokens=24, policies={"local": LayerPolicy.sliding(8)})
    assert [c.layers for c in setup.classes] == [
        tuple(la.index for la in GEMMA_3N_E4B.kv_layers if la.attention == a) for a in ("local", "global")]
    assert {r.slots for r in setup.regions.values() if setup.layer_class[r.layer] == 0} == {8}
    assert {r.slots for r in setup.regions.values() if setup.layer_class[r.layer] == 1} == {24}
    toks = tokens(rng, 12, 20, 2, 256)
    for k, v in toks:
        cache.append(0, k, v)
    for layer, valid in ((0, range(4, 12)), (4, range(12)), (24, range(12)), (33, range(4, 12))):
        values, positions = cache.read(0, layer, 1, 1)
        assert list(positions) == list(valid), f"layer {layer} (seed={SEED})"
        want = expected_rows(toks, cache, layer, 1, 1, positions)
        assert np.array_equal(values.view(np.uint16), want), f"layer {layer} (seed={SEED})"
    json.dumps(cache.manifest())


def test_too_many_ring_classes_are_refused(backend):
    config = small()
    cache = KVCache(backend(config), config)
    per_layer = {0: LayerPolicy.sliding(4), 1: LayerPolicy.sliding(5), 2: LayerPolicy.sliding(6)}
    with pytest.raises(ValueError, match="n_classes=2"):
        cache.configure(**DIMS, kv_max_tokens=16, layer_policies=per_layer)


# --- refusals and errors ---------------------------------------------------------------------------

def test_format_mismatch_is_refused_naming_both(backend):
    hardware = small("q4_0")
    cache = KVCache(backend(hardware), small("q8_0"))
    with pytest.raises(FormatMismatch, match="q8_0.*q4_0"):
        cache.configure(**DIMS)
    cache = KVCache(backend(small("q8_0")), small("q8_0"))
    with pytest.raises(FormatMismatch, match="q4_1 refused.*q8_0"):
        cache.configure(**DIMS, fmt="q4_1")


def test_bad_api_input_raises_value_error(backend):
    _, cache = configured(backend)
    k = np.zeros((3, 2, 64), np.float16)
    with pytest.raises(ValueError, match="shape"):
        cache.append(0, k[:2], k)
    with pytest.raises(ValueError, match="float16"):
        cache.append(0, k.astype(np.float32), k)
    with pytest.raises(ValueError, match="sequence 1"):
        cache.append(1, k, k)
    with pytest.raises(ValueError, match="head_dim 48"):
        cache.configure(layers=3, kv_heads=2, head_dim=48)


def settle(cache, vectors: int) -> None:
    """Wait until ``vectors`` hand-sent vectors are written or dropped: the engine takes K/V beats into
    its queue ahead of looking them up, so ``send_kv`` returning says nothing about what became of them
    (docs/kvcache.md, section 3); the driver's own ``flush`` waits the same way."""
    def done():
        c = cache.counters()
        return c["vectors_written"] + c["vectors_dropped"] >= vectors
    cache._poll(f"{vectors} hand-sent vector(s) settled", done)


def raw_vector(config, head_dim, *, append=1, kv=0, head=0, layer=0, seq=0, tlast_at=None):
    """One vector's beats built by hand (zeros), for what the driver's API never sends."""
    per_vector = head_dim // config.quant_lanes
    tuser = layout.pack(layout.kv_tag(config), append=append, kv=kv, head=head, layer=layer, seq=seq)
    last = per_vector - 1 if tlast_at is None else tlast_at
    return [(0x3C00, tuser, n == last) for n in range(per_vector)]


def test_vectors_before_a_clear_are_dropped_and_flagged(backend):
    config = small()
    transport = backend(config)
    cache = KVCache(transport, config)
    cache.regs.write_field("CTRL", "enable", 1)
    transport.send_kv(raw_vector(config, 64) * 3)  # HEAD_DIM resets to max_head_dim = 64
    settle(cache, 3)
    assert cache.status()["vector_dropped"] == 1
    assert cache.counters()["vectors_dropped"] == 3 and cache.counters()["vectors_written"] == 0


def test_tags_beyond_the_model_or_build_are_dropped(backend):
    transport, cache = configured(backend)
    cache.append(0, np.ones((3, 2, 64), np.float16), np.ones((3, 2, 64), np.float16))
    cache.flush()
    # Layer 3 exists in the build (max_layers 4) but not in the model: its class is n_classes.
    transport.send_kv(raw_vector(cache.config, 64, layer=3) + raw_vector(cache.config, 64, seq=1))
    settle(cache, 3 * 2 * 2 + 2)
    assert cache.status()["vector_dropped"] == 1 and cache.counters()["vectors_dropped"] == 2
    with pytest.raises(VectorsDropped, match="dropped 2 vector"):
        cache.flush()
    cache.clear_status()
    assert cache.status()["vector_dropped"] == 0


def test_frame_error_counts_once_per_vector_and_still_writes(backend):
    transport, cache = configured(backend)
    transport.send_kv(raw_vector(cache.config, 64, tlast_at=0) + raw_vector(cache.config, 64, append=0, kv=1))
    settle(cache, 2)
    counts = cache.counters()
    assert cache.status()["frame_error"] == 1 and counts["frame_errors"] == 1
    assert counts["vectors_written"] == 2


@sim_default
def test_ddr_write_error_raises_naming_the_append(backend):
    rng = np.random.default_rng([SEED, 9])
    transport, cache = configured(backend)
    region = cache.region(0, 1, 0, 1)
    row = layout.row_bytes(cache.config, 64)
    granule = cache.config.bus_bytes
    inside_slot_2 = -(-(region.base + 2 * row) // granule) * granule  # a bus granule of token 2's row only
    assert inside_slot_2 + granule <= region.base + 3 * row
    transport.inject_ddr_error(inside_slot_2, 1)
    toks = tokens(rng, 4, 3, 2, 64)
    for k, v in toks[:3]:
        cache.append(0, k, v)
    with pytest.raises(DDRError, match="append of token 2 of sequence 0.*1 row write"):
        cache.flush()
    assert cache.status()["ddr_error"] == 1 and cache.counters()["ddr_errors"] == 1
    cache.append(0, *toks[3])
    cache.flush()  # the engine keeps serving, and the failure was reported once


@sim_default
def test_ddr_read_error_raises_naming_the_read(backend):
    rng = np.random.default_rng([SEED, 10])
    transport, cache = configured(backend)
    for k, v in tokens(rng, 20, 3, 2, 64):  # 16 slots: the window wraps, so a READ has two runs
        cache.append(0, k, v)
    region = cache.region(0, 2, 1, 0)
    row = layout.row_bytes(cache.config, 64)
    transport.inject_ddr_error(region.base, 1)
    transport.inject_ddr_error(region.base + 15 * row, 1)
    with pytest.raises(DDRError, match=r"READ of sequence 0, layer 2 .*head 1, K.*2 failed run"):
        cache.read(0, 2, 1, 0)
    assert cache.status()["ddr_error"] == 1 and cache.counters()["ddr_errors"] == 2
    cache.read(0, 2, 1, 1)  # other regions still read cleanly


def test_commands_with_operands_beyond_the_build_fail(backend):
    _, cache = configured(backend)
    word = layout.pack(layout.command_word(cache.config), op=Op.READ, seq=1)
    cache.regs.write("CMD", word)
    cache.regs.write("CMD", layout.pack(layout.command_word(cache.config), op=Op.EVICT_UPTO, seq=1))
    counts = cache.counters()
    assert cache.status()["cmd_error"] == 1 and counts["cmd_errors"] == 2
    assert counts["commands_done"] == 1 + 2


def test_enable_gates_the_streams_not_the_cmd_register(backend):
    transport, cache = configured(backend)
    cache.regs.write_field("CTRL", "enable", 0)
    with pytest.raises(KVCacheError, match="CTRL.enable"):
        cache.append(0, np.ones((3, 2, 64), np.float16), np.ones((3, 2, 64), np.float16))
    before = cache.counters()["commands_done"]
    cache.regs.write("CMD", layout.pack(layout.command_word(cache.config), op=Op.NOP))
    assert cache.counters()["commands_done"] == before + 1


def test_bad_head_dim_drops_vectors_and_fails_reads(backend):
    transport, cache = configured(backend)
    cache.regs.write("HEAD_DIM", 40)
    assert cache.status()["head_dim_err"] == 1
    transport.send_kv([(0, 0, False), (0, 0, False), (0, 0, True)])  # ceil(40 / 16) beats frame a vector
    settle(cache, 1)
    cache.regs.write("CMD", layout.pack(layout.command_word(cache.config), op=Op.READ))
    counts, status = cache.counters(), cache.status()
    assert counts["vectors_dropped"] == 1 and counts["frame_errors"] == 0 and counts["cmd_errors"] == 1
    assert status["vector_dropped"] == 1 and status["cmd_error"] == 1


@sim_default
def test_irq_follows_enabled_sticky_bits(backend):
    transport, cache = configured(backend)
    transport.send_kv(raw_vector(cache.config, 64, layer=3))
    settle(cache, 1)
    assert not transport.irq
    cache.regs.write("IRQ_ENABLE", 1 << cache.regs.field("STATUS", "vector_dropped")["lsb"])
    assert transport.irq
    cache.clear_status()
    assert not transport.irq


def test_soft_reset_keeps_tables_and_restarts_rings(backend):
    rng = np.random.default_rng([SEED, 11])
    _, cache = configured(backend)
    for k, v in tokens(rng, 4, 3, 2, 64):
        cache.append(0, k, v)
    cache.soft_reset()
    assert cache.counters()["vectors_written"] == 0
    toks = tokens(rng, 3, 3, 2, 64)
    for k, v in toks:
        cache.append(0, k, v)
    check_reads(cache, toks, "after soft reset")


def test_register_bus_errors_name_the_transaction(backend):
    _, cache = configured(backend)
    # The last word of the block's address window, which no register uses (beyond the window the
    # bus, not the block, decides: cocotbext-axi's master refuses such an address itself).
    unmapped = (1 << cache.regs.map["addr_width"]) - 4
    assert all(r["offset"] != unmapped for r in cache.regs.map["registers"])
    with pytest.raises(KVCacheError, match=f"probe: read of \\? \\(0x{unmapped:x}\\)"):
        with cache._doing("probe"):
            cache._link.read32(unmapped)
    assert cache.status()["axi_error"] == 1


def test_read_command_error_is_named(backend):
    transport, cache = configured(backend)
    cache.append(0, np.ones((3, 2, 64), np.float16), np.ones((3, 2, 64), np.float16))
    cache.regs.write("RING_WINDOW", 0)  # an invalid ring configuration taken by a raw CLEAR
    cache.regs.write("CMD", layout.pack(layout.command_word(cache.config), op=Op.CLEAR))
    cache._issued += 1
    with pytest.raises(CommandError, match="READ of sequence 0, layer 0"):
        cache.read(0, 0, 0, 0)
