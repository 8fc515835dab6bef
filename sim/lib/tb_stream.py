"""cocotb side of the bulk stream harness (see kvpath.sim.lib.harness).

The Python caller writes the stimulus memory and a JSON plan; this module runs one harness pass per
planned (beat count, throttle) entry, renames each response dump, and writes what it measured back as JSON.
"""

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer

from kvpath.sim.lib.harness import RESP_FILE


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.plan = json.loads(Path(os.environ["KVPATH_TB_PLAN"]).read_text())
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    async def reset(self):
        dut = self.dut
        for name in ("start", "dump", "n_in", "n_out", "valid_thr", "ready_thr"):
            getattr(dut, name).value = 0
        dut.seed.value = self.plan["seed"] & 0xFFFFFFFF
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 1)

    async def run_pass(self, index, p):
        dut, plan = self.dut, self.plan
        valid_thr, ready_thr = p["valid_thr"], p["ready_thr"]
        # Reset between passes so the DUT's counters describe one pass each.
        await self.reset()
        dut.n_in.value = p["n_in"]
        dut.n_out.value = p["n_out"]
        dut.valid_thr.value = valid_thr
        dut.ready_thr.value = ready_thr
        started = time.perf_counter()
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        # Generous bound: every beat of the slower side at the lowest throttle, plus pipeline fill.
        slowest = max(1, min(valid_thr, ready_thr))
        limit = (p["n_in"] + p["n_out"]) * 256 // slowest * 4 + 10_000
        timed_out = await First(RisingEdge(dut.done), Timer(limit * 10, unit="ns"))
        wall_s = time.perf_counter() - started
        finished = int(dut.done.value) == 1
        dut.dump.value = 1
        await RisingEdge(dut.clk)
        dut.dump.value = 0
        await RisingEdge(dut.clk)
        dump = Path(RESP_FILE).resolve()
        target = dump.with_name(f"resp_{index}.hex")
        dump.replace(target)
        counters = {name: int(getattr(dut, f"dut_{name}").value) for name in plan["counters"]}
        return {
            **p,
            "finished": finished,
            "timed_out": not finished and timed_out is not None,
            "cycles": int(dut.cycles.value),
            "stamps": [int(getattr(dut, n).value) for n in ("first_in", "last_in", "first_out", "last_out")],
            "wall_s": wall_s,
            "in_sent": int(dut.in_sent.value),
            "out_got": int(dut.out_got.value),
            "resp_file": str(target),
            "counters": counters,
            "rule_errors": int(dut.rule_errors.value),
            "rule_first": int(dut.rule_first.value),
        }


@cocotb.test()
async def stream_regression(dut):
    tb = TB(dut)
    results = []
    for index, p in enumerate(tb.plan["passes"]):
        results.append(await tb.run_pass(index, p))
    Path(os.environ["KVPATH_TB_RESULT"]).write_text(json.dumps(results, indent=1))
    broken = [(k, r["rule_errors"], r["rule_first"]) for k, r in enumerate(results) if r["rule_errors"]]
    assert not broken, ("the DUT broke the AXI-Stream rule on its output (VALID withdrawn or payload changed "
                        f"while offered): (pass, violations, first cycle) = {broken}")
    unfinished = [r for r in results if not r["finished"]]
    assert not unfinished, f"harness passes did not finish: {unfinished}"
