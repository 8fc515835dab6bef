"""``kvpath demo`` inside the simulator: the driver runs the decode workload (``driver/workload.py``)
on the simulated KVCacheTop through ``SimTransport``, with the engine model as the reference it is
compared with read by read, and writes its report as JSON (``$KVPATH_DEMO``: parameters and the
report's path; see ``kvpath/tools/demo.py``)."""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.task import bridge

from kvpath.config import KVPathConfig
from kvpath.driver.kvcache import KVCache
from kvpath.driver.workload import Workload, run
from kvpath.golden.kvcache import KVCacheModel
from kvpath.sim.top.transport import SimTransport


def progress_file(path: str):
    """One JSON line per token; ``kvpath demo`` draws the progress bar from it (the simulator's own
    output goes to its log)."""
    def show(done: int, total: int, report) -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps({"done": done, "total": total, "reads": report.reads,
                                 "mismatches": report.mismatches}) + "\n")
    return show


@cocotb.test()
async def demo(dut):
    params = json.loads(os.environ["KVPATH_DEMO"])
    config = KVPathConfig(**params["config"])
    workload = Workload(**params["workload"])
    mem_base, mem_bytes = params["mem_base"], params["mem_bytes"]
    transport = SimTransport(dut, config, mem_base=mem_base, mem_bytes=mem_bytes,
                             rng=random.Random(f"{workload.seed}-demo"), pauses=params["pauses"])
    await transport.start()
    cache = KVCache(transport, config)
    reference = KVCache(KVCacheModel(config, mem_bytes=mem_bytes, mem_base=mem_base), config)
    show = progress_file(params["progress"]) if params.get("progress") else None
    report = await bridge(run)(cache, workload, reference=reference, progress=show,
                                      dump_dir=params.get("dump"))
    report_dict = report.to_dict()
    report_dict["backend"] = "sim"
    report_dict["simulator"] = params["simulator"]
    report_dict["pauses"] = params["pauses"]
    with open(params["out"], "w") as fh:
        json.dump(report_dict, fh)
    assert report.mismatches == 0, f"seed={workload.seed}: {report.mismatches} mismatches (see {params['out']})"
