"""``kvpath selftest`` (kvpath/tools/selftest.py): the check a user runs on the board, run here on the
model and on the simulated top (Icarus), so what runs on the board is tested code."""

import os
import re
import subprocess
import sys

SEED = int(os.environ.get("KVPATH_SEED", "3"))
SMALL = ["--layers", "5", "--kv-heads", "1", "--head-dim", "64", "--window", "6", "--sinks", "2",
         "--seed", str(SEED), "--no-progress"]
LAST = re.compile(r"^selftest backend=(\w+) format=(\w+) tokens=(\d+) mismatches=(\d+) bytes=(\d+) mb_per_s=(\d+\.\d\d)$")


def selftest(tmp_path, *args):
    out = subprocess.run([sys.executable, "-m", "kvpath.cli", "selftest", *args, "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"seed={SEED}: {out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    lines = out.stdout.strip().splitlines()
    last = LAST.match(lines[-1])
    assert last, f"last line {lines[-1]!r}"
    return last.groups(), out.stdout


def test_model_backend(tmp_path):
    (backend, fmt, tokens, mismatches, nbytes, _), _ = selftest(
        tmp_path, "--backend", "model", "--tokens", "200", "--read-every", "64", *SMALL)
    assert (backend, fmt, tokens, mismatches) == ("model", "q8_0", "200", "0")
    # Bandwidth phase: 200 tokens x 5 layers x 1 head x K,V rows of 68 bytes, plus one read of each.
    assert int(nbytes) > 200 * 5 * 2 * 68


def test_sim_backend_icarus(tmp_path):
    (backend, _, tokens, mismatches, _, _), stdout = selftest(
        tmp_path, "--backend", "sim", "--simulator", "icarus", "--tokens", "24", "--bandwidth-tokens", "8",
        "--read-every", "8", *SMALL)
    assert (backend, tokens, mismatches) == ("sim", "24", "0")
    assert re.search(r"simulated cycles: \d+\.\d\d B/cycle", stdout), stdout
