"""``kvpath demo`` (kvpath/tools/demo.py): its contract line and report, and a ``--dump`` that anyone
can check with gguf alone: each valid row of each region image must be the bytes gguf's own
quantizer gives for the dumped input at that position."""

import json
import os
import re
import subprocess
import sys

import gguf
import numpy as np
import pytest

SEED = int(os.environ.get("KVPATH_SEED", "7"))
SMALL = ["--tokens", "40", "--kv-heads", "1", "--head-dim", "64", "--window", "8", "--sinks", "2",
         "--read-every", "16", "--seed", str(SEED), "--no-progress"]
LAST_LINE = re.compile(r"^demo backend=(\w+) format=(\w+) tokens=(\d+) mismatches=(\d+) compression=(\d+\.\d\d)$")


def demo(tmp_path, *args) -> tuple[re.Match, dict]:
    out = subprocess.run([sys.executable, "-m", "kvpath.cli", "demo", *args, "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"seed={SEED}: {out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    last = LAST_LINE.match(out.stdout.strip().splitlines()[-1])
    assert last, f"last line: {out.stdout.strip().splitlines()[-1]!r}"
    return last, json.loads((tmp_path / "out" / "report.json").read_text())


def test_model_backend_line_report_and_plot(tmp_path):
    last, report = demo(tmp_path, "--backend", "model", *SMALL)
    backend, fmt, tokens, mismatches, compression = last.groups()
    assert (backend, fmt, tokens, mismatches) == ("model", "q8_0", "40", "0")
    c = report["counters"]
    # q8_0: 34 bytes per 32 FP16 elements (64 bytes).
    assert c["ddr_bytes_written"] * 64 == report["fp16_bytes_written"] * 34
    assert compression == f"{report['fp16_bytes_written'] / c['ddr_bytes_written']:.2f}"
    assert report["gguf_checked"] > 0 and report["reads"] > 0
    assert (tmp_path / "out" / "demo.png").stat().st_size > 10_000


@pytest.mark.parametrize("fmt", ["q8_0", "q4_1"])
def test_dump_decodes_with_gguf_alone(tmp_path, fmt):
    dump = tmp_path / "dump"
    demo(tmp_path, "--backend", "model", "--format", fmt, *SMALL, "--dump", str(dump))
    manifest = json.loads((dump / "manifest.json").read_text())
    qtype = gguf.GGMLQuantizationType[manifest["ggml_type"]]
    row, head_dim = manifest["row_bytes"], manifest["head_dim"]
    checked = 0
    for region in manifest["dump"]:
        image = (dump / region["file"]).read_bytes()
        assert len(image) == region["slots"] * row
        inputs = np.load(dump / region["inputs"])  # valid tokens in position order
        by_pos = {v["pos"]: v["slot"] for v in region["valid"]}
        assert inputs.shape == (len(by_pos), head_dim)
        for x, pos in zip(inputs, sorted(by_pos)):
            got = image[by_pos[pos] * row:(by_pos[pos] + 1) * row]
            want = gguf.quants.quantize(x.astype(np.float32)[None, :], qtype).tobytes()
            assert got == want, f"seed={SEED}: {region['file']} position {pos} is not gguf's {fmt} row"
            checked += 1
    # 4 local layers keep sinks + window = 10, the global layer all 40; K and V of 1 head each.
    assert checked == 2 * (4 * 10 + 40)


# The sim backend end to end on Icarus at a small size: the same tool `make demo` runs on Verilator.
def test_sim_backend_icarus(tmp_path):
    last, report = demo(tmp_path, "--backend", "sim", "--simulator", "icarus", "--pauses", "mixed",
                        "--tokens", "12", "--kv-heads", "1", "--head-dim", "64", "--window", "4", "--sinks", "1",
                        "--read-every", "6", "--seed", str(SEED), "--no-progress")
    assert last.groups()[:4] == ("sim", "q8_0", "12", "0")
    assert report["backend"] == "sim" and report["counters"]["cycles"] > 0 and report["gguf_checked"] > 0
