"""A check the never-stall units share: neither ``o.valid`` nor ``i.ready`` follows ``o.ready``
within a cycle, because both come from registers."""

import numpy as np
from amaranth.sim import Simulator


def ready_paths(dut, cycles: int, seed: int) -> tuple[list[int], int, int]:
    """Run ``dut`` (an ``i``/``o`` stream component) for ``cycles`` clocks with ``i.valid`` high and
    ``o.ready`` drawn at random (seeded; mostly low, so the unit fills and stalls). In every cycle,
    before the clock, ``o.ready`` is set low and then high and ``(o.valid, i.ready)`` is read after
    each. Returns the cycles where the two reads differed (a combinational path from ``o.ready``),
    the number of cycles with ``o.valid`` high and the number with ``i.ready`` low (so the states
    that matter were visited)."""
    rng = np.random.default_rng(seed)
    differed, out_valid, in_stalled = [], 0, 0

    async def bench(ctx):
        nonlocal out_valid, in_stalled
        ctx.set(dut.i.valid, 1)
        for cycle in range(cycles):
            seen = []
            for ready in (0, 1):
                ctx.set(dut.o.ready, ready)
                seen.append((ctx.get(dut.o.valid), ctx.get(dut.i.ready)))
            if seen[0] != seen[1]:
                differed.append(cycle)
            out_valid += seen[0][0]
            in_stalled += 1 - seen[0][1]
            ctx.set(dut.o.ready, int(rng.random() < 0.3))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return differed, out_valid, in_stalled


def check_ready_paths(dut, seed: int, cycles: int = 400) -> None:
    """Fail unless ``ready_paths`` visited an output beat and a stalled input and found no cycle in
    which ``o.ready`` reached ``o.valid`` or ``i.ready``."""
    differed, out_valid, in_stalled = ready_paths(dut, cycles, seed)
    assert out_valid and in_stalled, (out_valid, in_stalled)
    assert not differed, f"seed {seed}: o.ready reached o.valid or i.ready in cycles {differed[:10]}"
