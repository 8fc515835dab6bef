"""BurstWriter on Icarus and Verilator against cocotbext-axi's RAM (sim/ddr/tb_writer.py)."""

import pytest

from kvpath.hdl.ddr.writer import BurstWriter
from tests.ddr.support import SEED, SIMS, VARIANT_SIZES, VARIANTS, run

@pytest.mark.parametrize("simulator", SIMS)
def test_writer_defaults(build_root, simulator):
    """Every cocotb test of tb_writer at the default parameters (short sizes)."""
    env = {"KVPATH_DDR_COMMANDS": 60, "KVPATH_DDR_BULK_BEATS": 5_000, "KVPATH_DDR_DRAIN_ROUNDS": 4}
    run(BurstWriter(), "kvpath_writer", "tb_writer", simulator, build_root / f"writer_{simulator}", env=env)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_writer_variants(build_root, name):
    params = VARIANTS[name]
    run(BurstWriter(**params), "kvpath_writer", "tb_writer", "icarus", build_root / f"writer_{name}",
        params=params, env=VARIANT_SIZES.get(name, VARIANT_SIZES["*"]),
        seed=SEED + 1)


@pytest.mark.long
@pytest.mark.verilator
def test_writer_bulk_100k(build_root):
    """At least 10**5 data beats with random pauses on every channel, all checked and counted."""
    run(BurstWriter(), "kvpath_writer", "tb_writer", "verilator", build_root / "writer_bulk",
        env={"KVPATH_DDR_BULK_BEATS": 100_000}, testcase="bulk", seed=SEED + 10)


@pytest.mark.long
@pytest.mark.verilator
@pytest.mark.parametrize("seed", [2, 3])
def test_writer_long(build_root, seed):
    """The whole tb_writer with more commands and drain rounds, other seeds."""
    run(BurstWriter(), "kvpath_writer", "tb_writer", "verilator", build_root / f"writer_long_{seed}",
        env={"KVPATH_DDR_COMMANDS": 600, "KVPATH_DDR_BULK_BEATS": 20_000, "KVPATH_DDR_DRAIN_ROUNDS": 30}, seed=seed)
