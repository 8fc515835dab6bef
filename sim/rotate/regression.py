"""The Hadamard rotation unit against its golden model: ``ref_rotate`` / ``rtl_rotate`` twins and ``run``.

Stimulus: FP16 vectors at scales from subnormal to near overflow (one scale per vector, so the
exact sums span FP16's range), plus the corner cases the arithmetic defines: +/-Inf, NaN, -0,
subnormals, all-65504 groups that saturate, and values that round to +/-0. The unit streams through
the bulk harness (``sim/lib/harness.py``) once without pauses and on prefixes with bubbles on
either side (``THROTTLES``); every output element and both counters are compared as integers.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kvpath.golden.hadamard import ref_hadamard
from kvpath.sim.datapath.regression import THROTTLES, RegressionResult, _compare, simulate_stream

MODULE = "kvpath_hadamard"
COUNTERS = ("nonfinite_count", "saturated_count")


def stimulus(n: int, vectors: int, seed: int) -> np.ndarray:
    """``(vectors, n)`` uint16 FP16 patterns."""
    rng = np.random.default_rng(seed)
    scale = 2.0 ** rng.integers(-26, 14, (vectors, 1))
    x = (rng.standard_normal((vectors, n)) * scale).astype(np.float16).view(np.uint16)
    corners = [
        np.full(n, 0x7BFF, np.uint16),                                   # every output saturates or is 0
        np.where(np.arange(n) % 2, 0xFBFF, 0x7BFF).astype(np.uint16),    # one output at +-8 x 65504
        rng.integers(0, 0x400, n).astype(np.uint16) | (rng.integers(0, 2, n) << 15).astype(np.uint16),
        np.array([0x7C00, 0xFC00, 0x7E00, 0xFE01, 0x8000, 0x0001, 0x8001, 0x0000] * (n // 8 + 1),
                 np.uint16)[:n],
        np.r_[np.uint16(0x8001), np.zeros(n - 1, np.uint16)],            # a -2**-24 spread: rounds to -0
    ]
    for k, c in enumerate(corners):
        if k < vectors:
            x[k] = c
    return x


def ref_rotate(x: np.ndarray, n: int, lanes: int) -> tuple[np.ndarray, dict[str, int]]:
    y, nonfinite, saturated = ref_hadamard(x, n)
    return (y.reshape(-1).view(np.uint8).reshape(-1, 2 * lanes),
            {"nonfinite_count": nonfinite, "saturated_count": saturated})


def rtl_rotate(x: np.ndarray, n: int, lanes: int, *, simulator: str, build_dir: Path, seed: int = 1,
               throttles=THROTTLES):
    from kvpath.hdl.rotate.hadamard import Hadamard

    in_beats = np.ascontiguousarray(x).reshape(-1).view(np.uint8).reshape(-1, 2 * lanes)
    return simulate_stream(Hadamard(n, lanes), MODULE, in_beats, len(in_beats), 2 * lanes,
                           {c: 32 for c in COUNTERS}, simulator, build_dir, seed, throttles)


def run(n: int, lanes: int, simulator: str, vectors: int, seed: int, build_root: Path,
        throttles=THROTTLES) -> RegressionResult:
    start = time.perf_counter()
    x = stimulus(n, vectors, seed)
    expected, counters = ref_rotate(x, n, lanes)
    build_dir = Path(build_root) / f"hadamard_n{n}_l{lanes}_{simulator}"
    runs = rtl_rotate(x, n, lanes, simulator=simulator, build_dir=build_dir, seed=seed, throttles=throttles)
    result = RegressionResult("hadamard", f"h{n}", simulator, lanes, x.size)
    group_beats = max(1, n // lanes)
    for k, r in enumerate(runs):
        want = counters
        if r.out_beats < len(expected):   # a throttled pass replays a prefix of whole groups
            assert r.in_beats % group_beats == 0, (r.in_beats, group_beats)
            _, want = ref_rotate(x.reshape(-1)[: r.in_beats * lanes], n, lanes)
        m, details = _compare(f"pass {k} (valid {throttles[k][0]}/256, ready {throttles[k][1]}/256)",
                              expected, want, r, 2)
        result.mismatches += m
        result.details += details
    first = runs[0]
    result.beats_per_cycle = first.in_beats / max(1, first.cycles)
    result.steady_beats_per_cycle = first.steady_beats_per_cycle
    result.sim_s = first.run_s
    result.wall_s = time.perf_counter() - start
    return result
