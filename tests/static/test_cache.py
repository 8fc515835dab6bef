"""The scale constant cache: random writes interleaved with a read on every cycle, refused writes, and
the ordering rule the datapaths rely on (a read sees every write of earlier cycles, none of its own)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from kvpath import scales
from kvpath.config import KVPathConfig
from kvpath.golden import static as gs
from kvpath.hdl.static.cache import ScaleCache
from kvpath.sim.static import regression as sr

SEED = 4242
SMALL = KVPathConfig(max_layers=3, max_kv_heads=2, max_head_dim=32)


@pytest.mark.parametrize("fmt,elem", [("int8_pc", "fp16"), ("int4_ph", "bf16")])
def test_reads_every_cycle_with_interleaved_writes(fmt, elem):
    rng = np.random.default_rng([SEED, len(fmt), len(elem)])
    quant_lanes, dequant_lanes = 8, 16
    dut = ScaleCache(fmt, elem, SMALL, quant_lanes=quant_lanes, dequant_lanes=dequant_lanes)
    n = dut.entries
    per = {"quant": quant_lanes if dut.scope == "channel" else 1,
           "dequant": dequant_lanes if dut.scope == "channel" else 1}
    cycles = 600
    valid = rng.random(cycles) < 0.6
    index = np.where(rng.random(cycles) < 0.15, rng.integers(n, 1 << 32, cycles), rng.integers(0, n, cycles))
    value = sr.random_entries(rng, cycles, elem)
    bad_value = rng.random(cycles) < 0.1
    value = np.where(bad_value, sr._nonfinite_entries(rng, cycles, elem), value).astype(np.uint32)
    rows = {name: rng.integers(0, n // p, cycles) for name, p in per.items()}
    model = np.zeros(n, np.uint32)
    seen = {"errors": 0, "writes": 0}

    async def bench(ctx):
        for t in range(cycles):
            ctx.set(dut.write.valid, int(valid[t]))
            ctx.set(dut.write.payload.index, int(index[t]))
            ctx.set(dut.write.payload.value, int(value[t]))
            for name in per:
                ctx.set(getattr(dut, name).row, int(rows[name][t]))
                ctx.set(getattr(dut, name).en, 1)
            await ctx.tick()
            # The read issued in cycle t returns the table before cycle t's write.
            for name, half in (("quant", 1), ("dequant", 0)):
                p = per[name]
                want = (model[rows[name][t] * p:(rows[name][t] + 1) * p] >> (16 * half)) & 0xFFFF
                got = [ctx.get(getattr(dut, name).data[k]) for k in range(p)]
                assert got == want.tolist(), f"seed {SEED} cycle {t} {name} row {rows[name][t]}"
            refused = bool(gs.apply_writes(model, index[t:t + 1], value[t:t + 1], elem)[0]) if valid[t] else False
            assert ctx.get(dut.error) == int(refused), f"seed {SEED} cycle {t}: error flag"
            seen["errors"] += refused
            seen["writes"] += bool(valid[t]) and not refused
            assert ctx.get(dut.write.ready) == 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen["errors"] > 20 and seen["writes"] > 200, seen


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_geometry_refuses_head_dim_not_multiple_of_lanes():
    with pytest.raises(ValueError, match="multiple"):
        ScaleCache("int4_pc", "fp16", KVPathConfig(max_head_dim=80), quant_lanes=32)
    with pytest.raises(ValueError, match="reader"):
        ScaleCache("int4_pc")


def test_command_order_matters_to_the_golden_replay():
    """The interleaved stimulus really rewrites live entries between data beats: replaying every
    MEMSET first would give other results, so the RTL regression checks the ordering."""
    cmds = sr.build_commands("quantizer", "int8_pc", 16, 2048, SEED)
    mix = np.flatnonzero(cmds.memset)
    first_data = np.flatnonzero(~cmds.memset)[0]
    late = mix[mix > first_data]
    assert len(late) > 50
    in_order, counters, _ = sr.ref_commands(cmds, "quantizer", "int8_pc")
    hoisted = np.concatenate([mix, np.flatnonzero(~cmds.memset)])
    reordered = sr.Commands(*(getattr(cmds, f)[hoisted] for f in cmds.__dataclass_fields__))
    other, _, _ = sr.ref_commands(reordered, "quantizer", "int8_pc")
    data_rows = np.flatnonzero(~cmds.memset)
    assert not np.array_equal(in_order[data_rows], other[len(mix):])
    assert counters["write_error_count"] > 0 and counters["context_error_count"] > 0
    assert scales.entry_count("channel") == 20480
