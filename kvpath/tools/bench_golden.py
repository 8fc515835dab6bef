"""Quantize throughput of the golden model vs gguf-py: ``kvpath bench golden``.

The array is one layer's K (or V) cache of the Gemma 3n preset at full context: 32768 tokens x
(2 KV heads x 256) FP16 elements = 16 Mi elements, seeded standard-normal data. gguf gets the
float32 copy prepared outside its timing (gguf.quantize works on float32); kvpath's time includes
everything from the float16 input. gguf and kvpath alternate run by run so both see the same
machine load; each figure is the median of the runs. Before timing, the outputs are checked
byte for byte against each other.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from kvpath.config import GGML_FORMATS, get_format

from kvpath.golden import quantize

SHAPE = (32768, 512)


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench(fmt: str, x: np.ndarray, x32: np.ndarray, runs: int):
    import gguf

    qtype = gguf.GGMLQuantizationType[get_format(fmt).ggml_type]
    ours = quantize(x, fmt)
    ref = gguf.quantize(x32, qtype)
    if not np.array_equal(ours.reshape(-1), ref.reshape(-1)):
        raise SystemExit(f"{fmt}: kvpath and gguf outputs differ; not benchmarking a wrong result")
    t_gguf, t_ours = [], []
    for _ in range(runs):
        t_gguf.append(_time(lambda: gguf.quantize(x32, qtype)))
        t_ours.append(_time(lambda: quantize(x, fmt)))
    return statistics.median(t_gguf), statistics.median(t_ours)


def main(argv=None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="timed runs per format (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--formats", nargs="*", default=list(GGML_FORMATS))
    args = ap.parse_args(argv)

    x = np.random.default_rng(args.seed).standard_normal(SHAPE).astype(np.float16)
    x32 = x.astype(np.float32)
    n = x.size
    print(f"array {SHAPE[0]}x{SHAPE[1]} float16 ({n} elements), seed {args.seed}, "
          f"median of {args.runs} alternating runs, load average {os.getloadavg()[0]:.2f}\n")
    print("| format | gguf.quantize (elements/s) | kvpath.golden.quantize (elements/s) | ratio kvpath/gguf |")
    print("|---|---|---|---|")
    for fmt in args.formats:
        t_gguf, t_ours = bench(fmt, x, x32, args.runs)
        print(f"| {fmt} | {n / t_gguf:.3e} | {n / t_ours:.3e} | {t_gguf / t_ours:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
