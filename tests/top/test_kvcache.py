"""The KV cache top (hdl/top/kvcache.py) on Icarus and Verilator against the golden models
(sim/top/tb_kvcache.py)."""

import dataclasses
import json
import os
import time

import pytest

from kvpath.config import KVPathConfig
from kvpath.hdl.generate import MODULES, write_verilog
from kvpath.hdl.top.kvcache import KVCacheTop
from kvpath.sim.lib.runner import run_cocotb

SEED = int(os.environ.get("KVPATH_SEED", "1"))
TOP = MODULES["kvcache"]
# 3 layers (the third in no class: its vectors drop), 2 KV heads, 1 sequence, 2 classes; head_dim 64
# (4 beats of 16 lanes in, 2 blocks of 34 bytes per row: rows start at any byte).
SMALL = dict(max_layers=3, max_kv_heads=2, max_head_dim=64, kv_max_tokens=16)
# The functional tests; the reliability tests (soak, overflow, reset_mid_stream) have runs of their own.
FUNCTIONAL = ["write_and_read", "errors_and_reset"]


def run_kvcache(config: KVPathConfig, simulator: str, build_dir, tests=None, seed=SEED, pauses="mixed",
                tokens=9, soak_beats=None):
    build_dir.mkdir(parents=True, exist_ok=True)
    verilog = write_verilog(KVCacheTop(config), TOP, build_dir / f"{TOP}.v")
    start = time.perf_counter()
    times = run_cocotb(verilog=verilog, toplevel=TOP, test_module="kvpath.sim.top.tb_kvcache", simulator=simulator,
                       build_dir=build_dir, quiet=True, public=False, testcase=tests,
                       extra_env={"KVPATH_KVC_CONFIG": json.dumps(dataclasses.asdict(config)),
                                  "KVPATH_SEED": str(seed), "KVPATH_KVC_PAUSES": pauses,
                                  "KVPATH_KVC_TOKENS": str(tokens),
                                  **({"KVPATH_KVC_SOAK_BEATS": str(soak_beats)} if soak_beats else {})})
    print(f"{config.fmt} {simulator} seed={seed} pauses={pauses}: build {times['build_s']:.1f} s, "
          f"run {times['run_s']:.1f} s, total {time.perf_counter() - start:.1f} s")
    log = build_dir / "sim.log"
    if log.exists():   # the soak's beat counts
        for line in log.read_text().splitlines():
            if "soak totals" in line:
                print(line.strip())
    return times


def test_q8_0_icarus_pauses(build_root):
    run_kvcache(KVPathConfig(fmt="q8_0", **SMALL), "icarus", build_root / "kvc_q8_0_icarus", tests=FUNCTIONAL)


def test_q4_0_rotation_icarus(build_root):
    """The write path's Hadamard rotation (64-point, in front of the quantizer) with pauses: DDR image
    and READs against the golden rotation, then golden quantize."""
    run_kvcache(KVPathConfig(fmt="q4_0", rotation=64, **SMALL), "icarus", build_root / "kvc_q4_0_rot_icarus",
                tests=["write_and_read"])


def test_mxfp4_icarus_no_pauses(build_root):
    run_kvcache(KVPathConfig(fmt="mxfp4", elem="bf16", **SMALL), "icarus", build_root / "kvc_mxfp4_icarus",
                pauses="none", seed=SEED + 1, tests=FUNCTIONAL)


# Static scales: int4 per channel in BF16 covers the most (scales per (layer, head, kv, channel) from
# the scale cache, loaded by memset and registers at once; 8-byte beats of codes gathered into bus
# beats on the write path and cut out of them on the read path).
def test_int4_pc_bf16_icarus(build_root):
    run_kvcache(KVPathConfig(fmt="int4_pc", elem="bf16", **SMALL), "icarus", build_root / "kvc_int4_pc_icarus",
                tests=FUNCTIONAL, seed=SEED + 8)


@pytest.mark.long
@pytest.mark.parametrize("fmt,over", [("int8_ph", {}), ("int4_ph", {"quant_lanes": 8}),
                                      ("int8_pc", {"elem": "bf16", "dequant_lanes": 32, "read_ports": 2}),
                                      ("int4_pc", {"quant_lanes": 32, "dequant_lanes": 32}),
                                      # 8-byte beats of codes on a 32-byte bus, gathered four at a
                                      # time: 48-byte rows (head_dim 96) end inside a bus beat
                                      ("int4_pc", {"bus_bytes": 32, "max_head_dim": 96})])
def test_static_long_icarus(build_root, fmt, over):
    cfg = {**SMALL, "max_head_dim": 128, **over}
    name = f"kvc_long_{fmt}" + "".join(f"_{k}{v}" for k, v in over.items())
    run_kvcache(KVPathConfig(fmt=fmt, **cfg), "icarus", build_root / name, seed=SEED + 9, tokens=20,
                tests=FUNCTIONAL)


@pytest.mark.long
def test_static_soak_icarus(build_root):
    """The soak with the engine model beside (scales loaded through the registers) on a static format."""
    run_kvcache(KVPathConfig(fmt="int8_pc", **SMALL), "icarus", build_root / "kvc_soak_int8_pc_icarus",
                tests=["soak"], seed=SEED + 10, soak_beats=4000)


# The smallest datapaths (8 lanes); still a 150 s Verilator build, so a long run.
@pytest.mark.long
@pytest.mark.verilator
def test_q4_1_verilator(build_root):
    run_kvcache(KVPathConfig(fmt="q4_1", quant_lanes=8, dequant_lanes=8, **SMALL), "verilator",
                build_root / "kvc_q4_1_verilator", tests=["write_and_read"], seed=SEED + 2)


@pytest.mark.long
@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1", "mxfp4", "mxint8", "mxfp8_e4m3"])
def test_long_icarus(build_root, fmt):
    cfg = dict(SMALL, max_head_dim=128, dequant_lanes=32)
    run_kvcache(KVPathConfig(fmt=fmt, **cfg), "icarus", build_root / f"kvc_long_{fmt}", seed=SEED + 3, tokens=30,
                tests=FUNCTIONAL)


# Reliability (docs/kvcache.md): a soak with random pauses on every channel, counted on the buses;
# overflow with every ring configuration; soft reset with bursts in flight. KVPATH_KVC_SOAK_BEATS is
# the number of beats (K/V in + READ out + AXI W + AXI R) the soak moves at least.
def test_soak_icarus(build_root):
    run_kvcache(KVPathConfig(fmt="q8_0", **SMALL), "icarus", build_root / "kvc_soak_icarus", tests=["soak"],
                seed=SEED + 4, soak_beats=6000)


def test_overflow_and_reset_icarus(build_root):
    run_kvcache(KVPathConfig(fmt="q8_0", **SMALL), "icarus", build_root / "kvc_overflow_icarus",
                tests=["overflow", "reset_mid_stream"], seed=SEED + 5)


SOAK_LONG_BEATS = 100_000


@pytest.mark.long
def test_soak_long_icarus(build_root):
    run_kvcache(KVPathConfig(fmt="q8_0", **SMALL), "icarus", build_root / "kvc_soak_long_icarus", tests=["soak"],
                seed=SEED + 6, soak_beats=SOAK_LONG_BEATS)


@pytest.mark.long
@pytest.mark.verilator
def test_soak_long_verilator(build_root):
    run_kvcache(KVPathConfig(fmt="q8_0", **SMALL), "verilator", build_root / "kvc_soak_long_verilator",
                tests=["soak"], seed=SEED + 7, soak_beats=SOAK_LONG_BEATS)
