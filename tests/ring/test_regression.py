"""The RTL ring tracker against the golden ring model in simulation (Icarus and Verilator),
and its cycle costs."""

import os

import pytest
from amaranth.hdl import Mux

from kvpath.hdl.ring.tracker import RingTracker
from kvpath.sim.ring.regression import run_ring_sim
from kvpath.hdl.generate import write_verilog

SEED = int(os.environ.get("KVPATH_SEED", "1"))
LONG = os.environ.get("KVPATH_LONG") == "1"


def _check(r):
    assert r["mismatches"] == 0, f"seed={r['seed']} simulator={r['simulator']}: " + "\n".join(r["details"])
    # One append and one read-order element per clock: the tracker's throughput target.
    assert r["cycles_per_append"] == 1.0, r
    assert r["cycles_per_read_element"] == 1.0, r


@pytest.mark.parametrize("simulator", [
    "icarus",
    pytest.param("verilator", marks=pytest.mark.verilator),
])
def test_random_operations_match_the_golden_model(build_root, simulator):
    r = run_ring_sim(simulator, 100_000, SEED, build_root / f"ring_{simulator}")
    print(f"seed={SEED} {r}")
    assert r["ops"] == 100_000 and r["beats"] > r["ops"]
    _check(r)


@pytest.mark.long
@pytest.mark.parametrize("simulator, ops, seeds", [
    ("icarus", 300_000, (2, 3)),
    pytest.param("verilator", 1_000_000, (2, 3, 4), marks=pytest.mark.verilator),
])
def test_long_random_operations(build_root, simulator, ops, seeds):
    for seed in seeds:
        r = run_ring_sim(simulator, ops, seed, build_root / f"ring_long_{simulator}_{seed}")
        print(f"seed={seed} {r}")
        _check(r)


class WrapToZero(RingTracker):
    def _next_window_slot(self, slot, at_last, n_sink):
        return Mux(at_last, 0, slot + 1)


def test_a_broken_tracker_is_caught(build_root):
    r = run_ring_sim("icarus", 3000, SEED, build_root / "ring_mutant", tracker_cls=WrapToZero)
    assert r["mismatches"] > 0, f"seed={SEED}: the wrap-to-zero mutant went unnoticed"


def test_full_size_tracker_converts(tmp_path):
    t = RingTracker()
    assert (t.max_tokens, t.slot_bits, t.count_bits, t.pos_bits) == (32768, 15, 16, 32)
    text = write_verilog(t, "kvpath_ring_tracker", tmp_path / "ring.v").read_text()
    assert "module kvpath_ring_tracker" in text
