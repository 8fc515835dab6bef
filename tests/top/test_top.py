"""The integrated KV path (hdl/top/top.py) on Icarus and Verilator, driven by the Python driver through
cocotbext-axi (sim/top/tb_top.py), and ``kvpath generate`` writing it with the register map."""

import dataclasses
import json
import os
import time

import pytest

from kvpath.cli import main
from kvpath.config import KVPathConfig
from kvpath.hdl.top.top import KVPathTop
from kvpath.regmap import FILES, build_map
from kvpath.regmap.json_map import dumps
from kvpath.hdl.generate import write_verilog
from kvpath.sim.lib.runner import run_cocotb

SEED = int(os.environ.get("KVPATH_SEED", "1"))
TOP = "kvpath_top"
# Small limits keep the scale cache (3 x 2 x 2 x 64 = 768 per-channel entries) quick to load through
# the registers; layer = 3 still fits the context field, so a bad context can be sent.
SMALL = dict(max_layers=3, max_kv_heads=2, max_head_dim=64, kv_max_tokens=64)
STATIC_TESTS = ["bitstream_check", "static_stream", "ring_order"]
BLOCK_TESTS = ["bitstream_check", "block_stream", "ring_order"]


def run_top(config: KVPathConfig, simulator: str, build_dir, tests, seed=SEED, pause=0.3):
    build_dir.mkdir(parents=True, exist_ok=True)
    verilog = write_verilog(KVPathTop(config), TOP, build_dir / f"{TOP}.v")
    regmap = build_dir / "kvpath_regs.json"
    regmap.write_text(dumps(build_map(config)))
    start = time.perf_counter()
    times = run_cocotb(verilog=verilog, toplevel=TOP, test_module="kvpath.sim.top.tb_top", simulator=simulator,
                       build_dir=build_dir, quiet=True, public=False, testcase=tests,
                       extra_env={"KVPATH_TOP_CONFIG": json.dumps(dataclasses.asdict(config)),
                                  "KVPATH_TOP_MAP": str(regmap), "KVPATH_SEED": str(seed),
                                  "KVPATH_TOP_PAUSE": str(pause)})
    print(f"{config.fmt} {simulator} seed={seed}: build {times['build_s']:.1f} s, run {times['run_s']:.1f} s, "
          f"total {time.perf_counter() - start:.1f} s")


# Default: each family on one simulator, the smaller Verilator build (static int4_pc, ~30 s of CPU)
# on Verilator; the swapped pairs run with KVPATH_LONG=1.
@pytest.mark.verilator
def test_static_int4_pc_verilator(build_root):
    config = KVPathConfig(fmt="int4_pc", elem="fp16", quant_lanes=16, dequant_lanes=16, **SMALL)
    run_top(config, "verilator", build_root / "top_int4_pc_verilator", STATIC_TESTS)


def test_block_q8_0_icarus(build_root):
    config = KVPathConfig(fmt="q8_0", quant_lanes=16, dequant_lanes=16, **SMALL)
    run_top(config, "icarus", build_root / "top_q8_0_icarus", BLOCK_TESTS)


@pytest.mark.long
def test_static_int4_pc_icarus(build_root):
    config = KVPathConfig(fmt="int4_pc", elem="fp16", quant_lanes=16, dequant_lanes=16, **SMALL)
    run_top(config, "icarus", build_root / "top_int4_pc_icarus", STATIC_TESTS, seed=SEED + 1)


@pytest.mark.long
@pytest.mark.verilator
def test_block_q8_0_verilator(build_root):
    config = KVPathConfig(fmt="q8_0", quant_lanes=16, dequant_lanes=16, **SMALL)
    run_top(config, "verilator", build_root / "top_q8_0_verilator", BLOCK_TESTS, seed=SEED + 1)


@pytest.mark.long
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_static_int8_ph_bf16(build_root, simulator):
    config = KVPathConfig(fmt="int8_ph", elem="bf16", quant_lanes=32, dequant_lanes=32, **SMALL)
    run_top(config, simulator, build_root / f"top_int8_ph_bf16_{simulator}", STATIC_TESTS, seed=SEED + 2)


@pytest.mark.long
@pytest.mark.verilator
@pytest.mark.parametrize("fmt,lanes,read_lanes", [("q4_1", 8, 64), ("mxfp4", 32, 128)])
def test_block_formats_wide_read(build_root, fmt, lanes, read_lanes):
    """Several blocks per q_in beat; the no-cache refusal for an mx build."""
    config = KVPathConfig(fmt=fmt, quant_lanes=lanes, dequant_lanes=read_lanes, **SMALL)
    run_top(config, "verilator", build_root / f"top_{fmt}_{read_lanes}", BLOCK_TESTS, seed=SEED + 3)


def test_generate_writes_top_csr_and_register_map(tmp_path, capsys):
    args = ["generate", "-o", str(tmp_path), "--format", "int4_ph", "--lanes", "8", "--read-lanes", "8",
            "--max-layers", "4", "--max-kv-heads", "1", "--max-head-dim", "64", "--kv-max-tokens", "128"]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    modules = ("kvpath_quantizer", "kvpath_dequantizer", "kvpath_csr", "kvpath_top", "kvpath_axi_top")
    names = [f"{m}.v" for m in modules] + list(FILES)
    assert len(out) == len(names), out
    for name, line in zip(names, out):
        assert str(tmp_path / name) in line, (name, line)
    for module in modules:
        assert f"module {module}(" in (tmp_path / f"{module}.v").read_text().replace(" (", "(")
    # Static format: the datapath files are the static blocks, with the context sideband.
    assert "context_error_count" in (tmp_path / "kvpath_quantizer.v").read_text()
    regmap = json.loads((tmp_path / "kvpath_regs.json").read_text())
    assert regmap["config"]["scale_cache_entries"] == 4 * 1 * 2
    top = (tmp_path / "kvpath_top.v").read_text()
    for port in ("s_axil_awaddr", "kv_in__payload", "q_out__valid", "q_in__ready", "kv_out__payload",
                 "memset__valid", "ring_cmd__valid", "ring_rd__payload"):
        assert port in top, port
