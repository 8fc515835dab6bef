"""cocotb side of the ring tracker regression (``kvpath.sim.ring.regression``).

The passes, stimulus and response dumps are those of the bulk stream harness; this module only runs
the planned passes and reports what each measured. It does not judge: a pass that never finishes
is recorded as such, and ``ring_sim`` counts its missing beats as mismatches.
"""

import json
import os
from pathlib import Path

import cocotb

from kvpath.sim.lib.tb_stream import TB


@cocotb.test()
async def ring_ops(dut):
    tb = TB(dut)
    results = [await tb.run_pass(k, p) for k, p in enumerate(tb.plan["passes"])]
    Path(os.environ["KVPATH_TB_RESULT"]).write_text(json.dumps(results, indent=1))
