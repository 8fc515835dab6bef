"""The Verilog ``kvpath generate`` writes, hashed: a refactor of the Python must not change it.

``tests/data/generated_verilog.json`` holds the SHA-256 of every Verilog file ``kvpath generate``
writes for every format x element type at the default lane counts (quantizer, dequantizer, CSR
block, top level). A change that is meant to alter the hardware rewrites the file in its own
commit, with its reason and its regression run:

    .venv/bin/python tests/top/test_generated_verilog.py
"""

import hashlib
import json
import re
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from kvpath.cli import main
from kvpath.config import ELEM_TYPES, FORMATS

HASHES = Path(__file__).parent / "data" / "generated_verilog.json"
CASES = [(fmt, elem) for fmt in FORMATS for elem in ELEM_TYPES]
# Generating the KV cache top takes ~15 s per configuration, so the default suite checks one
# configuration per (family, element type) and the datapath variants that differ most; the other
# configurations run with KVPATH_LONG=1 (and every one is rewritten by this file's __main__).
DEFAULT_CASES = {("q8_0", "fp16"), ("q4_1", "bf16"), ("q4_0", "bf16"), ("mxfp4", "fp16"),
                 ("mxint8", "bf16"), ("int4_pc", "bf16"), ("int8_ph", "fp16")}
PARAMS = [pytest.param(fmt, elem, id=f"{fmt}-{elem}",
                       marks=() if (fmt, elem) in DEFAULT_CASES else pytest.mark.long)
          for fmt, elem in CASES]


def generated(fmt: str, elem: str) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        if main(["generate", "-o", str(out), "--format", fmt, "--input", elem]) != 0:
            raise RuntimeError(f"kvpath generate failed for {fmt}/{elem}")
        return {p.name: p.read_bytes() for p in sorted(out.glob("*.v"))}


def generated_hashes(fmt: str, elem: str) -> dict[str, str]:
    return {name: hashlib.sha256(text).hexdigest() for name, text in generated(fmt, elem).items()}


def always_blocks_without_reset(verilog: str) -> list[str]:
    """The ``always @*`` blocks that no reset term wakes. Icarus runs such a block only when one of
    its inputs changes, so while they all keep their time-0 values its outputs stay unknown: a
    constant first block gave unknown codes that way (ff8d96f, and the BF16 unit after it)."""
    blocks = re.findall(r"always @\* begin\n(.*?)\n  end\n", verilog, re.S)
    return [b for b in blocks if "rst" not in b]


@pytest.mark.parametrize("fmt,elem", PARAMS)
def test_generated_verilog_unchanged(fmt, elem):
    files = generated(fmt, elem)
    got = {name: hashlib.sha256(text).hexdigest() for name, text in files.items()}
    key = f"{fmt}/{elem}"
    for name, text in files.items():
        free = always_blocks_without_reset(text.decode())
        assert not free, f"{key}: {name} has {len(free)} always blocks no reset wakes; first:\n{free[0][:400]}"
    want = json.loads(HASHES.read_text())[key]
    assert set(got) == set(want), f"{key}: generate wrote {sorted(got)}, expected {sorted(want)}"
    changed = [name for name in want if got[name] != want[name]]
    assert not changed, f"{key}: generated Verilog changed: {', '.join(changed)}"


if __name__ == "__main__":
    with ProcessPoolExecutor(2) as pool:
        hashes = dict(zip((f"{f}/{e}" for f, e in CASES), pool.map(generated_hashes, *zip(*CASES))))
    HASHES.parent.mkdir(exist_ok=True)
    HASHES.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    print(f"wrote {HASHES} ({len(hashes)} configurations)", file=sys.stderr)
