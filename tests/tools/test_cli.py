"""The kvpath command line: what it writes, what it prints last, and how it refuses bad input."""

import subprocess
import sys

import pytest

from kvpath.cli import main


def kvpath(*args):
    return subprocess.run([sys.executable, "-m", "kvpath.cli", *args], capture_output=True, text=True)


def test_generate_writes_both_blocks(tmp_path, capsys):
    assert main(["generate", "-o", str(tmp_path), "--format", "q4_0", "--lanes", "8"]) == 0
    out = capsys.readouterr().out
    for module in ("kvpath_quantizer", "kvpath_dequantizer"):
        text = (tmp_path / f"{module}.v").read_text()
        assert f"module {module}(" in text.replace(" (", "(")
        assert str(tmp_path / f"{module}.v") in out


@pytest.mark.parametrize("args,message", [
    (["generate", "-o", "x", "--format", "q3_k"], "invalid choice"),
    (["generate", "-o", "x", "--lanes", "12"], "12 is not one of 8, 16, 32"),
    (["sim", "--lanes", "64"], "64 is not one of 8, 16, 32"),
    (["sim", "--simulator", "xsim"], "invalid choice"),
    (["sim", "--vectors", "-5"], "must be positive"),
    (["sim", "--vectors", "lots"], "is not an integer"),
    (["sim", "--ops", "10"], "--ops applies to --target ring only"),
    (["generate", "-o", "x", "--elems-per-clock", "2"], "elements per clock must be one of (4, 8, 16, 32)"),
    (["generate", "-o", "x", "--format", "int8_ph", "--elems-per-clock", "4"], "for block-scaled formats"),
    (["synth", "--target", "dequantizer", "--elems-per-clock", "4"], "for the quantizer of a block-scaled"),
    (["sim", "--elems-per-clock", "4"], "--elems-per-clock needs --target quantizer"),
    (["sim", "--target", "quantizer", "--elems-per-clock", "2"], "elements per clock must be one of (4, 8, 16, 32)"),
    (["sim", "--target", "ring", "--elems-per-clock", "4"], "--elems-per-clock needs --target quantizer"),
    (["generate", "-o", "x", "--lanes", "8", "--elems-per-clock", "16"], "is more than its 8 lanes"),
    (["synth", "--all", "--elems-per-clock", "4"], "not to --all"),
    (["synth", "--elems-per-clock", "0"], "elements per clock must be one of"),
    (["sim", "--target", "quantizer", "--lanes", "8", "--elems-per-clock", "16"], "is more than its 8 lanes"),
])
def test_bad_arguments_get_a_message_not_a_traceback(args, message):
    r = kvpath(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_sim_last_line_contract(tmp_path):
    r = kvpath("sim", "--simulator", "icarus", "--format", "q8_0", "--lanes", "32", "--read-lanes", "32",
               "--vectors", "2048", "--seed", "3", "--build-dir", str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    last = r.stdout.strip().splitlines()[-1]
    fields = dict(kv.split("=") for kv in last.split())
    # The six contract keys come first, in order; ``input`` (the element type) was appended by issue 3.
    assert list(fields) == ["format", "simulator", "lanes", "vectors", "mismatches", "beats_per_cycle", "input"]
    assert fields["input"] == "fp16"
    assert fields["format"] == "q8_0" and fields["simulator"] == "icarus" and fields["lanes"] == "32"
    assert fields["vectors"] == "2048" and fields["mismatches"] == "0"
    # Rate targets live in test_rtl_regression; a 2048-element run is mostly pipeline fill.
    assert 0.5 < float(fields["beats_per_cycle"]) <= 1.0
