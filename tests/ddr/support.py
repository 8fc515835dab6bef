"""How the mover tests build one configuration and run one cocotb testbench module on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kvpath.hdl.generate import write_verilog
from kvpath.sim.lib.runner import run_cocotb

SEED = int(os.environ.get("KVPATH_DDR_SEED", "1"))
SIMS = ["icarus", pytest.param("verilator", marks=pytest.mark.verilator)]


def run(component, top: str, tb: str, simulator: str, build_dir: Path, *, params: dict | None = None,
        env: dict | None = None, testcase=None, seed: int = SEED) -> dict:
    """Build ``component`` as ``top`` and run ``kvpath.sim.ddr.<tb>`` on it; the seed goes to the
    testbench (and into its failure messages)."""
    build_dir = Path(build_dir)
    verilog = write_verilog(component, top, build_dir / f"{top}.v")
    extra = {"KVPATH_DDR_PARAMS": json.dumps(params or {}), "KVPATH_DDR_SEED": str(seed)}
    extra.update({k: str(v) for k, v in (env or {}).items()})
    return run_cocotb(verilog=verilog, toplevel=top, test_module=f"kvpath.sim.ddr.{tb}", simulator=simulator,
                      build_dir=build_dir, quiet=True, public=False, extra_env=extra, testcase=testcase)


# Other corners of the parameter space, on Icarus: long bursts (256 beats = one 4 KiB page), one
# burst in flight, a 64-bit bus with 49-bit addresses and wider IDs, other cache/prot values.
VARIANTS = {
    "b256_o2": dict(max_burst=256, max_outstanding=2),
    "b1_o1": dict(max_burst=1, max_outstanding=1, tag_bits=3),
    "d8_a49": dict(data_bytes=8, addr_width=49, id_width=4, max_burst=32, cache=0b1111, prot=0b010, len_bits=16),
    "d32": dict(data_bytes=32, max_burst=8, max_outstanding=8),
}


# Per-variant run sizes: one beat per burst (b1_o1) makes every beat an AW and a B, slow to simulate.
VARIANT_SIZES = {
    "*": {"KVPATH_DDR_COMMANDS": 25, "KVPATH_DDR_BULK_BEATS": 1500, "KVPATH_DDR_DRAIN_ROUNDS": 2},
    "b1_o1": {"KVPATH_DDR_COMMANDS": 10, "KVPATH_DDR_BULK_BEATS": 400, "KVPATH_DDR_DRAIN_ROUNDS": 2},
}
