"""``kvpath selftest``: check a live KV cache through the driver, byte for byte against the engine
model, then measure its bandwidth.

The same code runs on every backend: ``model`` (the engine model: checks the tool itself), ``sim``
(the generated top in a simulator through ``RemoteSim``: what CI runs) and ``board`` (a KV260
programmed with ``kvpath program``: UIO registers and u-dma-buf memory). Two phases:

1. check: a decode workload (``driver/workload.py``: sink + window layers and a full-attention layer,
   rings that wrap and evict) through the backend and, call for call, through the engine model;
   every read and every region must be identical, and every region must decode with gguf to what
   the read path returned.
2. bandwidth: appends and whole-cache reads on the backend alone, timed; DDR bytes moved (the
   engine's counters) per second of wall time, and on ``sim`` per simulated clock cycle.

The last line is

    selftest backend=B format=F tokens=N mismatches=M bytes=X mb_per_s=Y
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path


from kvpath.config import DEFAULT, FORMATS, KVPathConfig

MEM_BYTES = 4 << 20
# The model's and the simulation's DDR window: above 4 GiB, as the K26's HP ports see DDR_HIGH.
MEM_BASE = 0x8_0000_0000


def parse(argv, prog):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", choices=("model", "sim", "board"), default="sim")
    ap.add_argument("--format", dest="fmt", choices=sorted(FORMATS), default=DEFAULT.fmt)
    ap.add_argument("--simulator", choices=("icarus", "verilator"), default="verilator")
    ap.add_argument("--tokens", type=int, default=2048, help="tokens of the check phase (default 2048)")
    ap.add_argument("--bandwidth-tokens", type=int, default=None,
                    help="tokens appended in the bandwidth phase (default: as --tokens)")
    ap.add_argument("--layers", type=int, default=5, help="KV layers (4 sink + window, 1 full; default 5)")
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=256)
    ap.add_argument("--window", type=int, default=28)
    ap.add_argument("--sinks", type=int, default=4)
    ap.add_argument("--read-every", type=int, default=256, help="read the whole cache every N tokens")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("build/selftest"), help="simulation build directory")
    board = ap.add_argument_group("board backend")
    board.add_argument("--app", type=Path, help="the Kria app folder (for kvpath_regs.json and the build's "
                                                 "configuration); default: the one kvpath program installed")
    board.add_argument("--uio", default="kvpath", help="UIO device name of the register block")
    board.add_argument("--udmabuf", default="udmabuf_kvpath", help="u-dma-buf device of the KV memory")
    board.add_argument("--sysroot", default="/", help="prefix of every /sys and /dev path (tests, chroots)")
    return ap.parse_args(argv)


def _board_transport(args):
    from kvpath.driver.board import open_board

    return open_board(args.uio, args.udmabuf, args.sysroot)


@contextlib.contextmanager
def open_backend(args, config: KVPathConfig):
    """The backend's transport, closed (and for ``sim``: its simulator ended and checked) on exit."""
    if args.backend == "model":
        from kvpath.golden.kvcache import KVCacheModel

        yield KVCacheModel(config, mem_bytes=MEM_BYTES, mem_base=MEM_BASE)
    elif args.backend == "sim":
        from kvpath.sim.top.remote import RemoteSim

        build = (args.out / f"sim_{config.fmt}_{args.simulator}").resolve()
        print(f"selftest: building and starting kvpath_kvcache on {args.simulator} in {build}", flush=True)
        with RemoteSim(config, build_dir=build, simulator=args.simulator, mem_base=MEM_BASE, mem_bytes=MEM_BYTES,
                       seed=args.seed, pauses="none") as sim:
            yield sim
    else:
        with _board_transport(args) as board:
            yield board


def bandwidth(cache, workload, tokens: int, transport) -> dict:
    """Appends then one read of every (layer, head, K|V), on the backend alone: DDR bytes per second
    of wall time (counters' deltas), and per simulated cycle where the transport counts cycles."""
    from kvpath.driver.workload import Inputs
    from kvpath.elements import stream_element

    inputs = Inputs(workload, stream_element(cache.config.elem).dtype)
    before = cache.counters()
    cycles0 = getattr(transport, "cycles", None)
    t0 = time.perf_counter()
    for _ in range(tokens):
        cache.append(0, *inputs.token())
    cache.flush()
    t1 = time.perf_counter()
    written = cache.counters()["ddr_bytes_written"] - before["ddr_bytes_written"]
    for layer in range(workload.layers):
        for head in range(workload.kv_heads):
            for kv in (0, 1):
                cache.read(0, layer, head, kv)
    t2 = time.perf_counter()
    after = cache.counters()
    read = after["ddr_bytes_read"] - before["ddr_bytes_read"]
    result = {"tokens": tokens, "bytes_written": written, "bytes_read": read, "write_s": t1 - t0, "read_s": t2 - t1,
              "write_mb_per_s": written / (t1 - t0) / 1e6, "read_mb_per_s": read / max(t2 - t1, 1e-9) / 1e6}
    if cycles0 is not None:
        result["cycles"] = transport.cycles - cycles0
    return result


def main(argv=None, prog: str | None = None) -> int:
    from kvpath.driver.kvcache import KVCache
    from kvpath.driver.workload import Workload, run
    from kvpath.golden.kvcache import KVCacheModel

    args = parse(argv, prog)
    config = KVPathConfig(fmt=args.fmt)
    workload = Workload(tokens=args.tokens, layers=args.layers, kv_heads=args.kv_heads, head_dim=args.head_dim,
                        sinks=args.sinks, window=args.window, read_every=args.read_every, seed=args.seed)
    with open_backend(args, config) as transport:
        cache = KVCache(transport, config)
        reference = KVCache(KVCacheModel(config, mem_bytes=transport.mem_bytes, mem_base=transport.mem_base), config)
        t0 = shown = time.perf_counter()

        def show(done, total, report):
            nonlocal shown
            if time.perf_counter() - shown > 0.5 or done == total:
                shown = time.perf_counter()
                sys.stderr.write(f"\rcheck: token {done}/{total}  reads {report.reads}  mismatches "
                                 f"{report.mismatches}  {shown - t0:5.0f} s")

        report = run(cache, workload, reference=reference, progress=None if args.no_progress else show)
        if not args.no_progress:
            sys.stderr.write("\n")
        bw = bandwidth(cache, workload, args.bandwidth_tokens or args.tokens, transport)
    mismatches = report.mismatches
    print(f"check      {report.tokens} tokens, {report.reads} reads of {report.vectors_read:,} vectors, "
          f"{report.gguf_checked:,} elements decoded by gguf: {mismatches} mismatches "
          f"(reads {report.read_mismatches}, regions {report.region_mismatches}, gguf {report.gguf_mismatches})")
    print(f"bandwidth  write {bw['bytes_written']:,} B in {bw['write_s']:.2f} s = {bw['write_mb_per_s']:.2f} MB/s; "
          f"read {bw['bytes_read']:,} B in {bw['read_s']:.2f} s = {bw['read_mb_per_s']:.2f} MB/s (wall time, "
          f"driver included)")
    if "cycles" in bw:
        moved = bw["bytes_written"] + bw["bytes_read"]
        print(f"           {bw['cycles']:,} simulated cycles: {moved / bw['cycles']:.2f} B/cycle of the "
              f"{config.bus_bytes}-byte port (register traffic and driver waits included)")
    total = bw["bytes_written"] + bw["bytes_read"]
    mb_per_s = total / (bw["write_s"] + bw["read_s"]) / 1e6
    print(f"selftest backend={args.backend} format={config.fmt} tokens={report.tokens} mismatches={mismatches} "
          f"bytes={total} mb_per_s={mb_per_s:.2f}")
    return 0 if mismatches == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
