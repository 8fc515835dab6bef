"""BurstReader on Icarus and Verilator against cocotbext-axi's RAM (sim/ddr/tb_reader.py)."""

import pytest

from kvpath.hdl.ddr.reader import BurstReader
from tests.ddr.support import SEED, SIMS, VARIANT_SIZES, VARIANTS, run

@pytest.mark.parametrize("simulator", SIMS)
def test_reader_defaults(build_root, simulator):
    """Every cocotb test of tb_reader at the default parameters (short sizes)."""
    env = {"KVPATH_DDR_COMMANDS": 60, "KVPATH_DDR_BULK_BEATS": 5_000, "KVPATH_DDR_DRAIN_ROUNDS": 4}
    run(BurstReader(), "kvpath_reader", "tb_reader", simulator, build_root / f"reader_{simulator}", env=env)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_reader_variants(build_root, name):
    params = VARIANTS[name]
    run(BurstReader(**params), "kvpath_reader", "tb_reader", "icarus", build_root / f"reader_{name}",
        params=params, env=VARIANT_SIZES.get(name, VARIANT_SIZES["*"]),
        seed=SEED + 1)


@pytest.mark.long
@pytest.mark.verilator
def test_reader_bulk_100k(build_root):
    """At least 10**5 data beats with random pauses on every channel, all checked and counted."""
    run(BurstReader(), "kvpath_reader", "tb_reader", "verilator", build_root / "reader_bulk",
        env={"KVPATH_DDR_BULK_BEATS": 100_000}, testcase="bulk", seed=SEED + 10)


@pytest.mark.long
@pytest.mark.verilator
@pytest.mark.parametrize("seed", [2, 3])
def test_reader_long(build_root, seed):
    """The whole tb_reader with more commands and drain rounds, other seeds."""
    run(BurstReader(), "kvpath_reader", "tb_reader", "verilator", build_root / f"reader_long_{seed}",
        env={"KVPATH_DDR_COMMANDS": 600, "KVPATH_DDR_BULK_BEATS": 20_000, "KVPATH_DDR_DRAIN_ROUNDS": 30}, seed=seed)
