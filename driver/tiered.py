"""Mixed precision by token age over two engines: a *hot* engine keeps the attention sinks and the
newest tokens in a wide format (q8_0), a *cold* engine keeps every token in a narrow one (mxfp4).

Why two engines and no requantization: each engine is the unchanged, bit-exact kvpath engine. Every
token is written to both (the write stream is broadcast), so nothing is read back and requantized when
it ages out of the hot window: the cold row is the narrow format of the token's own FP16 vector, not
of a wide-format copy, and the hot ring simply overwrites its oldest window slot (eviction is logical,
as everywhere in kvpath). Writes are a small part of the traffic (each token is written once and read
at every later step), so writing both formats costs little; the hot ring is only ``n_sink + window``
rows per head.

A read returns the cold engine's rows with the hot engine's substituted wherever the hot ring holds the
position: attention sees the sinks and the window in the hot format, everything older in the cold one.
Both engines are read whole (the cold READ also carries the rows the hot one replaces), so the bytes
read per step are ``cold_bytes(n) + hot_bytes(min(n, n_sink + window))``: ``read_bits`` is that figure.

The two ``KVCache`` drivers may sit on any backends (model, simulation, board): this class only calls
their public methods.
"""

from __future__ import annotations

import numpy as np

from kvpath.config import get_format
from kvpath.driver.kv_policy import LayerPolicy
from kvpath.driver.kvcache import KVCache, ReadMismatch


def read_bits(cold_fmt: str, hot_fmt: str, n_tokens: int, n_hot: int) -> float:
    """Bits per element read at one decode step with ``n_tokens`` in the cache: the cold rows of every
    token plus the hot rows of at most ``n_hot`` of them, per cached element."""
    if n_tokens < 1:
        raise ValueError(f"n_tokens must be >= 1, got {n_tokens}")
    cold, hot = get_format(cold_fmt).bits_per_element, get_format(hot_fmt).bits_per_element
    return cold + hot * min(n_tokens, n_hot) / n_tokens


class TieredKVCache:
    def __init__(self, hot: KVCache, cold: KVCache):
        if hot.config.elem != cold.config.elem:
            raise ValueError(f"hot and cold engines take different elements ({hot.config.elem}, "
                             f"{cold.config.elem}): one stream feeds both")
        self.hot, self.cold = hot, cold
        self.dtype = cold.dtype
        self.n_sink = self.window = None

    @property
    def n_hot(self) -> int:
        return self.n_sink + self.window

    def configure(self, model=None, *, n_sink: int = 4, window: int = 56, kv_max_tokens: int | None = None,
                  seqs: int = 1, **dims):
        """Both engines for the same model: the cold one with full-context rings (up to
        ``kv_max_tokens``), the hot one with rings of ``n_sink`` sinks and the ``window`` newest tokens.
        Every layer gets the same policy on each engine. Returns both setups (hot, cold)."""
        hot_policy = LayerPolicy.sink_window(n_sink, window) if n_sink else LayerPolicy.sliding(window)
        cold_setup = self.cold.configure(model, kv_max_tokens=kv_max_tokens, seqs=seqs, **dims)
        layer_policies = {la.index: hot_policy for la in cold_setup.model.layers}
        hot_setup = self.hot.configure(model, layer_policies=layer_policies, kv_max_tokens=n_sink + window,
                                       seqs=seqs, **dims)
        if cold_setup.kv_max_tokens < n_sink + window:
            raise ValueError(f"the cold rings keep {cold_setup.kv_max_tokens} tokens, fewer than the hot "
                             f"ring's {n_sink} + {window}")
        self.n_sink, self.window = n_sink, window
        return hot_setup, cold_setup

    def append(self, seq: int, k: np.ndarray, v: np.ndarray) -> int:
        position = self.cold.append(seq, k, v)
        hot_position = self.hot.append(seq, k, v)
        if hot_position != position:
            raise ReadMismatch(f"sequence {seq}: the hot engine is at position {hot_position}, the cold one "
                               f"at {position} (was one of them reset alone?)")
        return position

    def flush(self) -> None:
        self.cold.flush()
        self.hot.flush()

    def reset_sequence(self, seq: int) -> None:
        self.cold.reset_sequence(seq)
        self.hot.reset_sequence(seq)

    def read(self, seq: int, layer: int, head: int, kv: int, port: int = 0
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A head's vectors in position order: ``(values [n, head_dim], positions [n], hot [n] bool)``,
        the hot engine's row wherever its ring holds the position, the cold one's elsewhere. A position
        only the hot ring still holds (the cold ring is full and evicted it: a sink) is kept."""
        cold_values, cold_pos = self.cold.read(seq, layer, head, kv, port)
        hot_values, hot_pos = self.hot.read(seq, layer, head, kv, port)
        positions = np.union1d(cold_pos, hot_pos)
        values = np.empty((len(positions), cold_values.shape[1]), dtype=cold_values.dtype)
        values[np.searchsorted(positions, cold_pos)] = cold_values
        hot_index = np.searchsorted(positions, hot_pos)
        values[hot_index] = hot_values
        hot = np.zeros(len(positions), dtype=bool)
        hot[hot_index] = True
        return values, positions, hot

    def read_bits(self, n_tokens: int) -> float:
        return read_bits(self.cold.config.fmt, self.hot.config.fmt, n_tokens, self.n_hot)


__all__ = ["TieredKVCache", "read_bits"]
