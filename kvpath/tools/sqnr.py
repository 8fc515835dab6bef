"""SQNR of every block-scaled format, FP16 and BF16 input, on the same seeded 1 M-element arrays.

``kvpath sqnr`` prints a Markdown table: kvpath's golden quantize -> dequantize (values
rounded to the input's element type, as the RTL returns them) next to the reference library's own round
trip -- gguf for the ggml formats and mxfp4, gfloat for mxint8 and mxfp8_e4m3 -- once with the
reference's wide output (float32 / float64) and once with that output rounded to the input's element
type, which is what kvpath must equal. SQNR is 10*log10(sum x^2 / sum (x - x_hat)^2) over the whole
array, with x the input as the model receives it (after rounding to FP16 or BF16).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from kvpath.config import BLOCK_SCALED_FORMATS, get_format
from kvpath.elements import STREAM_ELEMENTS, element
from kvpath.golden import dequantize, oracle, quantize
from kvpath.stimulus import heavy_tailed



def datasets(n: int, seed: int) -> dict[str, np.ndarray]:
    """float32 sources; both are well inside FP16's range so FP16 and BF16 see the same data."""
    rng = np.random.default_rng(seed)
    return {
        "normal": rng.standard_normal(n).astype(np.float32),
        # Student-t (3 degrees of freedom) with 1/32 of 256 channels scaled 20-200x (KIVI/KVQuant keys).
        "heavy-tailed": heavy_tailed(rng, n).astype(np.float32),
    }


def sqnr_db(x: np.ndarray, x_hat: np.ndarray) -> float:
    x = x.astype(np.float64)
    err = float(np.sum((x - x_hat.astype(np.float64)) ** 2))
    sig = float(np.sum(x * x))
    return math.inf if err == 0 else 10 * math.log10(sig / err)


def kvpath_sqnr(x: np.ndarray, fmt: str) -> float:
    return sqnr_db(x, dequantize(quantize(x, fmt), fmt, x.dtype))


def reference_sqnr(x: np.ndarray, fmt: str) -> tuple[str, float, float]:
    """(library, SQNR of its wide output, SQNR of that output rounded to x's element type)."""
    lib, y = oracle.roundtrip(x, fmt)
    return lib, sqnr_db(x, y), sqnr_db(x, y.astype(np.float32).astype(x.dtype))


def table(n: int, seed: int, formats=BLOCK_SCALED_FORMATS) -> list[str]:
    data = datasets(n, seed)
    rows = ["| format | bits/elem | input | data | kvpath SQNR (dB) | reference | reference, wide output (dB) "
            "| reference, output rounded to input type (dB) |",
            "|---|---|---|---|---|---|---|---|"]
    for fmt in formats:
        bits = get_format(fmt).bits_per_element
        for elem, dtype in ((e, element(e).dtype) for e in STREAM_ELEMENTS):
            for name, src in data.items():
                x = src.astype(dtype)
                ours = kvpath_sqnr(x, fmt)
                lib, wide, rounded = reference_sqnr(x, fmt)
                rows.append(f"| {fmt} | {bits:g} | {elem} | {name} | {ours:.2f} | {lib} | {wide:.2f} | "
                            f"{rounded:.2f} |")
    return rows


def main(argv=None, prog: str | None = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--elements", type=int, default=1 << 20)
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--formats", nargs="*", default=list(BLOCK_SCALED_FORMATS))
    args = ap.parse_args(argv)
    print(f"# {args.elements} elements per array, seed {args.seed}")
    print("\n".join(table(args.elements, args.seed, args.formats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
