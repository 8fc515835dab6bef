"""The simulator side of the remote ``sim`` backend (``sim/top/remote.py``): a cocotb test that
serves Transport calls arriving over a ``multiprocessing.connection`` socket, one at a time, on the
simulated KVCacheTop through ``SimTransport``.

While it waits for the next call no simulated time passes, which is what a driver on a processor
sees of hardware that is idle between its accesses: the engine only runs while a call is in
progress (a register access, a stream transfer, an explicit ``idle``), and everything the driver
waits for it waits for by polling registers, as it must on the board.
"""

from __future__ import annotations

import json
import os
import random
from multiprocessing.connection import Client

import cocotb
from cocotb.simtime import get_sim_time

from kvpath.config import KVPathConfig
from kvpath.sim.top.transport import SimTransport


@cocotb.test()
async def serve(dut):
    params = json.loads(os.environ["KVPATH_REMOTE"])
    config = KVPathConfig(**params["config"])
    transport = SimTransport(dut, config, mem_base=params["mem_base"], mem_bytes=params["mem_bytes"],
                             rng=random.Random(params["seed"]), pauses=params["pauses"],
                             stall_cycles=params["stall_cycles"])
    await transport.start()
    timed = {"read32": transport._read32, "write32": transport._write32, "send_kv": transport._send_kv,
             "send_cmd": transport._send_cmd, "receive_kv": transport._receive_kv, "idle": transport._idle}
    untimed = {"mem_read": transport.mem_read, "mem_write": transport.mem_write,
               "inject_ddr_error": transport.inject_ddr_error, "pending": transport.pending,
               "irq": lambda: transport.irq}
    start_ns = get_sim_time("ns")

    def cycles() -> int:
        return int((get_sim_time("ns") - start_ns) // transport.period_ns)

    with Client(params["address"], authkey=bytes.fromhex(params["authkey"])) as conn:
        while True:
            name, args = conn.recv()
            if name == "quit":
                conn.send(("ok", cycles()))
                return
            try:
                if name == "cycles":
                    value = cycles()
                elif name in timed:
                    value = await timed[name](*args)
                else:
                    value = untimed[name](*args)
            except Exception as e:  # the caller re-raises it as the same kind of error
                conn.send(("error", (type(e).__name__, str(e))))
            else:
                conn.send(("ok", value))
