"""The evaluation protocol: the first N tokens of a text, cut into chunks of ``ctx`` tokens, each chunk a
fresh sequence from position 0 whose positions 1..T-1 are scored (docs/accuracy.md).

For every chunk the FP32 reference (K/V kept in float32), the FP16 baseline (K/V rounded to FP16, what
llama.cpp's KL figures compare with) and every configuration run the same forward pass; each
configuration's K/V go through ``kvio.KVStore`` (the driver on the engine model for a quantized format).
Chunks are the outer loop, so only one chunk's logits are held at a time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from kvpath.eval import forward as fw
from kvpath.eval import kvio, metrics, model as model_mod, tokenizer as tok_mod

ROTATIONS = ("none", "hadamard", "hadamard_rtl")
DEFAULT_TEXT = Path("/usr/share/common-licenses/GPL-3")


# The context at which a tiered configuration's bits per element are quoted (issue 13's budget).
BITS_CONTEXT = 2048


@dataclass(frozen=True)
class EvalConfig:
    k: str
    v: str
    rotation: str = "none"
    # Mixed precision by token age (driver/tiered.py): the sinks and the newest ``window`` tokens are
    # read in ``hot``, every older token in K's and V's (cold) formats.
    hot: str | None = None
    window: int = 0
    sinks: int = 0

    def __post_init__(self):
        kvio.check_format(self.k)
        kvio.check_format(self.v)
        if self.rotation not in ROTATIONS:
            raise ValueError(f"rotation {self.rotation!r}: choose from {', '.join(ROTATIONS)}")
        if self.hot is None:
            if self.window or self.sinks:
                raise ValueError("a window or sinks need a hot format")
            return
        kvio.check_format(self.hot)
        if self.k != self.v or self.k in kvio.FLOAT_FORMATS or self.hot in kvio.FLOAT_FORMATS:
            raise ValueError(f"a tiered configuration takes one block-scaled cold format for K and V (one cold "
                             f"engine) and a block-scaled hot one; got k={self.k} v={self.v} hot={self.hot}")
        if self.window < 1 or self.sinks < 0:
            raise ValueError(f"hot window must be >= 1 and sinks >= 0, got {self.window} and {self.sinks}")

    @property
    def n_hot(self) -> int:
        return self.window + self.sinks

    def read_bits(self, n_tokens: int) -> float:
        """Bits per element read at a decode step with ``n_tokens`` cached (K and V averaged); for a
        tiered configuration both engines are read whole (driver/tiered.py)."""
        if self.hot is None:
            return (kvio.bits_per_element(self.k) + kvio.bits_per_element(self.v)) / 2
        from kvpath.driver.tiered import read_bits

        return read_bits(self.k, self.hot, n_tokens, self.n_hot)

    @property
    def bits(self) -> float:
        """Bits per K/V element including scales (the mean of K's and V's), read at a context of
        ``BITS_CONTEXT`` tokens; for a tiered configuration this is also what is stored per element
        (the cold rows of every token plus the hot ring's ``window + sinks`` rows)."""
        return self.read_bits(BITS_CONTEXT)

    def mean_read_bits(self, ctx: int) -> float:
        """Bits per element read over the decode steps 1..ctx of a sequence (every step reads the
        whole cache: each element read counts once)."""
        n = range(1, ctx + 1)
        return sum(self.read_bits(t) * t for t in n) / sum(n)

    @property
    def label(self) -> str:
        hot = f" hot={self.hot} window={self.window} sinks={self.sinks}" if self.hot else ""
        return f"k={self.k} v={self.v} rotation={self.rotation}{hot}"

    @property
    def spec(self) -> str:
        hot = f"/{self.hot}@{self.window}+{self.sinks}" if self.hot else ""
        return f"{self.k}/{self.v}/{self.rotation}{hot}"

    @classmethod
    def parse(cls, text: str) -> "EvalConfig":
        """``K/V[/ROTATION[/HOT@WINDOW+SINKS]]``, e.g. ``q4_0/q4_0/hadamard`` or
        ``mxfp4/mxfp4/hadamard_rtl/q8_0@56+4``."""
        parts = text.split("/")
        if len(parts) not in (2, 3, 4):
            raise ValueError(f"configuration {text!r}: expected K/V, K/V/ROTATION or K/V/ROTATION/HOT@WINDOW+SINKS")
        if len(parts) < 4:
            return cls(*parts)
        hot, _, rest = parts[3].partition("@")
        window, _, sinks = rest.partition("+")
        try:
            return cls(*parts[:3], hot=hot, window=int(window), sinks=int(sinks or 0))
        except ValueError as e:
            raise ValueError(f"configuration {text!r}: {e}") from None


BASELINE = EvalConfig("f16", "f16", "none")
REFERENCE = EvalConfig("f32", "f32", "none")
# The table of docs/accuracy.md.
TABLE = tuple(EvalConfig(k, v, r) for k, v, r in (
    ("q8_0", "q8_0", "none"), ("q8_0", "q8_0", "hadamard"),
    ("q4_0", "q4_0", "none"), ("q4_0", "q4_0", "hadamard"),
    ("q4_1", "q4_1", "none"), ("q4_1", "q4_1", "hadamard"),
    ("mxfp4", "mxfp4", "none"), ("mxfp4", "mxfp4", "hadamard"),
    ("q8_0", "q4_0", "none"), ("q8_0", "q4_0", "hadamard"),
))


def load_tokens(text_path: Path, n_tokens: int, model_path=None) -> np.ndarray:
    text = Path(text_path).read_text(encoding="utf-8")
    ids = tok_mod.load(model_path).encode(text)
    if len(ids) < n_tokens:
        raise ValueError(f"{text_path} has {len(ids)} tokens, fewer than the {n_tokens} asked for")
    return np.asarray(ids[:n_tokens], dtype=np.int64)


def split(ids: np.ndarray, ctx: int) -> list[np.ndarray]:
    chunks = [ids[i:i + ctx] for i in range(0, len(ids), ctx)]
    if len(chunks[-1]) < 2:
        chunks.pop()  # a one-token chunk scores nothing
    if not chunks:
        raise ValueError("need at least 2 tokens")
    return chunks


Progress = Callable[[int, int, str], None]


def evaluate(ids: np.ndarray, configs, *, ctx: int = 512, model_path=None,
             progress: Progress | None = None) -> dict:
    """Run the protocol on token ids; returns the report (plain data, JSON-able except inf SQNRs)."""
    model = model_mod.load(model_path)
    hp = model.hp
    configs = list(dict.fromkeys(configs))
    chunks = split(np.asarray(ids), ctx)
    max_tokens = max(len(c) for c in chunks)
    # The baseline first: every later run (the FP32 reference too) is compared with it.
    runs = [BASELINE, REFERENCE] + [c for c in configs if c not in (REFERENCE, BASELINE)]
    stores = {c: kvio.KVStore(c.k, c.v, hp.n_kv_heads, hp.head_dim, max_tokens,
                              hot=c.hot, window=c.window, sinks=c.sinks) for c in runs}
    acc = {c: metrics.Accumulator(hp.n_layers) for c in runs}
    wall = {c: 0.0 for c in runs}
    total, done = len(chunks) * len(runs) * hp.n_layers, 0
    started = time.perf_counter()

    for n, chunk in enumerate(chunks):
        logp_ref = None
        for c in runs:
            store, a = stores[c], acc[c]

            def hook(layer, k, v, store=store, a=a, c=c):
                nonlocal done
                k_hat, v_hat = store(k, v)
                # A tiered cache's SQNR is its cold tier's: what every token older than the window reads.
                a.add_kv(layer, k, getattr(k_hat, "cold", k_hat), v, getattr(v_hat, "cold", v_hat))
                done += 1
                if progress:
                    progress(done, total, f"chunk {n + 1}/{len(chunks)} {c.label} layer {layer + 1}/{hp.n_layers}")
                return k_hat, v_hat

            t0 = time.perf_counter()
            logits = fw.forward(model, chunk, kv=hook, rotation=c.rotation)
            logp, targets = metrics.scored(logits, chunk)
            del logits
            if c == BASELINE:
                logp_ref = logp
            a.add_chunk(logp, targets, logp_ref)
            wall[c] += time.perf_counter() - t0

    results = []
    for c in runs:
        r = {"k": c.k, "v": c.v, "rotation": c.rotation, "hot": c.hot, "window": c.window, "sinks": c.sinks,
             "bits": c.bits, "bits_context": BITS_CONTEXT, "mean_read_bits": c.mean_read_bits(max_tokens),
             "label": c.label, "spec": c.spec,
             "through_driver": stores[c].uses_driver, "wall_s": wall[c], **acc[c].summary()}
        results.append(r)
    return {
        "model": {"file": model.path.name, "sha256": model_mod.SHA256, "wheel": model_mod.WHEEL,
                  "layers": hp.n_layers, "kv_heads": hp.n_kv_heads, "head_dim": hp.head_dim},
        "tokens": int(sum(len(c) for c in chunks)), "ctx": ctx, "chunks": len(chunks),
        "ppl_fp32": results[1]["ppl"], "ppl_fp16": results[0]["ppl"],
        "reference": results[1], "baseline": results[0],
        "configs": [r for c, r in zip(runs, results) if c in configs],
        "wall_s": time.perf_counter() - started,
    }


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (lower is better), by x."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def finite(x):
    """The report with infinities as strings (JSON has none)."""
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


__all__ = ["EvalConfig", "BASELINE", "REFERENCE", "TABLE", "evaluate", "load_tokens", "split", "pareto", "finite"]
