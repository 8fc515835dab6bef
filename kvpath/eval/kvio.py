"""K/V of the eval's forward pass through kvpath: the driver (``kvpath.driver.kvcache.KVCache``) on the
engine model (``kvpath.golden.kvcache.KVCacheModel``, the driver's ``model`` backend), i.e. the golden
quantizer, ring and dequantizer; attention then reads what the driver returns.

How the batched forward pass meets the per-token driver: the forward pass computes one layer's K/V for
a whole chunk before the next layer's exist, while ``KVCache.append`` takes every layer of one token at
once. So the engine is configured as a single KV layer (``kv_heads`` x ``head_dim``) and reused layer by
layer: for each layer the ring is cleared (``reset_sequence``), the chunk's tokens are appended one by
one as FP16 (the stream's element type), and each head's K and V are read back once (READ), already
dequantized. The engine's numerics do not depend on the layer index, so this gives the numbers a
30-layer engine fed token by token would.

Reading the whole chunk back once after appending it gives the same numbers as reading after every
token: every format here quantizes per token row, in blocks of 32 along head_dim, so a row's bytes
depend on that token's vector alone and do not change when later tokens arrive; attention at position
t uses rows 0..t of the read (the causal mask), which are exactly what a read after token t returns.
tests/eval checks this on a short sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kvpath import layout
from kvpath.config import BLOCK_SCALED_FORMATS, KVPathConfig, get_format

FLOAT_FORMATS = {"f32": 32.0, "f16": 16.0}  # K/V kept in float32, or rounded to FP16 (llama.cpp's default)
EVAL_FORMATS = tuple(FLOAT_FORMATS) + BLOCK_SCALED_FORMATS


def check_format(fmt: str) -> str:
    if fmt not in EVAL_FORMATS:
        raise ValueError(f"K/V format {fmt!r}: the eval takes {', '.join(EVAL_FORMATS)}"
                         " (static-scale formats need calibrated scales: not supported yet)")
    return fmt


def bits_per_element(fmt: str) -> float:
    """Stored bits per K/V element, scales included (q8_0 8.5, q4_0 4.5, q4_1 5, mxfp4 4.25)."""
    check_format(fmt)
    return FLOAT_FORMATS[fmt] if fmt in FLOAT_FORMATS else get_format(fmt).bits_per_element


class DriverKV:
    """One engine model behind one driver, configured as one KV layer of ``kv_heads`` x ``head_dim``
    with a ring of ``max_tokens`` (full context)."""

    def __init__(self, fmt: str, kv_heads: int, head_dim: int, max_tokens: int, elem: str = "fp16",
                 transport=None):
        """``transport(config, mem_bytes)`` makes the driver's backend (default: the engine model;
        tests/eval passes the simulated top)."""
        from kvpath.driver.kvcache import KVCache
        from kvpath.golden.kvcache import KVCacheModel

        if fmt not in BLOCK_SCALED_FORMATS:
            raise ValueError(f"{fmt} is not a block-scaled format the driver path takes")
        self.fmt, self.kv_heads, self.head_dim, self.max_tokens = fmt, kv_heads, head_dim, max_tokens
        self.config = KVPathConfig(fmt=fmt, elem=elem, quant_lanes=32, dequant_lanes=64, max_layers=1,
                                   max_kv_heads=kv_heads, max_head_dim=head_dim, kv_max_tokens=max_tokens)
        row = layout.row_bytes(self.config, head_dim)
        mem = -(-2 * kv_heads * max_tokens * row // 4096) * 4096
        make = transport or (lambda config, mem_bytes: KVCacheModel(config, mem_bytes=mem_bytes))
        self.transport = make(self.config, mem)
        self.cache = KVCache(self.transport, self.config)
        self.cache.configure(None, layers=1, kv_heads=kv_heads, head_dim=head_dim, kv_max_tokens=max_tokens)
        self.dtype = self.cache.dtype

    def append_all(self, k: np.ndarray, v: np.ndarray) -> None:
        """Clear the ring, then append tokens ``k[t], v[t]`` (``[T, kv_heads, head_dim]``) in order."""
        T = k.shape[0]
        if T > self.max_tokens:
            raise ValueError(f"{T} tokens > the ring's {self.max_tokens}")
        self.cache.reset_sequence(0)
        k16 = np.ascontiguousarray(k.astype(self.dtype)[:, None])
        v16 = np.ascontiguousarray(v.astype(self.dtype)[:, None])
        for t in range(T):
            self.cache.append(0, k16[t], v16[t])

    def read(self, kv: int) -> np.ndarray:
        """Every head's cached vectors, dequantized: float32 ``[T, kv_heads, head_dim]`` in position order."""
        heads = []
        for head in range(self.kv_heads):
            values, positions = self.cache.read(0, 0, head, kv)
            if not np.array_equal(positions, np.arange(len(positions))):
                raise RuntimeError(f"READ returned positions {positions[:8]}... instead of 0..{len(positions) - 1}")
            heads.append(values.astype(np.float32))
        return np.stack(heads, axis=1)

    def roundtrip(self, k: np.ndarray, v: np.ndarray, sides=(0, 1)) -> list[np.ndarray]:
        self.append_all(k, v)
        return [self.read(kv) for kv in sides]


@dataclass(frozen=True)
class TieredRows:
    """One side (K or V) of a chunk as a tiered cache gives it back (driver/tiered.py): query position t
    reads cache position j from ``hot`` when j is a sink (j < sinks) or among the ``window`` newest
    (t - j < window), from ``cold`` otherwise. Both float32 ``[T, kv_heads, head_dim]``."""

    cold: np.ndarray
    hot: np.ndarray
    window: int
    sinks: int

    def hot_mask(self, T: int) -> np.ndarray:
        t, j = np.arange(T)[:, None], np.arange(T)[None, :]
        return ((t - j) < self.window) | (j < self.sinks)


class KVStore:
    """What attention reads of a chunk's K and V for one configuration: the driver's dequantized cache
    for a quantized format, FP16-rounded values for ``f16``, the float32 values for ``f32``; with a
    ``hot`` format, ``TieredRows`` of a cold and a hot engine.

    The hot engine has a full-context ring here, read once per chunk like the cold one: a row's bytes
    depend on its token alone, so the hot ring of sinks + window that ``TieredKVCache`` reads after token
    t holds exactly those rows of the full one (tests/eval checks it token by token), and which of them
    query t uses is ``TieredRows.hot_mask``."""

    def __init__(self, k_fmt: str, v_fmt: str, kv_heads: int, head_dim: int, max_tokens: int,
                 hot: str | None = None, window: int = 0, sinks: int = 0):
        self.k_fmt, self.v_fmt = check_format(k_fmt), check_format(v_fmt)
        self.hot_fmt, self.window, self.sinks = hot, window, sinks
        self._engines: dict[str, DriverKV] = {}
        for fmt in {k_fmt, v_fmt} - set(FLOAT_FORMATS):
            self._engines[fmt] = DriverKV(fmt, kv_heads, head_dim, max_tokens)
        self._hot = DriverKV(check_format(hot), kv_heads, head_dim, max_tokens) if hot else None

    @property
    def uses_driver(self) -> bool:
        return bool(self._engines)

    def __call__(self, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``k``, ``v``: float32 ``[T, kv_heads, head_dim]`` of one layer for a chunk -> what the cache
        gives back for positions 0..T-1 (float32), or ``TieredRows`` for a tiered configuration."""
        if self._hot is not None:
            k_cold, v_cold = self._engines[self.k_fmt].roundtrip(k, v)
            k_hot, v_hot = self._hot.roundtrip(k, v)
            return (TieredRows(k_cold, k_hot, self.window, self.sinks),
                    TieredRows(v_cold, v_hot, self.window, self.sinks))
        if self.k_fmt == self.v_fmt and self.k_fmt in self._engines:
            k_hat, v_hat = self._engines[self.k_fmt].roundtrip(k, v)
            return k_hat, v_hat
        out = []
        for side, (fmt, x) in enumerate(((self.k_fmt, k), (self.v_fmt, v))):
            if fmt == "f32":
                out.append(x.astype(np.float32))
            elif fmt == "f16":
                out.append(x.astype(np.float16).astype(np.float32))
            else:
                # An engine of this format carries this side only; the other side of its vectors
                # gets the same values, and is not read.
                out.append(self._engines[fmt].roundtrip(x, x, sides=(side,))[0])
        return out[0], out[1]
