"""The netlist walks of kvpath/tools/synth.py on hand-made netlists (no yosys): LUT levels, the deepest
path's named nets, the largest fan-out and clock-enable net, and the contract line."""

from kvpath.tools.synth import (SynthReport, contract_line, deepest_path, lut_levels, max_enable_fanout, max_fanout,
                                paths_over)


def cell(kind, inputs, outputs):
    ports = {**{p: "input" for p in inputs}, **{p: "output" for p in outputs}}
    return {"type": kind, "port_directions": ports, "connections": {**inputs, **outputs}}


def netlist():
    """q0 (FF) -> a (LUT) -> b (LUT) -> c (CARRY8, zero delay) -> d (LUT) -> q1 (FF); q0 also feeds
    e and x0..x2 (its fan-out: 7 cell inputs, a's two counted apart), and e feeds d; the clock (bit
    40) drives the C pin of all ten registers (ff0, ff1, r0..r7)."""
    cells = {
        "ff0": cell("FDRE", {"D": [20], "C": [40]}, {"Q": [2]}),
        "a": cell("LUT2", {"I0": [2], "I1": [2]}, {"O": [3]}),
        "b": cell("LUT1", {"I0": [3]}, {"O": [4]}),
        "c": cell("CARRY8", {"S": [4]}, {"O": [5]}),
        "d": cell("LUT3", {"I0": [5], "I1": [6], "I2": [2]}, {"O": [7]}),
        "e": cell("LUT1", {"I0": [2]}, {"O": [6]}),
        "ff1": cell("FDRE", {"D": [7], "C": [40]}, {"Q": [20]}),
        # The clock reaches every register of a real netlist; it is not the fan-out a designer means.
        **{f"r{i}": cell("FDRE", {"D": [41 + i], "C": [40]}, {"Q": [50 + i]}) for i in range(8)},
        **{f"x{i}": cell("LUT1", {"I0": [2]}, {"O": [30 + i]}) for i in range(3)},
    }
    netnames = {"state": {"bits": [2]}, "$abc$1": {"bits": [3]}, "sum": {"bits": [4]}, "carry": {"bits": [5]},
                "ready": {"bits": [7]}, "$auto$x": {"bits": [6]}, "q": {"bits": [20]}, "clk": {"bits": [40]}}
    return {"cells": cells, "netnames": netnames}


def test_deepest_path_counts_luts_and_names_the_nets():
    levels, path = deepest_path(netlist())
    assert levels == 3 == lut_levels(netlist())  # a, b, d: the carry is free
    # $abc$1 is hidden as one LUT; the path ends at ff1's D pin, named by its output net.
    assert path == ("state", "[1 LUTs]", "sum", "carry", "ready", "q (D)")


def test_paths_over_lists_start_and_end_pins():
    # state reaches ff1's D over a-b-c-d (3 LUTs), e-d (2) and d (1): one pair, at its deepest.
    assert paths_over(netlist(), 3) == ([(3, 1, "state", "q (D)")], True)
    assert paths_over(netlist(), 2) == ([(3, 1, "state", "q (D)")], True)
    assert paths_over(netlist(), 4) == ([], True)
    # With no slack a cell keeps only its deepest start; the list is then complete up to k.
    assert paths_over(netlist(), 2, slack=0)[1] is False


def lutram_netlist():
    """A distributed RAM between two register stages: wq (FF) -> w0, w1, w2 (LUTs) -> the RAM's write
    data DIA; aq (FF) -> the RAM's read address ADDRA; its read data DOA -> r0 (LUT) -> oq (FF)."""
    cells = {
        "wff": cell("FDRE", {"D": [1], "C": [40]}, {"Q": [2]}),
        "w0": cell("LUT1", {"I0": [2]}, {"O": [3]}),
        "w1": cell("LUT1", {"I0": [3]}, {"O": [4]}),
        "w2": cell("LUT1", {"I0": [4]}, {"O": [5]}),
        "aff": cell("FDRE", {"D": [1], "C": [40]}, {"Q": [6]}),
        "ram": cell("RAM32M16", {"ADDRA": [6], "ADDRH": [6], "DIA": [5], "WE": [2], "WCLK": [40]}, {"DOA": [7]}),
        "r0": cell("LUT1", {"I0": [7]}, {"O": [8]}),
        "off": cell("FDRE", {"D": [8], "C": [40]}, {"Q": [9]}),
    }
    netnames = {"wdata": {"bits": [2]}, "rd_addr": {"bits": [6]}, "rd_data": {"bits": [7]}, "out": {"bits": [9]}}
    return {"cells": cells, "netnames": netnames}


def test_distributed_ram_cuts_paths_at_its_write_side():
    # Through the RAM the write data would reach `out` over w0-w2, the RAM and r0 (5); it is written
    # at WCLK, so that path ends at DIA (3 LUTs) and the read path is rd_addr -> RAM -> r0 (2).
    assert deepest_path(lutram_netlist()) == (3, ("wdata", "[3 LUTs]", "rd_data (DIA)"))
    assert paths_over(lutram_netlist(), 2) == ([(3, 1, "wdata", "rd_data (DIA)"), (2, 1, "rd_addr", "out (D)")], True)


def test_max_fanout_names_the_net():
    count, name = max_fanout(netlist())
    assert (count, name) == (7, "state")  # a's two inputs, d, e, x0..x2; not the clock's 10


def test_max_enable_fanout_counts_flip_flop_enables_only():
    """Three registers share one enable and two another; a LUT input on the first net and the
    clock (on every register) are not enables."""
    cells = {
        **{f"a{i}": cell("FDRE", {"D": [10 + i], "C": [40], "CE": [1]}, {"Q": [20 + i]}) for i in range(3)},
        **{f"b{i}": cell("FDRE", {"D": [13 + i], "C": [40], "CE": [2]}, {"Q": [23 + i]}) for i in range(2)},
        "l": cell("LUT2", {"I0": [1], "I1": [1]}, {"O": [30]}),
        "m": cell("LUT1", {"I0": [1]}, {"O": [31]}),
    }
    module = {"cells": cells, "netnames": {"en": {"bits": [1]}, "clk": {"bits": [40]}}}
    assert max_enable_fanout(module) == 3
    assert max_fanout(module) == (6, "en")  # all its loads: three enables and three LUT inputs


def test_contract_line():
    r = SynthReport("t", 10, 20, 1, 1.5, 0, 4, {}, 7, "en", ("a", "b"))
    assert contract_line("kvcache", "q8_0", "fp16", 16, r) == (
        "synth target=kvcache format=q8_0 input=fp16 lanes=16 luts=10 ffs=20 dsp=1 bram=1.5 levels=4 fanout=7")
