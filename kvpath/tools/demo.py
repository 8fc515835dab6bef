"""``kvpath demo``: decode a Gemma-3n-E4B-shaped workload through the KV cache and check everything.

Backends: ``sim`` (default: the generated KVCacheTop in cocotb, driven by the driver through
``SimTransport``, every read compared with the engine model) or ``model`` (the engine model alone).
Either way every region is decoded by gguf and held to what the read path returned. Prints a
progress bar and a summary, writes a JSON report and a PNG plot, and ends with the line

    demo backend=B format=F tokens=N mismatches=M compression=X.XX

``--dump DIR`` also writes each region's raw DDR image, its inputs (.npy) and ``manifest.json``
(``driver/workload.py``, ``dump``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict, fields
from pathlib import Path

from kvpath.config import DEFAULT, ELEM_TYPES, FORMATS, KVPathConfig
from kvpath.driver.workload import Workload

MEM_BASE = 0x8_0000_0000  # the K26's DDR above 4 GiB (HP ports' DDR_HIGH): region bases use REGION_BASE_HI
MEM_BYTES = 4 << 20


def parse(argv, prog):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("sim", "model"), default="sim")
    ap.add_argument("--format", dest="fmt", choices=sorted(FORMATS), default=DEFAULT.fmt)
    ap.add_argument("--input", dest="elem", choices=ELEM_TYPES, default=DEFAULT.elem)
    ap.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator")
    ap.add_argument("--pauses", choices=("none", "mixed"), default="none",
                    help="random pauses on every stream and AXI channel (none: bus figures at full rate)")
    defaults = Workload()
    for f in fields(Workload):
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                        default=getattr(defaults, f.name), help=f"workload {f.name} (default {getattr(defaults, f.name)})")
    ap.add_argument("--dump", type=Path, help="write region images, inputs and manifest.json here")
    ap.add_argument("--out", type=Path, default=Path("build/demo"), help="report.json, demo.png and the build")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def _bar(done: int, total: int, reads: int, mismatches: int, started: float) -> str:
    width = 32
    filled = width * done // max(total, 1)
    return (f"\r[{'#' * filled}{'.' * (width - filled)}] token {done}/{total}  reads {reads}  "
            f"mismatches {mismatches}  {time.perf_counter() - started:5.0f} s")


def run_sim(args, config: KVPathConfig, workload: Workload) -> dict:
    from kvpath.hdl.generate import write_verilog
    from kvpath.hdl.top.kvcache import KVCacheTop
    from kvpath.sim.lib.runner import run_cocotb

    build = (args.out / f"sim_{config.fmt}_{config.elem}_{args.simulator}").resolve()
    build.mkdir(parents=True, exist_ok=True)
    report_path, progress_path = build / "report.json", build / "progress.jsonl"
    for p in (report_path, progress_path):
        p.unlink(missing_ok=True)
    print(f"building kvpath_kvcache ({config.fmt}, {config.elem}) for {args.simulator} in {build}", flush=True)
    verilog = write_verilog(KVCacheTop(config), "kvpath_kvcache", build / "kvpath_kvcache.v")
    params = {"config": asdict(config), "workload": asdict(workload), "mem_base": MEM_BASE, "mem_bytes": MEM_BYTES,
              "pauses": args.pauses, "simulator": args.simulator, "out": str(report_path),
              "progress": None if args.no_progress else str(progress_path),
              "dump": str(args.dump.resolve()) if args.dump else None}
    failure = []

    def simulate():
        try:
            run_cocotb(verilog=verilog, toplevel="kvpath_kvcache", test_module="kvpath.sim.top.demo_bench",
                       simulator=args.simulator, build_dir=build, quiet=True, public=False,
                       extra_env={"KVPATH_DEMO": json.dumps(params)})
        except Exception as e:  # reported after the progress bar stops
            failure.append(e)

    started = time.perf_counter()
    worker = threading.Thread(target=simulate)
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
        if not args.no_progress and progress_path.exists():
            lines = progress_path.read_text().splitlines()
            if lines:
                p = json.loads(lines[-1])
                sys.stderr.write(_bar(p["done"], p["total"], p["reads"], p["mismatches"], started))
                sys.stderr.flush()
    if not args.no_progress:
        sys.stderr.write("\n")
    if not report_path.exists():
        raise SystemExit(f"demo: the simulation produced no report ({failure[0] if failure else 'no error'}); "
                         f"logs in {build}")
    report = json.loads(report_path.read_text())
    report["wall_s_total"] = time.perf_counter() - started
    return report


def run_model(args, config: KVPathConfig, workload: Workload) -> dict:
    from kvpath.driver.kvcache import KVCache
    from kvpath.driver.workload import run
    from kvpath.golden.kvcache import KVCacheModel

    started = time.perf_counter()

    def show(done, total, r):
        if not args.no_progress:
            sys.stderr.write(_bar(done, total, r.reads, r.mismatches, started))

    cache = KVCache(KVCacheModel(config, mem_bytes=MEM_BYTES, mem_base=MEM_BASE), config)
    report = run(cache, workload, progress=show, dump_dir=args.dump).to_dict()
    if not args.no_progress:
        sys.stderr.write("\n")
    report["backend"] = "model"
    report["wall_s_total"] = time.perf_counter() - started
    return report


def summary(report: dict, config: KVPathConfig) -> list[str]:
    c = report["counters"]
    written, read = c["ddr_bytes_written"], c["ddr_bytes_read"]
    lines = [
        f"tokens            {report['tokens']}  ({report['workload']['layers']} layers x {report['workload']['kv_heads']} "
        f"KV heads x head_dim {report['workload']['head_dim']}, K and V)",
        f"DDR bytes written {written:,}  (FP16 would be {report['fp16_bytes_written']:,}: "
        f"{written / report['fp16_bytes_written']:.3f}x)",
        f"DDR bytes read    {read:,}  (FP16 would be {report['fp16_bytes_read']:,}: "
        f"{read / max(report['fp16_bytes_read'], 1):.3f}x)  in {report['reads']} reads of {report['vectors_read']:,} vectors",
        f"compression       {report['fp16_bytes_written'] / written:.2f}x vs FP16 ({config.fmt})",
        f"mismatches        {report['mismatches']}  (reads vs model: {report['read_mismatches']}, regions vs "
        f"model: {report['region_mismatches']}, reads vs gguf decode: {report['gguf_mismatches']} of "
        f"{report['gguf_checked']:,} elements)",
        f"attention vs FP16 cosine min {report['attention_cosine_min']:.5f} mean {report['attention_cosine_mean']:.5f}; "
        f"relative error max {report['attention_rel_err_max']:.4f} mean {report['attention_rel_err_mean']:.4f}",
    ]
    if report.get("backend") == "sim" and c.get("cycles"):
        cycles = c["cycles"]
        lines.append(f"simulated cycles  {cycles:,}; DDR bytes per cycle {(written + read) / cycles:.2f} of "
                     f"{config.bus_bytes} ({(written + read) / cycles / config.bus_bytes:.1%} of the port over the "
                     f"whole run, register traffic and driver pauses included; {report['simulator']}, pauses "
                     f"{report['pauses']})")
    lines.append(f"wall time         {report['wall_s_total']:.1f} s")
    return lines


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["per_read"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for layer in sorted({r[1] for r in rows}):
        pts = [r for r in rows if r[1] == layer]
        kind = "global" if (layer + 1) % 5 == 0 else "local"
        a.scatter([r[0] for r in pts], [r[5] for r in pts], s=12, label=f"layer {layer} ({kind})")
    a.set_xlabel("tokens decoded")
    a.set_ylabel("attention output relative error vs FP16")
    a.set_title(f"{report['format']}: attention over the read-back cache")
    a.legend(fontsize=7)
    c = report["counters"]
    names = ["FP16 written", f"{report['format']} written", "FP16 read", f"{report['format']} read"]
    values = [report["fp16_bytes_written"], c["ddr_bytes_written"], report["fp16_bytes_read"], c["ddr_bytes_read"]]
    b.bar(names, [v / 2**20 for v in values], color=["#999", "#2a7", "#999", "#27a"])
    b.set_ylabel("MiB")
    b.set_title(f"DDR traffic, {report['tokens']} tokens (backend {report['backend']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None, prog: str | None = None) -> int:
    args = parse(argv, prog)
    config = KVPathConfig(fmt=args.fmt, elem=args.elem)
    workload = Workload(**{f.name: getattr(args, f.name) for f in fields(Workload)})
    args.out.mkdir(parents=True, exist_ok=True)
    report = (run_sim if args.backend == "sim" else run_model)(args, config, workload)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / "demo.png")
    print("\n".join(summary(report, config)))
    print(f"report {args.out / 'report.json'}, plot {args.out / 'demo.png'}"
          + (f", dump {args.dump}" if args.dump else ""))
    compression = report["fp16_bytes_written"] / report["counters"]["ddr_bytes_written"]
    print(f"demo backend={report['backend']} format={config.fmt} tokens={report['tokens']} "
          f"mismatches={report['mismatches']} compression={compression:.2f}")
    return 0 if report["mismatches"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
