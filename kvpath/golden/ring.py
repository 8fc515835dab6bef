"""Golden model of the KV ring: which slots hold valid tokens, and in what order attention reads them.

This is the specification the RTL tracker (``hdl/ring/tracker.py``) and the driver's KV manager are checked
against. It is written for clarity, not speed: it keeps an explicit slot table and the window as a
queue, so every rule below can be read off the code.

Semantics (see docs/ring.md for the long form):

* Capacity ``C`` (KV_MAX_TOKENS) slots; ``S`` attention sinks; a window of ``W`` recent tokens.
  Valid configurations: ``W >= 1``, ``S + W <= C <= max_tokens`` (the generate-time maximum).
  ``W >= 1`` because the token being appended must itself be attendable.
* Appended tokens get original positions 0, 1, 2, ... since the last reset.
* Position ``p < S`` is a sink and lives in slot ``p`` for good.
* Position ``p >= S`` lives in slot ``S + (p - S) mod (C - S)``: the slots after the sinks form a ring.
* The window holds the newest ``min(W, appended - max(S, floor))`` non-sink tokens, where ``floor``
  is the highest ``min(position, appended)`` over the ``evict_upto(position)`` calls since the reset
  (explicit eviction only removes tokens already appended, never later ones). When the window is
  full, appending evicts its oldest token. Eviction is logical: the slot keeps its bytes until it
  is written again.
* Read order: sinks by position, then the window oldest to newest. The cache position of an entry
  is its index in that order (StreamingLLM re-assigns positions inside the cache this way).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from kvpath.config import DEFAULT

GENERATED_MAX_TOKENS = DEFAULT.kv_max_tokens


class RingConfigError(ValueError):
    """A capacity/sink/window combination the ring cannot hold."""


class RingFullError(RuntimeError):
    """The position counter has reached its limit; nothing was written."""


@dataclass(frozen=True)
class RingConfig:
    kv_max_tokens: int
    n_sink: int
    n_window: int

    def check(self, max_tokens: int = GENERATED_MAX_TOKENS) -> RingConfig:
        """Return self if valid, else raise RingConfigError naming the broken rule and the numbers."""
        c, s, w = self.kv_max_tokens, self.n_sink, self.n_window
        for name, v in (("KV_MAX_TOKENS", c), ("sinks S", s), ("window W", w)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise RingConfigError(f"{name} must be an int, got {v!r}")
        if s < 0:
            raise RingConfigError(f"sinks S must be >= 0, got S={s}")
        if w < 1:
            raise RingConfigError(f"window W must be >= 1 (the newest token must stay attendable), got W={w}")
        if s + w > c:
            raise RingConfigError(f"S + W must be <= KV_MAX_TOKENS: S={s} + W={w} = {s + w} > {c}")
        if c > max_tokens:
            raise RingConfigError(
                f"KV_MAX_TOKENS={c} exceeds the generated maximum {max_tokens}")
        return self


@dataclass(frozen=True)
class Evicted:
    slot: int
    pos: int


@dataclass(frozen=True)
class AppendResult:
    slot: int  # where the write path stores the new token's K/V
    pos: int  # the token's original position
    evicted: Evicted | None  # the window token this append pushed out, if any


@dataclass(frozen=True)
class ReadEntry:
    slot: int
    pos: int  # original position (RoPE as trained)
    cache_pos: int  # StreamingLLM position: index in read order
    token: Any = None


class RingModel:
    """One ring's validity state. ``pos_limit`` (None = unbounded) models a finite position counter."""

    def __init__(self, kv_max_tokens: int, n_sink: int, n_window: int, *,
                 max_tokens: int = GENERATED_MAX_TOKENS, pos_limit: int | None = None):
        self.max_tokens = max_tokens
        self.pos_limit = pos_limit
        self.configure(kv_max_tokens, n_sink, n_window)

    # -- configuration -------------------------------------------------------------------------
    def configure(self, kv_max_tokens: int, n_sink: int, n_window: int) -> None:
        """Validate, then adopt the configuration and reset. On error nothing changes."""
        self.config = RingConfig(kv_max_tokens, n_sink, n_window).check(self.max_tokens)
        self.reset()

    @property
    def capacity(self) -> int:
        return self.config.kv_max_tokens

    @property
    def n_sink(self) -> int:
        return self.config.n_sink

    @property
    def n_window(self) -> int:
        return self.config.n_window

    def reset(self) -> None:
        self.appended = 0
        # slot -> (pos, token) for every valid slot
        self._slots: dict[int, tuple[int, Any]] = {}
        self._window: deque[int] = deque()  # positions of valid window tokens, oldest first

    # -- the two rules everything else follows from --------------------------------------------
    def slot_of(self, pos: int) -> int:
        s = self.n_sink
        return pos if pos < s else s + (pos - s) % (self.capacity - s)

    def would_evict(self) -> bool:
        """True if the next append pushes a token out of the window."""
        return self.appended >= self.n_sink and len(self._window) == self.n_window

    # -- operations ------------------------------------------------------------------------------
    def append(self, token: Any = None) -> AppendResult:
        if self.pos_limit is not None and self.appended >= self.pos_limit:
            raise RingFullError(f"position counter limit {self.pos_limit} reached; reset the ring")
        pos = self.appended
        slot = self.slot_of(pos)
        evicted = None
        if pos >= self.n_sink:
            if len(self._window) == self.n_window:
                old = self._window.popleft()
                evicted = Evicted(self.slot_of(old), old)
                del self._slots[evicted.slot]
            self._window.append(pos)
        # The slot rule must never land on a live token; if it did, the spec itself would be wrong.
        assert slot not in self._slots, f"slot {slot} of position {pos} still holds a valid token"
        self._slots[slot] = (pos, token)
        self.appended += 1
        return AppendResult(slot, pos, evicted)

    def evict_upto(self, position: int) -> list[Evicted]:
        """Evict every window token with original position < ``position``; sinks are never evicted."""
        gone = []
        while self._window and self._window[0] < position:
            old = self._window.popleft()
            gone.append(Evicted(self.slot_of(old), old))
            del self._slots[gone[-1].slot]
        return gone

    # -- inspection ------------------------------------------------------------------------------
    @property
    def n_valid(self) -> int:
        return len(self._slots)

    def valid_slots(self) -> dict[int, int]:
        """slot -> original position of every valid slot."""
        return {slot: pos for slot, (pos, _) in self._slots.items()}

    def read_order(self) -> list[ReadEntry]:
        sinks = sorted(p for p in (pos for pos, _ in self._slots.values()) if p < self.n_sink)
        order = sinks + list(self._window)
        out = []
        for cache_pos, pos in enumerate(order):
            slot = self.slot_of(pos)
            out.append(ReadEntry(slot, pos, cache_pos, self._slots[slot][1]))
        return out
