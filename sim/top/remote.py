"""The driver's ``sim`` backend for callers outside the simulator: ``RemoteSim`` is a Transport
(``kvpath.driver.transport``) whose calls run on the simulated KVCacheTop in a cocotb process
(``sim/top/remote_bench.py``), one round trip per call over a local socket.

So the very driver code a test, ``kvpath selftest`` or a user runs against the engine model or the
board runs unchanged against the RTL: the driver stays in the caller's process and only the
transport's calls cross into the simulator.

    with RemoteSim(config, build_dir=Path("build/sim"), mem_base=..., mem_bytes=...) as transport:
        cache = KVCache(transport, config)
        ...

Builds are cached per build directory: a directory is rebuilt only when the Verilog of the
configuration or the simulator differ from what was built there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import tempfile
import threading
import time
from multiprocessing.connection import Listener
from pathlib import Path

from kvpath.config import KVPathConfig
from kvpath.sim.lib.streams import BusError

TOP_MODULE = "kvpath_kvcache"
# The simulator's start (and a Verilator model's first load) takes seconds; a minute means it died.
CONNECT_TIMEOUT_S = 120.0
# The exceptions a call can raise on the simulator side that the driver tells apart.
_KINDS = {e.__name__: e for e in (TimeoutError, ValueError, KeyError, IndexError, AssertionError, BusError)}


def ensure_build(config: KVPathConfig, simulator: str, build_dir: Path) -> float:
    """Verilog of ``config``'s KVCacheTop built for ``simulator`` in ``build_dir``; returns the
    build's wall time (0 when the directory already held this build)."""
    from kvpath.hdl.generate import write_verilog
    from kvpath.hdl.top.kvcache import KVCacheTop
    from kvpath.sim.lib.runner import build_cocotb

    build_dir.mkdir(parents=True, exist_ok=True)
    verilog = write_verilog(KVCacheTop(config), TOP_MODULE, build_dir / f"{TOP_MODULE}.v")
    stamp = build_dir / "remote_build.stamp"
    want = hashlib.sha256(Path(verilog).read_bytes() + simulator.encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == want:
        return 0.0
    seconds = build_cocotb(verilog=verilog, toplevel=TOP_MODULE, simulator=simulator, build_dir=build_dir,
                           public=False, quiet=True)
    stamp.write_text(want)
    return seconds


class RemoteSim:
    """A Transport over a simulated KVCacheTop. ``start()`` (or ``with``) builds if needed and starts
    the simulator; ``close()`` ends it and raises if the simulator side failed."""

    def __init__(self, config: KVPathConfig, *, build_dir: Path, mem_base: int, mem_bytes: int,
                 simulator: str = "icarus", seed: int = 1, pauses: str = "mixed", run_name: str = "sim",
                 stall_cycles: int = 1 << 16):
        self.config, self.build_dir, self.simulator = config, Path(build_dir), simulator
        self.mem_base, self.mem_bytes = mem_base, mem_bytes
        self.seed, self.pauses, self.run_name = seed, pauses, run_name
        # A stream that does not move for this many cycles raises TimeoutError (SimTransport).
        self.stall_cycles = stall_cycles
        self.build_s = 0.0
        self.cycles_at_close: int | None = None
        self._conn = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    # --- lifecycle
    def start(self) -> "RemoteSim":
        from kvpath.sim.lib.runner import simulate_cocotb

        self.build_s = ensure_build(self.config, self.simulator, self.build_dir)
        authkey = secrets.token_bytes(16)
        # A socket path must fit in 108 bytes, which pytest's build directories may not.
        address = str(Path(tempfile.gettempdir()) / f"kvpath-{secrets.token_hex(8)}.sock")
        listener = Listener(address, family="AF_UNIX", authkey=authkey)
        params = {"config": dataclasses.asdict(self.config), "mem_base": self.mem_base,
                  "mem_bytes": self.mem_bytes, "seed": self.seed, "pauses": self.pauses,
                  "stall_cycles": self.stall_cycles,
                  "address": address, "authkey": authkey.hex()}

        def simulate():
            try:
                simulate_cocotb(toplevel=TOP_MODULE, test_module="kvpath.sim.top.remote_bench",
                                simulator=self.simulator, build_dir=self.build_dir, public=False, quiet=True,
                                extra_env={"KVPATH_REMOTE": json.dumps(params)}, log_name=f"{self.run_name}.log")
            except BaseException as e:  # reported by close() or by a call that finds the simulator gone
                self._failure = e

        self._thread = threading.Thread(target=simulate, name=f"sim-{self.run_name}", daemon=True)
        self._thread.start()
        try:
            self._conn = self._accept(listener)
        finally:
            listener.close()  # also removes the socket file
        return self

    def _accept(self, listener):
        """Accept the simulator's connection, or fail if the simulator ends (or hangs) first: a bare
        ``accept`` would wait for good."""
        box: dict = {}
        acceptor = threading.Thread(target=lambda: box.setdefault("conn", listener.accept()), daemon=True)
        acceptor.start()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while acceptor.is_alive():
            acceptor.join(0.1)
            if not self._thread.is_alive() and acceptor.is_alive():
                raise RuntimeError(f"the simulator ended before it connected: {self._failure} "
                                   f"(log: {self.build_dir / (self.run_name + '.log')})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the simulator did not connect within {CONNECT_TIMEOUT_S:.0f} s")
        return box["conn"]

    def close(self) -> None:
        if self._conn is not None:
            try:
                self.cycles_at_close = self._call("quit")
            finally:
                self._conn.close()
                self._conn = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise RuntimeError(f"the simulator side failed: {failure}") from failure

    def __enter__(self) -> "RemoteSim":
        return self.start()

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            try:
                self.close()
            except Exception:
                pass  # the caller's exception says more

    # --- the calls
    def _call(self, name: str, *args):
        if self._conn is None:
            raise RuntimeError("RemoteSim is not started")
        try:
            self._conn.send((name, args))
            status, value = self._conn.recv()
        except (EOFError, OSError) as e:
            raise RuntimeError(f"the simulator went away during {name}: {self._failure or e} "
                               f"(log: {self.build_dir / (self.run_name + '.log')})") from e
        if status == "ok":
            return value
        kind, message = value
        raise _KINDS.get(kind, RuntimeError)(message if kind in _KINDS else f"{kind}: {message}")

    def read32(self, addr: int) -> int:
        return self._call("read32", addr)

    def write32(self, addr: int, value: int) -> None:
        self._call("write32", addr, value)

    def send_kv(self, beats) -> None:
        self._call("send_kv", [(int(d), int(u), bool(last)) for d, u, last in beats])

    def send_cmd(self, words) -> None:
        self._call("send_cmd", [int(w) for w in words])

    def receive_kv(self, port: int, n_beats: int):
        return self._call("receive_kv", port, n_beats)

    def mem_write(self, addr: int, data: bytes) -> None:
        self._call("mem_write", addr, bytes(data))

    def mem_read(self, addr: int, n: int) -> bytes:
        return self._call("mem_read", addr, n)

    def inject_ddr_error(self, addr: int, nbytes: int, resp: int = 2) -> None:
        self._call("inject_ddr_error", addr, nbytes, resp)

    def idle(self, cycles: int = 16) -> None:
        self._call("idle", cycles)

    def pending(self, port: int) -> int:
        return self._call("pending", port)

    @property
    def irq(self) -> bool:
        return bool(self._call("irq"))

    @property
    def cycles(self) -> int:
        """Clock cycles simulated since the reset."""
        return self._call("cycles")
