"""``kvpath bench movers`` still runs and the port stays busy every cycle of a long aligned command
(a cycle count, not a timing: deterministic for a seed). Long: it is the benchmark itself."""

from __future__ import annotations

import pytest

from kvpath.tools.bench_movers import measure, table


@pytest.mark.long
@pytest.mark.verilator
def test_movers_saturate_the_port(tmp_path):
    rows = measure([1], "verilator", tmp_path)
    lines = table(rows)
    assert len(lines) == 2 + 10, lines
    for r in rows:
        if r["scenario"] == "aligned 16 KiB":
            cycles = r["cycles"] if r["dut"] == "writer" else r["axi_cycles"]
            assert r["axi_beats"] == cycles, f"seed=1 {r['dut']}: the port idled ({r})"
        # bytes per AXI beat can never exceed the bus width, and every command byte was moved
        assert r["bytes"] <= 16 * r["axi_beats"], r
