"""Throughput of the DDR movers (BurstWriter, BurstReader) at the default build: ``kvpath bench movers``.

Runs ``kvpath.sim.ddr.bench_movers`` once per seed (every channel always ready, cocotbext-axi's
RAM on the bus) and prints, per scenario, the median over the seeds. Columns:

* AXI beats / cycle: W (writer) or R (reader) handshakes per cycle over the scenario's window;
  1.000 is the port's limit.
* stream beats / cycle: the mover's data stream side (writer: ``ceil(length / 16)`` input beats per
  command; reader: output beats).
* bytes / cycle: command bytes per cycle (16 is the 128-bit port's limit), and the ideal for
  this scenario: command bytes per AXI beat, i.e. what one beat per clock gives when unaligned
  commands start and end inside a beat.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from kvpath.hdl.ddr.reader import BurstReader
from kvpath.hdl.ddr.writer import BurstWriter
from kvpath.hdl.generate import write_verilog
from kvpath.sim.lib.runner import run_cocotb


def measure(seeds, simulator: str, workdir: Path) -> list[dict]:
    out = workdir / "results.jsonl"
    out.unlink(missing_ok=True)
    for seed in seeds:
        for component, top, test in ((BurstWriter(), "kvpath_bench_writer", "bench_writer"),
                                     (BurstReader(), "kvpath_bench_reader", "bench_reader")):
            build = workdir / f"{top}_{simulator}"
            verilog = write_verilog(component, top, build / f"{top}.v")
            run_cocotb(verilog=verilog, toplevel=top, test_module="kvpath.sim.ddr.bench_movers",
                       simulator=simulator, build_dir=build, quiet=True, public=False, testcase=test,
                       extra_env={"KVPATH_BENCH_OUT": str(out), "KVPATH_DDR_SEED": str(seed),
                                  "KVPATH_DDR_PARAMS": "{}"})
    return [json.loads(line) for line in out.read_text().splitlines()]


def table(rows: list[dict]) -> list[str]:
    lines = ["| mover | scenario | commands | AXI beats / cycle | stream beats / cycle | bytes / cycle "
             "| ideal bytes / cycle | ratio | slave stall cycles | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for dut in ("writer", "reader"):
        for scenario in dict.fromkeys(r["scenario"] for r in rows if r["dut"] == dut):
            rs = [r for r in rows if r["dut"] == dut and r["scenario"] == scenario]

            def med(f):
                return statistics.median(f(r) for r in rs)
            axi_cycles = "cycles" if dut == "writer" else "axi_cycles"
            axi = med(lambda r: r["axi_beats"] / r[axi_cycles])
            stream = med(lambda r: r["data_beats"] / r["cycles"])
            bpc = med(lambda r: r["bytes"] / r["cycles"])
            ideal = med(lambda r: r["bytes"] / r["axi_beats"])
            lines.append(f"| {dut} | {scenario} | {rs[0]['commands']} | {axi:.3f} | {stream:.3f} | {bpc:.2f} "
                         f"| {ideal:.2f} | {bpc / ideal:.3f} | {med(lambda r: r['slave_stall']):.0f} | {len(rs)} |")
    return lines


def main(argv=None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--simulator", default="verilator", choices=("icarus", "verilator"))
    ap.add_argument("--workdir", type=Path, default=None, help="build directory (default: a temporary one)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kvpath-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = measure(args.seeds, args.simulator, workdir)
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
