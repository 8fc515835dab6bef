"""Per-layer cache policies and what ring configuration (KV_MAX_TOKENS, S, W) each one needs."""

from __future__ import annotations

from dataclasses import dataclass

from kvpath.golden.ring import RingConfig

FULL, SINK_WINDOW, SLIDING = "full", "sink_window", "sliding"
EVICT, ERROR = "evict", "error"


@dataclass(frozen=True)
class LayerPolicy:
    """What a layer keeps.

    * ``full``: every token up to the hard cap KV_MAX_TOKENS; past it, the oldest token goes
      (``evict``) or the append is refused (``error``).
    * ``sink_window``: StreamingLLM, the first ``n_sink`` tokens plus the ``window`` most recent.
    * ``sliding``: the ``window`` most recent tokens (local attention layers).
    """

    kind: str
    n_sink: int = 0
    window: int | None = None  # None for ``full``: the cap decides
    overflow: str = EVICT

    def __post_init__(self):
        if self.kind not in (FULL, SINK_WINDOW, SLIDING):
            raise ValueError(f"policy kind must be {FULL!r}, {SINK_WINDOW!r} or {SLIDING!r}, "
                             f"got {self.kind!r}")
        if self.overflow not in (EVICT, ERROR):
            raise ValueError(f"overflow must be {EVICT!r} or {ERROR!r}, got {self.overflow!r}")
        if self.kind == FULL and (self.window is not None or self.n_sink):
            raise ValueError("a full-context policy takes neither sinks nor a window")
        if self.kind == SLIDING and self.n_sink:
            raise ValueError("a sliding-window policy has no sinks; use sink_window")
        if self.kind != FULL and (self.window is None or self.window < 1):
            raise ValueError(f"{self.kind} needs a window >= 1, got {self.window}")

    @classmethod
    def full(cls, overflow: str = EVICT) -> LayerPolicy:
        return cls(FULL, overflow=overflow)

    @classmethod
    def sink_window(cls, n_sink: int = 4, window: int = 2044, overflow: str = EVICT) -> LayerPolicy:
        return cls(SINK_WINDOW, n_sink, window, overflow)

    @classmethod
    def sliding(cls, window: int, overflow: str = EVICT) -> LayerPolicy:
        return cls(SLIDING, 0, window, overflow)

    def ring_config(self, kv_max_tokens: int) -> RingConfig:
        """The ring this policy needs under the cap ``kv_max_tokens``: as many slots as it can keep
        valid at once, so no memory is spent on tokens it would never attend to."""
        if self.kind == FULL:
            return RingConfig(kv_max_tokens, 0, kv_max_tokens)
        need = self.n_sink + self.window
        if need > kv_max_tokens:
            raise ValueError(f"{self.kind} policy keeps S + W = {self.n_sink} + {self.window} = {need} "
                             f"tokens, more than KV_MAX_TOKENS = {kv_max_tokens}")
        return RingConfig(need, self.n_sink, self.window)

    def describe(self) -> str:
        if self.kind == FULL:
            return f"full context (cap), overflow={self.overflow}"
        if self.kind == SLIDING:
            return f"sliding window {self.window}, overflow={self.overflow}"
        return f"{self.n_sink} sinks + window {self.window}, overflow={self.overflow}"
