"""Throughput of the KV cache engine (KVCacheTop) at the default build: ``kvpath bench engine``.

Runs ``kvpath.sim.top.bench_engine`` on Verilator for ``read_ports`` = 1, 2 and 4 (one build each;
every other field of ``KVPathConfig()`` at its default: q8_0 (``--format``), 16 lanes on both
paths, head_dim 256, so a q8_0 row is 8 blocks x 34 B = 272 B = 17 beats of the 128-bit port), first
with every channel always ready, then with random pauses on every channel (``--pause-rate``).
Prints two tables:

* write path (master 0): W beats and WSTRB bytes per cycle from the first AW to the last B, the
  ratio to the port's 16 B/cycle, K/V input beats per cycle (first to last input handshake), and
  the idle cycles of W per row with the most frequent gap lengths between W beats and K/V beats;
* read path: R bytes per cycle per read master (first AR to last R on it) and in total (first AR
  on any master to last R on any), the ratio to 16 B/cycle per port, output beats per cycle.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from kvpath.config import KVPathConfig
from kvpath.hdl.generate import MODULES, write_verilog
from kvpath.sim.lib.runner import build_cocotb, simulate_cocotb

TOP = MODULES["kvcache"]
MODULE = "kvpath.sim.top.bench_engine"


def build(config: KVPathConfig, workdir: Path) -> tuple[Path, float]:
    from kvpath.hdl.top.kvcache import KVCacheTop

    bdir = workdir / f"{TOP}_{config.fmt}_rp{config.read_ports}"
    verilog = write_verilog(KVCacheTop(config), TOP, bdir / f"{TOP}.v")
    seconds = build_cocotb(verilog=verilog, toplevel=TOP, simulator="verilator", build_dir=bdir, public=False,
                           quiet=True)
    return bdir, seconds


def simulate(config: KVPathConfig, bdir: Path, out: Path, pauses: str, seed: int, tokens: int, reads: int,
             pause_rate: float = 0.1) -> float:
    return simulate_cocotb(toplevel=TOP, test_module=MODULE, simulator="verilator", build_dir=bdir, public=False,
                           quiet=True, log_name=f"sim_{pauses}_{seed}.log",
                           extra_env={"KVPATH_BENCH_CONFIG": json.dumps(dataclasses.asdict(config)),
                                      "KVPATH_BENCH_OUT": str(out), "KVPATH_BENCH_PAUSES": pauses,
                                      "KVPATH_SEED": str(seed), "KVPATH_BENCH_TOKENS": str(tokens),
                                      "KVPATH_BENCH_READS": str(reads), "KVPATH_BENCH_PAUSE_RATE": str(pause_rate)})


def measure(ports=(1, 2, 4), pauses=("none", "random"), seed: int = 1, tokens: int = 64, reads: int = 24,
            workdir: Path | None = None, log=print, pause_rate: float = 0.1, fmt: str = "q8_0") -> list[dict]:
    """Build and run every read-port count; returns the JSON records (one per phase and run)."""
    with tempfile.TemporaryDirectory(prefix="kvpath-bench-engine-") as tmp:
        workdir = Path(workdir or tmp).resolve()   # the simulator runs in the build directory
        workdir.mkdir(parents=True, exist_ok=True)
        out = workdir / "results.jsonl"
        out.unlink(missing_ok=True)
        for n in ports:
            config = KVPathConfig(fmt=fmt, read_ports=n)
            bdir, build_s = build(config, workdir)
            log(f"read_ports={n}: Verilator build {build_s:.0f} s")
            for pmode in pauses:
                run_s = simulate(config, bdir, out, pmode, seed, tokens, reads, pause_rate)
                log(f"read_ports={n} pauses={pmode}: simulation {run_s:.0f} s")
        return [json.loads(line) for line in out.read_text().splitlines()]


def mode(r: dict) -> str:
    return f"random {r['pause_rate']:g}" if r["pauses"] == "random" else r["pauses"]


def gaps(hist: dict) -> str:
    return ", ".join(f"{g}×{k}" for g, k in hist.items()) or "none"


def write_table(rows: list[dict]) -> list[str]:
    lines = ["| read_ports | pauses | rows | W beats / cycle | WSTRB bytes / cycle | of 16 B/cycle | K/V beats / cycle "
             "| W idle cycles / row | W gaps (cycles×count) | K/V gaps (cycles×count) | cycles |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["phase"] != "write":
            continue
        bpc = r["w_bytes"] / r["cycles"]
        lines.append(f"| {r['read_ports']} | {mode(r)} | {r['rows']} | {r['w_beats'] / r['cycles']:.3f} "
                     f"| {bpc:.2f} | {bpc / r['bus_bytes']:.1%} | {r['kv_beats'] / r['kv_cycles']:.3f} "
                     f"| {r['w_idle'] / r['rows']:.2f} | {gaps(r['w_gaps'])} | {gaps(r['kv_gaps'])} | {r['cycles']} |")
    return lines


def read_table(rows: list[dict]) -> list[str]:
    lines = ["| read_ports | pauses | port | rows | R bytes / cycle | of 16 B/cycle | output beats / cycle "
             "| R gaps (cycles×count) | cycles |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["phase"] != "read":
            continue
        bb = r["bus_bytes"]
        n_rows = r["reads_per_port"] * r["rows_per_read"]
        for p in r["ports"]:
            bpc = p["r_beats"] * bb / p["r_cycles"]
            lines.append(f"| {r['read_ports']} | {mode(r)} | {p['port']} | {n_rows} | {bpc:.2f} | {bpc / bb:.1%} "
                         f"| {p['out_beats'] / p['out_cycles']:.3f} | {gaps(p['r_gaps'])} | {p['r_cycles']} |")
        if r["read_ports"] > 1:
            bpc = r["total_r_beats"] * bb / r["total_cycles"]
            lines.append(f"| {r['read_ports']} | {mode(r)} | all | {n_rows * r['read_ports']} | {bpc:.2f} "
                         f"| {bpc / (bb * r['read_ports']):.1%} of {bb * r['read_ports']} | | | {r['total_cycles']} |")
    return lines


def main(argv=None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--read-ports", type=int, nargs="+", default=[1, 2, 4], choices=(1, 2, 3, 4))
    ap.add_argument("--pauses", nargs="+", default=["none", "random"], choices=("none", "random"))
    ap.add_argument("--pause-rate", type=float, default=0.1,
                    help="--pauses random: chance per cycle that a pause of 1, 1, 2 or 5 cycles starts "
                         "(0.1: each channel paused about 20 %% of its cycles)")
    ap.add_argument("--format", dest="fmt", default="q8_0", choices=("q8_0", "q4_0", "q4_1", "mxfp4", "mxint8",
                                                                   "mxfp8_e4m3"),
                    help="the build's format (default: KVPathConfig()'s q8_0); head_dim is max_head_dim, 256")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=64,
                    help="tokens written (rows = tokens x 80 regions at the default build); also each ring's "
                         "capacity, so a READ is one run of this many rows")
    ap.add_argument("--reads", type=int, default=24, help="READs per read port")
    ap.add_argument("--workdir", type=Path, default=None, help="build directory (default: a temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw records here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = measure(args.read_ports, args.pauses, args.seed, args.tokens, args.reads, args.workdir,
                   pause_rate=args.pause_rate, fmt=args.fmt)
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print("\n".join(write_table(rows)))
    print()
    print("\n".join(read_table(rows)))
    print(f"\nwall {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
