"""Calibration of the static scales: sample K/V in, scale-cache entries out, and the SQNR they give.

From sample arrays shaped ``(layers, heads, tokens, head_dim)`` the driver picks a clipping value per
(layer, head) or per (layer, head, channel) -- the largest magnitude (``absmax``) or a percentile of
the magnitudes (``percentile``, e.g. 99.9) -- and sets ``scale = clip / qmax`` (127 or 7), rounded to
nearest even in the element type and raised to the smallest scale whose reciprocal is finite. A
group with no non-zero sample gets scale 1. ``kvpath.golden.static.make_entry`` turns each scale into
its 32-bit entry (scale and RNE reciprocal); ``ScaleTable.writes()`` lists the ``(index, value)``
pairs to load through the register block.

``kvpath calibrate`` measures SQNR of the static formats against ggml's per-block
formats on seeded heavy-tailed K/V with outlier key channels (docs/static_formats.md).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

from kvpath import scales
from kvpath.config import DEFAULT, KVPathConfig, check_elem, get_format
from kvpath.golden import static as gs
from kvpath.elements import element

METHODS = ("absmax", "percentile")


def clip_values(x: np.ndarray, scope: str, method: str = "absmax", percentile: float = 99.9) -> np.ndarray:
    """Clipping magnitude per group: ``(layers, heads)`` per head, ``(layers, heads, head_dim)`` per channel."""
    if x.ndim != 4:
        raise ValueError(f"samples must be (layers, heads, tokens, head_dim), got shape {x.shape}")
    a = np.abs(np.asarray(x, np.float64))
    a = np.where(np.isfinite(a), a, 0.0)  # Inf/NaN samples say nothing about the range
    if scope == "head":
        a = a.reshape(*a.shape[:2], -1)
    elif scope != "channel":
        raise ValueError(f"unknown scope {scope!r}")
    if method == "absmax":
        return a.max(axis=2)
    if method == "percentile":
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        return np.percentile(a, percentile, axis=2)
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def scale_patterns(clip: np.ndarray, code_bits: int, elem: str = "fp16") -> np.ndarray:
    """Scale patterns (uint16) for clipping values."""
    lo = gs.min_scale(elem)
    one = gs.round_scale(1.0, elem)
    flat = [one if c == 0 else max(gs.round_scale(c / gs.QMAX[code_bits], elem), lo)
            for c in np.asarray(clip, np.float64).reshape(-1).tolist()]
    return np.array(flat, np.uint16).reshape(np.shape(clip))


@dataclass
class ScaleTable:
    """A calibrated cache image: ``entries`` is the whole cache (uint32), ``loaded`` its written indices."""

    fmt: str
    elem: str
    config: KVPathConfig
    entries: np.ndarray
    loaded: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def writes(self) -> list[tuple[int, int]]:
        """``(index, value)`` pairs to load, in index order."""
        return [(int(i), int(self.entries[i])) for i in self.loaded]


def build_table(k: np.ndarray, v: np.ndarray, fmt: str, elem: str = "fp16", method: str = "absmax",
                percentile: float = 99.9, config: KVPathConfig = DEFAULT) -> ScaleTable:
    """Calibrate K and V samples (each ``(layers, heads, tokens, head_dim)``) into a cache image."""
    f = get_format(fmt)
    scope = scales.scope_of(fmt)
    check_elem(elem)
    table = gs.empty_table(fmt, config)
    loaded = []
    entry_of: dict[int, int] = {}
    for kv, x in enumerate((k, v)):
        layers, heads, _, head_dim = x.shape
        if layers > config.max_layers or heads > config.max_kv_heads or head_dim > config.max_head_dim:
            raise ValueError(f"samples {x.shape} exceed the configuration (max_layers={config.max_layers}, "
                             f"max_kv_heads={config.max_kv_heads}, max_head_dim={config.max_head_dim})")
        pats = scale_patterns(clip_values(x, scope, method, percentile), f.code_bits, elem)
        for layer in range(layers):
            for head in range(heads):
                chans = np.arange(head_dim) if scope == "channel" else np.zeros(1, np.int64)
                idx = np.broadcast_to(scales.entry_index(scope, layer, head, kv, chans, config), chans.shape)
                for b in pats[layer, head].reshape(-1).tolist():
                    if b not in entry_of:
                        entry_of[b] = gs.make_entry(b, elem)
                table[idx] = [entry_of[b] for b in pats[layer, head].reshape(-1).tolist()]
                loaded.append(idx)
    return ScaleTable(fmt, elem, config, table, np.sort(np.concatenate(loaded)))


def sqnr_db(x: np.ndarray, x_hat: np.ndarray) -> float:
    """10 log10(signal power / error power) over the finite elements of ``x``."""
    x64, y64 = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
    ok = np.isfinite(x64)
    err = np.sum((x64[ok] - y64[ok]) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(np.sum(x64[ok] ** 2) / err))


def roundtrip(x: np.ndarray, table: ScaleTable, kv: int) -> np.ndarray:
    """Quantize and dequantize ``(layers, heads, tokens, head_dim)`` with the golden model."""
    dtype = element(table.elem).dtype
    x = np.asarray(x).astype(dtype)
    out = np.empty_like(x)
    for layer in range(x.shape[0]):
        for head in range(x.shape[1]):
            codes = gs.quantize(x[layer, head], table.fmt, table.entries, layer, head, kv, 0, table.config)
            out[layer, head] = gs.dequantize(codes, table.fmt, table.entries, layer, head, kv, 0, dtype,
                                             table.config)
    return out


def ggml_roundtrip(x: np.ndarray, fmt: str, elem: str = "fp16") -> np.ndarray:
    from kvpath import golden

    dtype = element(elem).dtype
    return golden.dequantize(golden.quantize(np.asarray(x).astype(dtype), fmt), fmt, dtype)


# ----------------------------------------------------------------------------- measurement

def heavy_tailed_kv(layers: int, heads: int, tokens: int, head_dim: int, seed: int):
    """Seeded K/V samples: keys Student-t (3 dof) with a few outlier channels fixed per (layer, head)
    (scaled 20-200x, as in kvpath.stimulus.heavy_tailed), values Student-t without outliers."""
    from kvpath.stimulus import heavy_tailed

    rng = np.random.default_rng(seed)
    k = np.stack([np.stack([heavy_tailed(rng, tokens * head_dim, head_dim).reshape(tokens, head_dim)
                            for _ in range(heads)]) for _ in range(layers)])
    v = rng.standard_t(df=3, size=(layers, heads, tokens, head_dim)).astype(np.float16)
    return k, v


def channel_structured_kv(layers: int, heads: int, tokens: int, head_dim: int, seed: int):
    """Seeded K/V with the structure KIVI and KVQuant report for real caches and light per-token tails:
    keys Gaussian per token with a per-channel magnitude (log-normal, sigma 0.5) and the same outlier
    channels as ``heavy_tailed_kv`` (1/32 of the channels, 20-200x), fixed across tokens; values
    Gaussian with a per-token magnitude (log-normal, sigma 0.5) and no channel structure."""
    rng = np.random.default_rng(seed)
    shape = (layers, heads, tokens, head_dim)
    chan = rng.lognormal(0.0, 0.5, size=(layers, heads, 1, head_dim))
    for l in range(layers):
        for h in range(heads):
            out = rng.choice(head_dim, size=max(1, head_dim // 32), replace=False)
            chan[l, h, 0, out] *= rng.uniform(20, 200, size=out.size)
    k = (rng.standard_normal(shape) * chan).astype(np.float16)
    v = (rng.standard_normal(shape) * rng.lognormal(0.0, 0.5, size=(layers, heads, tokens, 1))).astype(np.float16)
    return k, v


DATASETS = {"student-t": heavy_tailed_kv, "channel-structured": channel_structured_kv}


def channel_sqnr_db(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Median over (layer, head, channel) of each channel's SQNR: how the ordinary channels fare next
    to outliers, which the global SQNR (dominated by the outliers' energy) does not show."""
    x64, y64 = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
    sig = np.sum(x64 ** 2, axis=2)
    err = np.sum((x64 - y64) ** 2, axis=2)
    with np.errstate(divide="ignore"):
        return float(np.median(10 * np.log10(sig / err)))


def compare(layers=2, heads=2, tokens=4096, head_dim=256, seed=1, elem="fp16", percentile=99.9,
            data="student-t"):
    """Rows ``(format, scales, bits/element, {column: dB})`` for keys and values: static formats
    calibrated on the tokens they are measured on ("in-sample"), and on the other half of the tokens
    ("held-out": the first half calibrates, the second is measured); ggml formats need no calibration."""
    k, v = DATASETS[data](layers, heads, tokens, head_dim, seed)
    cut = tokens // 2
    halves = {"k": (k[:, :, :cut], k[:, :, cut:]), "v": (v[:, :, :cut], v[:, :, cut:])}
    rows = []
    for fmt in ("int8_pc", "int8_ph", "int4_pc", "int4_ph"):
        for method in METHODS:
            label = "absmax" if method == "absmax" else f"p{percentile:g}"
            held = build_table(halves["k"][0], halves["v"][0], fmt, elem, method, percentile)
            same = build_table(halves["k"][1], halves["v"][1], fmt, elem, method, percentile)
            cols = {}
            for kv, name in enumerate("kv"):
                x = halves[name][1]
                y_same, y_held = roundtrip(x, same, kv), roundtrip(x, held, kv)
                cols[f"{name}_in"] = sqnr_db(x, y_same)
                cols[f"{name}_held"] = sqnr_db(x, y_held)
                cols[f"{name}_chan"] = channel_sqnr_db(x, y_held)
            rows.append((fmt, label, get_format(fmt).bits_per_element, cols))
    for fmt in ("q8_0", "q4_0", "q4_1"):
        cols = {}
        for name in "kv":
            x = halves[name][1]
            y = ggml_roundtrip(x, fmt, elem)
            cols[f"{name}_in"] = cols[f"{name}_held"] = sqnr_db(x, y)
            cols[f"{name}_chan"] = channel_sqnr_db(x, y)
        rows.append((fmt, "per block", get_format(fmt).bits_per_element, cols))
    return rows


COLUMNS = (("k_in", "key SQNR, in-sample"), ("k_held", "key SQNR, held-out"),
           ("k_chan", "key median channel SQNR, held-out"), ("v_in", "value SQNR, in-sample"),
           ("v_held", "value SQNR, held-out"), ("v_chan", "value median channel SQNR, held-out"))


def main(argv=None, prog: str | None = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=4096, help="sample tokens; half calibrate, half measure")
    p.add_argument("--head-dim", type=int, default=256)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--input", dest="elem", choices=("fp16", "bf16"), default="fp16")
    p.add_argument("--percentile", type=float, default=99.9)
    p.add_argument("--data", choices=sorted(DATASETS), default="student-t",
                   help="student-t: heavy per-token tails + outlier key channels; channel-structured: "
                        "Gaussian tokens, per-channel key magnitudes + outlier channels")
    a = p.parse_args(argv)
    print(f"{a.data} K/V: layers={a.layers} heads={a.heads} tokens={a.tokens} head_dim={a.head_dim} "
          f"seed={a.seed} input={a.elem}; measured on the second half of the tokens; dB")
    print("| format | scales | bits/element | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|---" * (3 + len(COLUMNS)) + "|")
    for fmt, label, bits, cols in compare(a.layers, a.heads, a.tokens, a.head_dim, a.seed, a.elem, a.percentile,
                                          a.data):
        print(f"| {fmt} | {label} | {bits:g} | " + " | ".join(f"{cols[c]:.2f}" for c, _ in COLUMNS) + " |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
