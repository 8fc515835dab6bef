"""Bit-exact regression of the quantizer and dequantizer RTL against the golden model.

``ref_quantize`` / ``rtl_quantize`` (and the dequantize pair) are twins with one signature: the golden
model and the simulated RTL answer the same question, and the regression compares their bytes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvpath import golden
from kvpath.config import BLOCK_ELEMS, ELEM_BITS, check_elem, get_format, load
from kvpath.elements import element
from kvpath import stimulus
from kvpath.sim.lib import harness
from kvpath.hdl.generate import MODULES, write_verilog
from kvpath.sim.lib.runner import run_cocotb

# (valid threshold, ready threshold) out of 256; the first pass never pauses and gives beats/cycle.
THROTTLES = ((harness.NO_PAUSE, harness.NO_PAUSE), (128, harness.NO_PAUSE), (harness.NO_PAUSE, 96),
             (60, 200))
# Throttled passes replay a prefix of the stimulus: bubbles are about handshakes, not data volume.
THROTTLED_BEATS = 4096

DUT_MODULE = {target: MODULES[target] for target in ("quantizer", "dequantizer")}


@dataclass
class SimRun:
    """What one simulated pass produced, plus the counters the DUT exposes."""

    outputs: np.ndarray  # (beats, bytes_per_beat) uint8
    counters: dict[str, int]
    cycles: int
    in_beats: int
    out_beats: int
    run_s: float  # wall time of the whole simulation (all passes), build excluded
    pass_s: float  # wall time of this pass alone, from start to the last output beat
    stamps: tuple[int, int, int, int]  # cycles of the first and last input beat, first and last output

    @property
    def steady_beats_per_cycle(self) -> float:
        """Beats per cycle on the busier side between its first and last beat (no fill, no drain)."""
        first_in, last_in, first_out, last_out = self.stamps
        rate_in = (self.in_beats - 1) / max(1, last_in - first_in)
        rate_out = (self.out_beats - 1) / max(1, last_out - first_out)
        return rate_in if self.in_beats >= self.out_beats else rate_out


@dataclass
class RegressionResult:
    target: str
    fmt: str
    simulator: str
    lanes: int
    vectors: int
    mismatches: int = 0
    beats_per_cycle: float = 0.0  # no-pause pass, busier side, beats / all cycles (fill included)
    steady_beats_per_cycle: float = 0.0  # the same between first and last beat
    wall_s: float = 0.0
    sim_s: float = 0.0  # simulation only: every pass, no build, no golden model
    stream_elements_per_s: float = 0.0  # the no-pause pass: elements per wall second while streaming
    details: list[str] = field(default_factory=list)
    elem: str = "fp16"

    def summary(self) -> str:
        return (f"format={self.fmt} simulator={self.simulator} lanes={self.lanes} "
                f"vectors={self.vectors} mismatches={self.mismatches} "
                f"beats_per_cycle={self.beats_per_cycle:.3f} input={self.elem}")


def _write_if_changed(path: Path, text: str) -> None:
    # Unchanged sources keep their timestamps, so the simulator's incremental build is reused.
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _depth(beats: int) -> int:
    return 1 << max(4, (beats - 1).bit_length())


def simulate_stream(dut, module: str, in_beats: np.ndarray, out_beats: int, out_bytes: int,
                    counters: dict[str, int], simulator: str, build_dir: Path, seed: int,
                    throttles=THROTTLES, quiet: bool = True) -> list[SimRun]:
    """Stream ``in_beats`` through ``dut`` once per throttle setting; return each pass's outputs."""
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    dut_v = build_dir / f"{module}.v"
    tmp = write_verilog(dut, module, build_dir / f"{module}.v.new")
    _write_if_changed(dut_v, tmp.read_text())
    tmp.unlink()
    in_bits, out_bits = 8 * in_beats.shape[1], 8 * out_bytes
    top_v = build_dir / f"{harness.HARNESS_TOP}.v"
    _write_if_changed(top_v, harness.harness_verilog(
        module, in_bits, out_bits, _depth(len(in_beats)), _depth(out_beats), counters))
    harness.write_hex(build_dir / harness.STIM_FILE, in_beats)

    ratio = out_beats / len(in_beats)
    passes = []
    for k, (valid_thr, ready_thr) in enumerate(throttles):
        n_in = len(in_beats) if k == 0 else min(len(in_beats), THROTTLED_BEATS)
        # Keep whole output beats: the prefix must end on a block boundary of both sides.
        n_out = int(n_in * ratio)
        n_in = int(round(n_out / ratio))
        passes.append({"valid_thr": valid_thr, "ready_thr": ready_thr, "n_in": n_in, "n_out": n_out})
    plan = {"seed": seed, "passes": passes, "counters": list(counters)}
    plan_file, result_file = build_dir / "plan.json", build_dir / "result.json"
    plan_file.write_text(json.dumps(plan))
    result_file.unlink(missing_ok=True)
    times = run_cocotb(verilog=[dut_v, top_v], toplevel=harness.HARNESS_TOP, test_module="kvpath.sim.lib.tb_stream",
               simulator=simulator, build_dir=build_dir, public=False, quiet=quiet,
               extra_env={"KVPATH_TB_PLAN": str(plan_file), "KVPATH_TB_RESULT": str(result_file)})
    runs = []
    for r in json.loads(result_file.read_text()):
        outputs = harness.read_hex(Path(r["resp_file"]), r["out_got"], out_bytes)
        runs.append(SimRun(outputs, r["counters"], r["cycles"], r["n_in"], r["n_out"], times["run_s"],
                           r["wall_s"], tuple(r["stamps"])))
    return runs


def _elements(x: np.ndarray, elem: str = "fp16") -> np.ndarray:
    if x.dtype != element(elem).dtype:
        raise ValueError(f"{elem} regression given {x.dtype} elements")
    return np.ascontiguousarray(x).reshape(-1)


def ref_quantize(x: np.ndarray, fmt: str, lanes: int, *, elem: str = "fp16",
                 **_) -> tuple[np.ndarray, dict[str, int]]:
    blocks, nonfinite = golden.quantize_report(_elements(x, elem).reshape(-1, BLOCK_ELEMS), fmt)
    return blocks.reshape(-1, get_format(fmt).block_bytes), {"nonfinite_count": int(nonfinite)}


def rtl_quantize(x: np.ndarray, fmt: str, lanes: int, *, simulator: str, build_dir: Path, seed: int = 1,
                 throttles=THROTTLES, elem: str = "fp16", elems_per_clock: int | None = None) -> list[SimRun]:
    from kvpath.hdl.quant.frame import Quantizer

    f = get_format(fmt)
    in_beats = _elements(x, elem).view(np.uint8).reshape(-1, 2 * lanes)
    return simulate_stream(Quantizer(fmt, lanes, elem, elems_per_clock), DUT_MODULE["quantizer"], in_beats,
                           len(in_beats) * lanes // BLOCK_ELEMS, f.block_bytes,
                           {"nonfinite_count": 32}, simulator, build_dir, seed, throttles)


def ref_dequantize(blocks: np.ndarray, fmt: str, lanes: int, *, elem: str = "fp16",
                   **_) -> tuple[np.ndarray, dict[str, int]]:
    values, saturated, nonfinite = golden.dequantize_report(blocks.reshape(-1), fmt, element(elem).dtype)
    out = values.reshape(-1).view(np.uint8).reshape(-1, 2 * lanes)
    return out, {"saturated_count": int(saturated), "nonfinite_count": int(nonfinite)}


def rtl_dequantize(blocks: np.ndarray, fmt: str, lanes: int, *, simulator: str, build_dir: Path,
                   seed: int = 1, throttles=THROTTLES, elem: str = "fp16") -> list[SimRun]:
    f = get_format(fmt)
    per_beat = max(1, lanes // BLOCK_ELEMS)
    in_beats = np.ascontiguousarray(blocks, dtype=np.uint8).reshape(-1, f.block_bytes * per_beat)
    n_out = len(in_beats) * per_beat * BLOCK_ELEMS // lanes
    return simulate_stream(load(f.family_info.dequantizer)(fmt, lanes, elem), DUT_MODULE["dequantizer"], in_beats, n_out,
                           lanes * ELEM_BITS // 8, {"saturated_count": 32, "nonfinite_count": 32},
                           simulator, build_dir, seed, throttles)


def dequantizer_stimulus(fmt: str, n: int, seed: int, elem: str = "fp16") -> np.ndarray:
    """Blocks to read back: what our quantizer writes, and arbitrary bytes (any d and m, Inf and NaN
    included) that a corrupted or foreign KV image could hold."""
    f = get_format(fmt)
    rng = np.random.default_rng(seed ^ 0x5EED)
    valid = golden.quantize(stimulus.mixed(fmt, n, seed, elem), fmt).reshape(-1, f.block_bytes)
    junk = rng.integers(0, 256, valid.shape, dtype=np.uint8)
    take = rng.random(len(valid)) < 0.25
    return np.where(take[:, None], junk, valid)


def _compare(name: str, expected: np.ndarray, expected_counters: dict[str, int], run: SimRun,
             unit_bytes: int) -> tuple[int, list[str]]:
    """Count mismatching output units (bytes or halfwords) and counters of one pass."""
    details = []
    exp = expected[: run.out_beats]
    got = run.outputs
    if got.shape != exp.shape:
        return exp.size // unit_bytes, [f"{name}: got {got.shape} outputs, expected {exp.shape}"]
    exp_units = exp.reshape(len(exp), -1, unit_bytes)
    got_units = got.reshape(len(got), -1, unit_bytes)
    bad = np.any(exp_units != got_units, axis=2)
    mismatches = int(bad.sum())
    if mismatches:
        beat, unit = map(int, np.argwhere(bad)[0])
        details.append(f"{name}: {mismatches} mismatching units; first at beat {beat} unit {unit}: "
                       f"got {got_units[beat, unit].tobytes().hex()} "
                       f"expected {exp_units[beat, unit].tobytes().hex()}")
    for counter, value in expected_counters.items():
        if run.counters.get(counter) != value:
            mismatches += 1
            details.append(f"{name}: {counter}={run.counters.get(counter)} expected {value}")
    return mismatches, details


def run(target: str, fmt: str, lanes: int, simulator: str, vectors: int, seed: int,
        build_root: Path, throttles=THROTTLES, elem: str = "fp16",
        elems_per_clock: int | None = None) -> RegressionResult:
    """Regress one block (``quantizer`` or ``dequantizer``) against the golden model;
    ``elems_per_clock`` sets the quantizer's rate (None: its format's)."""
    f = get_format(fmt)
    check_elem(elem)
    if elems_per_clock is not None and target != "quantizer":
        raise ValueError("elems_per_clock is the quantizer's")
    start = time.perf_counter()
    rate = "" if elems_per_clock is None else f"_e{elems_per_clock}"
    build_dir = Path(build_root) / f"{target}_{f.name}_{elem}_l{lanes}{rate}_{simulator}"
    if target == "quantizer":
        per_beat = lanes
        x = stimulus.mixed(fmt, max(vectors, per_beat), seed, elem)
        x = x[: len(x) // per_beat * per_beat]
        expected, counters = ref_quantize(x, fmt, lanes, elem=elem)
        runs = rtl_quantize(x, fmt, lanes, simulator=simulator, build_dir=build_dir, seed=seed,
                            throttles=throttles, elem=elem, elems_per_clock=elems_per_clock)
        unit, elements = 1, x.size
    elif target == "dequantizer":
        per_beat = max(1, lanes // BLOCK_ELEMS)
        blocks = dequantizer_stimulus(fmt, max(vectors, per_beat * BLOCK_ELEMS), seed, elem)
        blocks = blocks[: len(blocks) // per_beat * per_beat]
        expected, counters = ref_dequantize(blocks, fmt, lanes, elem=elem)
        runs = rtl_dequantize(blocks, fmt, lanes, simulator=simulator, build_dir=build_dir, seed=seed,
                              throttles=throttles, elem=elem)
        unit, elements = 2, len(blocks) * BLOCK_ELEMS
    else:
        raise ValueError(f"unknown target {target!r}")
    result = RegressionResult(target, f.name, simulator, lanes, elements, elem=elem)
    for k, r in enumerate(runs):
        if r.out_beats < len(expected):
            # A throttled pass replays a prefix; its counters must match the golden model on that prefix.
            prefix = x[: r.in_beats * lanes] if target == "quantizer" else blocks[: r.in_beats * per_beat]
            ref = ref_quantize if target == "quantizer" else ref_dequantize
            counters = ref(prefix, fmt, lanes, elem=elem)[1]
        m, details = _compare(f"pass {k} (valid {throttles[k][0]}/256, ready {throttles[k][1]}/256)",
                              expected, counters, r, unit)
        result.mismatches += m
        result.details += details
    first = runs[0]
    result.sim_s = first.run_s
    result.stream_elements_per_s = elements / first.pass_s
    result.beats_per_cycle = max(first.in_beats, first.out_beats) / max(1, first.cycles)
    result.steady_beats_per_cycle = first.steady_beats_per_cycle
    result.wall_s = time.perf_counter() - start
    return result
