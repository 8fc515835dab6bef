"""What the KV cache driver needs from whatever carries its traffic: the ``Transport`` protocol.

One driver (``kvpath.driver.kvcache``) runs unchanged on every backend that provides these calls:
the engine model (``kvpath.golden.kvcache.KVCacheModel``), a simulated RTL, or the board (``/dev/mem``
plus DMA). Every call is synchronous: it returns when the hardware has taken (or produced) what it
is about.

* Register block: ``read32`` / ``write32`` at byte addresses relative to the block. A transport
  raises an exception when the block answers SLVERR (any type: the driver names the transaction
  around it).
* ``send_kv(beats)``: ``s_axis_kv`` beats ``(tdata, tuser, tlast)``; returns once every beat was
  accepted. A transport that cannot get them accepted (TREADY stays low) raises ``TimeoutError``.
  Accepted is not processed: the engine queues beats ahead of its lookup, so what became of a
  vector shows in the counters later (``KVCache.flush`` waits for them).
* ``receive_kv(port, n_beats)``: exactly ``n_beats`` beats of ``m_axis_kv{port}``; ``TimeoutError``
  when they do not come.
* ``mem_write`` / ``mem_read``: the DDR window the engine's regions live in, as the processor sees
  it (absolute addresses in ``[mem_base, mem_base + mem_bytes)``), for dumps and checks.
* ``send_cmd(words)`` (optional, see ``CommandStream``): 64-bit ``s_axis_cmd`` beats. The driver
  issues its commands through the CMD register and needs no more.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

Beat = tuple[int, int, bool]  # (TDATA, TUSER, TLAST)


@runtime_checkable
class Transport(Protocol):
    mem_base: int
    mem_bytes: int

    def read32(self, addr: int) -> int: ...

    def write32(self, addr: int, value: int) -> None: ...

    def send_kv(self, beats: Sequence[Beat]) -> None: ...

    def receive_kv(self, port: int, n_beats: int) -> list[Beat]: ...

    def mem_write(self, addr: int, data: bytes) -> None: ...

    def mem_read(self, addr: int, n: int) -> bytes: ...


@runtime_checkable
class CommandStream(Protocol):
    """A transport that also drives ``s_axis_cmd``; returns once every command beat was accepted."""

    def send_cmd(self, words: Sequence[int]) -> None: ...


def check_transport(transport) -> None:
    """Refuse an object that lacks a call the driver makes, naming what is missing (a Protocol's
    isinstance check does not say which)."""
    needed = ("read32", "write32", "send_kv", "receive_kv", "mem_write", "mem_read", "mem_base", "mem_bytes")
    missing = [name for name in needed if not hasattr(transport, name)]
    if missing:
        raise TypeError(f"{type(transport).__name__} is not a kvpath Transport: it lacks {', '.join(missing)}")
