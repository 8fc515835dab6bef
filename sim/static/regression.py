"""Bit-exact regression of the static-scale quantizer/dequantizer (with their scale cache) against
``kvpath.golden.static``.

The simulated DUT is ``tb_static_dut.StaticTop``: one command stream carries MEMSETs and data beats.
A run preloads part of the table through MEMSETs, then interleaves data beats with random MEMSET
traffic (re-writes of live entries, refused out-of-range and non-finite writes). The golden model
replays the commands in order: a data beat is computed with the table as left by every MEMSET before
it. ``ref_commands`` / ``rtl_commands`` are the twins; ``run`` is what ``kvpath sim --format int4_pc``
calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvpath import scales
from kvpath.config import DEFAULT, KVPathConfig, check_elem, get_format
from kvpath.golden import static as gs
from kvpath.elements import element
from kvpath import stimulus
from kvpath.sim.datapath.regression import THROTTLES, RegressionResult, _compare, simulate_stream

DUT_MODULE = {"quantizer": "kvpath_static_quantizer", "dequantizer": "kvpath_static_dequantizer"}
MEMSET_RATE = 1 / 16  # share of MEMSETs among the commands after the preload
BAD_CONTEXT_RATE = 0.04
TUNED_RATE = 0.4  # data beats whose elements are placed around the beat's own scales


@dataclass
class Commands:
    """A command stream: row ``k`` is a MEMSET when ``memset[k]``, else a data beat."""

    memset: np.ndarray  # (n,) bool
    body: np.ndarray  # (n, lanes) uint16 elements (quantizer) or int64 codes (dequantizer)
    layer: np.ndarray
    head: np.ndarray
    kv: np.ndarray
    channel: np.ndarray
    index: np.ndarray  # MEMSET index (int64, may be out of range)
    value: np.ndarray  # MEMSET value (uint32)

    def __len__(self):
        return len(self.memset)

    def prefix(self, n: int) -> "Commands":
        return Commands(*(getattr(self, f)[:n] for f in self.__dataclass_fields__))


# ----------------------------------------------------------------------------- golden side

def ref_commands(cmds: Commands, target: str, fmt: str, elem: str = "fp16", config: KVPathConfig = DEFAULT,
                 table: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, int], np.ndarray]:
    """Expected result bytes (one row per command), counters and the final table, replaying the
    commands in order from ``table`` (default: the all-zero table after configuration)."""
    f = get_format(fmt)
    lanes = cmds.body.shape[1]
    table = gs.empty_table(fmt, config) if table is None else table.copy()
    out = np.zeros((len(cmds), lanes), np.int64)
    counters = {"nonfinite_count": 0, "saturated_count": 0, "context_error_count": 0, "write_error_count": 0}
    # Runs of data beats between MEMSETs are evaluated in one vectorized call each.
    bounds = np.flatnonzero(np.diff(np.concatenate([[1], cmds.memset.astype(np.int8), [1]])))
    k = 0
    while k < len(cmds):
        if cmds.memset[k]:
            counters["write_error_count"] += int(gs.apply_writes(table, cmds.index[k:k + 1],
                                                                 cmds.value[k:k + 1], elem)[0])
            k += 1
            continue
        end = int(bounds[np.searchsorted(bounds, k, side="right")])
        ctx = (cmds.layer[k:end], cmds.head[k:end], cmds.kv[k:end], cmds.channel[k:end])
        if target == "quantizer":
            res, c = gs.quantize_beats(cmds.body[k:end].astype(np.uint16), fmt, table, *ctx, elem, config)
        else:
            res, c = gs.dequantize_beats(cmds.body[k:end], fmt, table, *ctx, elem, config)
        out[k:end] = res
        for name, v in c.items():
            counters[name] += v
        k = end
    if target == "quantizer":
        body = gs.pack_codes(out, f.name)
    else:
        body = out.astype(np.uint16)
    zero_ctx = np.where(cmds.memset, 0, 1)
    result = pack_beats(target, f.code_bits, lanes, config, body, cmds.layer * zero_ctx, cmds.head * zero_ctx,
                        cmds.kv * zero_ctx, cmds.channel * zero_ctx, cmds.memset, result=True)
    return result, counters, table


# ----------------------------------------------------------------------------- bit packing

def _bits_of(values: np.ndarray, width: int) -> np.ndarray:
    v = np.asarray(values).astype(np.uint64).reshape(-1, 1)
    return ((v >> np.arange(width, dtype=np.uint64)) & 1).astype(np.uint8)


def pack_beats(target, code_bits, lanes, config, body, layer, head, kv, channel, memset,
               index=None, value=None, result=False) -> np.ndarray:
    """Command (or result) beats as bytes, laid out as ``tb_static_dut`` declares them."""
    from kvpath.sim.static.tb_dut import command_layout, result_layout

    layout = (result_layout if result else command_layout)(target, code_bits, lanes, config)
    n = len(memset)
    bits = np.zeros((n, layout.size), np.uint8)
    body_field = layout["body"]
    raw = np.ascontiguousarray(body)
    body_bits = np.unpackbits(raw.view(np.uint8).reshape(n, -1), axis=1, bitorder="little")
    bits[:, body_field.offset:body_field.offset + body_bits.shape[1]] = body_bits
    if index is not None:
        ms = np.flatnonzero(memset)
        bits[ms, 0:32] = _bits_of(index[ms] & 0xFFFFFFFF, 32)
        bits[ms, 32:64] = _bits_of(value[ms], 32)
        bits[ms, 64:body_field.width] = 0
    ctx = layout["ctx"]
    for name, values in (("layer", layer), ("head", head), ("kv", kv), ("channel", channel)):
        fld = ctx.shape[name]
        at = ctx.offset + fld.offset
        bits[:, at:at + fld.width] = _bits_of(np.asarray(values) & ((1 << fld.width) - 1), fld.width)
    bits[:, layout["memset"].offset] = np.asarray(memset, np.uint8)
    return np.packbits(bits, axis=1, bitorder="little")


# ----------------------------------------------------------------------------- stimulus

def random_entries(rng: np.random.Generator, n: int, elem: str) -> np.ndarray:
    """Cache entries as the driver makes them (scale and RNE reciprocal) -- calibrated-looking,
    powers of two (exact ties), extremes -- plus arbitrary finite pairs and zero entries."""
    t = element(elem)
    lo = gs.value_of(gs.min_scale(elem), elem)
    hi = float(gs.value_of(t.max_finite, elem))
    lg_lo, lg_hi = np.log2(float(lo)), np.log2(hi)
    kind = rng.choice(5, n, p=[0.35, 0.2, 0.1, 0.25, 0.1])
    scale_val = 2.0 ** rng.uniform(lg_lo, lg_hi, n)
    scale_val = np.where(kind == 1, 2.0 ** np.floor(rng.uniform(lg_lo + 1, lg_hi, n)), scale_val)
    extremes = np.array([float(lo), hi, float(lo) * 1.5, hi / 3, 1.0])
    scale_val = np.where(kind == 2, rng.choice(extremes, n), scale_val)
    patterns = np.array([gs.round_scale(v, elem) for v in scale_val], np.int64)
    patterns = np.maximum(patterns, gs.min_scale(elem))
    cache: dict[int, int] = {}
    entries = np.array([cache.setdefault(p, gs.make_entry(p, elem)) if p not in cache else cache[p]
                        for p in patterns.tolist()], np.uint32)
    arbitrary = rng.integers(0, 1 << 16, (n, 2)).astype(np.int64)
    for col in range(2):  # keep both halves finite: clear an all-ones exponent's top bit
        a = arbitrary[:, col]
        arbitrary[:, col] = np.where((a & t.exp_mask) == t.exp_mask, a & ~(1 << 14), a)
    entries = np.where(kind == 3, scales.pack_entry(arbitrary[:, 0], arbitrary[:, 1]), entries)
    return np.where(kind == 4, 0, entries).astype(np.uint32)


def _nonfinite_entries(rng, n, elem):
    t = element(elem)
    halves = rng.integers(0, 1 << 16, (n, 2)).astype(np.int64)
    which = rng.integers(0, 2, n)
    halves[np.arange(n), which] |= t.exp_mask  # Inf or NaN in one half at least
    return scales.pack_entry(halves[:, 0], halves[:, 1])


def build_commands(target: str, fmt: str, lanes: int, n_data: int, seed: int, elem: str = "fp16",
                   config: KVPathConfig = DEFAULT) -> Commands:
    f = get_format(fmt)
    scope = scales.scope_of(fmt)
    rng = np.random.default_rng([seed, 0x57A7])
    groups = scales.group_count(config)
    per_group = config.max_head_dim if scope == "channel" else 1
    entries_n = scales.entry_count(scope, config)
    # Preload: every per-head entry, or a few whole groups of per-channel entries.
    n_loaded = groups if scope == "head" else int(np.clip(n_data // 512, 2, 6))
    loaded = np.sort(rng.choice(groups, n_loaded, replace=False))
    pre_index = (loaded[:, None] * per_group + np.arange(per_group)).reshape(-1)
    pre_value = random_entries(rng, len(pre_index), elem)
    table = gs.empty_table(fmt, config)
    gs.apply_writes(table, pre_index, pre_value, elem)

    n_mix = int(round(n_data / (1 - MEMSET_RATE)))
    memset_mix = np.zeros(n_mix, bool)
    memset_mix[rng.choice(n_mix, n_mix - n_data, replace=False)] = True  # exactly n_data data beats
    n = len(pre_index) + n_mix
    memset = np.concatenate([np.ones(len(pre_index), bool), memset_mix])
    index = np.zeros(n, np.int64)
    value = np.zeros(n, np.uint32)
    index[:len(pre_index)], value[:len(pre_index)] = pre_index, pre_value
    mix = np.flatnonzero(memset)[len(pre_index):]
    kind = rng.choice(4, len(mix), p=[0.7, 0.1, 0.1, 0.1])
    live = loaded[rng.integers(0, n_loaded, len(mix))] * per_group + rng.integers(0, per_group, len(mix))
    any_entry = rng.integers(0, entries_n, len(mix))
    beyond = rng.integers(entries_n, 1 << 32, len(mix))
    index[mix] = np.select([kind == 0, kind == 1, kind == 2], [live, any_entry, beyond], any_entry)
    value[mix] = np.where(kind == 3, _nonfinite_entries(rng, len(mix), elem), random_entries(rng, len(mix), elem))

    # Data beats: mostly loaded groups, some never-loaded ones (entries 0), some bad contexts.
    d = np.flatnonzero(~memset)
    grp = np.where(rng.random(len(d)) < 0.9, loaded[rng.integers(0, n_loaded, len(d))],
                   rng.integers(0, groups, len(d)))
    kvs, rest = grp % 2, grp // 2
    heads, layers = rest % config.max_kv_heads, rest // config.max_kv_heads
    if scope == "channel":
        chans = rng.integers(0, config.max_head_dim // lanes, len(d)) * lanes
    else:
        chans = rng.integers(0, config.max_head_dim, len(d))  # ignored per head
    bad = rng.random(len(d)) < BAD_CONTEXT_RATE
    layer_bits = (config.max_layers - 1).bit_length()
    if (1 << layer_bits) > config.max_layers:
        bad_layer = bad & (rng.random(len(d)) < 0.5)
        layers = np.where(bad_layer, rng.integers(config.max_layers, 1 << layer_bits, len(d)), layers)
    if scope == "channel" and lanes > 1:
        chans = np.where(bad, chans + rng.integers(1, lanes, len(d)), chans)
    layer, head, kv, channel = (np.zeros(n, np.int64) for _ in range(4))
    layer[d], head[d], kv[d], channel[d] = layers, heads, kvs, chans

    body = np.zeros((n, lanes), np.int64)
    if target == "quantizer":
        pool = stimulus.mixed(fmt, len(d) * lanes, seed, elem).view(np.uint16)[:len(d) * lanes].reshape(len(d), lanes)
        scale_bits, _, ok = gs.beat_entries(fmt, table, layers, heads, kvs, chans, lanes, config)
        dtype = element(elem).dtype
        scale_val = scale_bits.astype(np.uint16).view(dtype).astype(np.float64)
        qmax = gs.QMAX[f.code_bits]
        u = rng.uniform(-qmax - 2, qmax + 2, (len(d), lanes))
        ties = rng.random((len(d), lanes)) < 0.3
        u = np.where(ties, np.floor(u) + 0.5, u)
        with np.errstate(over="ignore"):  # huge scales overflow to Inf: non-finite inputs are stimulus too
            tuned = (u * scale_val).astype(np.float32).astype(dtype).view(np.uint16)
        pick = (rng.random(len(d)) < TUNED_RATE) & ok
        body[d] = np.where(pick[:, None], tuned, pool)
    else:
        body[d] = rng.integers(-(1 << (f.code_bits - 1)), 1 << (f.code_bits - 1), (len(d), lanes))
    return Commands(memset, body, layer, head, kv, channel, index, value)


def command_bytes(cmds: Commands, target: str, fmt: str, config: KVPathConfig = DEFAULT) -> np.ndarray:
    f = get_format(fmt)
    lanes = cmds.body.shape[1]
    if target == "quantizer":
        body = cmds.body.astype(np.uint16)
    else:
        body = gs.pack_codes(cmds.body, f.name)
    return pack_beats(target, f.code_bits, lanes, config, body, cmds.layer, cmds.head, cmds.kv, cmds.channel,
                      cmds.memset, cmds.index, cmds.value)


# ----------------------------------------------------------------------------- RTL side

def rtl_commands(cmds: Commands, target: str, fmt: str, *, simulator: str, build_dir: Path, seed: int = 1,
                 throttles=THROTTLES, elem: str = "fp16", config: KVPathConfig = DEFAULT):
    from kvpath.sim.static.tb_dut import StaticTop

    lanes = cmds.body.shape[1]
    top = StaticTop(target, fmt, lanes, elem, config)
    in_beats = command_bytes(cmds, target, fmt, config)
    return simulate_stream(top, DUT_MODULE[target], in_beats, len(in_beats), top.res_layout.size // 8,
                           {name: 32 for name in top.counter_names}, simulator, build_dir, seed, throttles)


def run(target: str, fmt: str, lanes: int, simulator: str, vectors: int, seed: int, build_root: Path,
        throttles=THROTTLES, elem: str = "fp16", config: KVPathConfig = DEFAULT) -> RegressionResult:
    """Regress one static-scale block (``quantizer`` or ``dequantizer``) and its cache copy."""
    f = get_format(fmt)
    check_elem(elem)
    if f.family != "static":
        raise ValueError(f"{f.name} is not a static-scale format; use kvpath.sim.datapath.regression")
    if target not in DUT_MODULE:
        raise ValueError(f"unknown target {target!r}")
    start = time.perf_counter()
    n_data = -(-max(vectors, lanes) // lanes)
    cmds = build_commands(target, fmt, lanes, n_data, seed, elem, config)
    build_dir = Path(build_root) / f"static_{target}_{f.name}_{elem}_l{lanes}_{simulator}"
    runs = rtl_commands(cmds, target, fmt, simulator=simulator, build_dir=build_dir, seed=seed,
                        throttles=throttles, elem=elem, config=config)
    result = RegressionResult(target, f.name, simulator, lanes, n_data * lanes, elem=elem)
    # The cache is memory, not registers: the harness's reset between passes leaves it as the previous
    # pass left it, so each pass replays its commands from the previous pass's final table.
    table = gs.empty_table(fmt, config)
    for k, r in enumerate(runs):
        expected, expect_counters, table = ref_commands(cmds.prefix(r.in_beats), target, fmt, elem, config, table)
        m, details = _compare(f"pass {k} (valid {throttles[k][0]}/256, ready {throttles[k][1]}/256)",
                              expected, expect_counters, r, 1)
        result.mismatches += m
        result.details += details
    first = runs[0]
    result.sim_s = first.run_s
    result.stream_elements_per_s = n_data * lanes / first.pass_s
    result.beats_per_cycle = max(first.in_beats, first.out_beats) / max(1, first.cycles)
    result.steady_beats_per_cycle = first.steady_beats_per_cycle
    result.wall_s = time.perf_counter() - start
    return result
