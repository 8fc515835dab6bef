#!/usr/bin/env bash
# Re-measure every figure of docs/benchmarks.md. Slow (tens of minutes): not part of `make test`.
# Each section prints the exact command it ran before its output.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
KVPATH=.venv/bin/kvpath
PY=.venv/bin/python
run() { echo; echo "\$ $*"; "$@"; }

run $PY -m kvpath.golden.bench
for fmt in q8_0 q4_0 q4_1; do
    run $KVPATH sim --simulator verilator --format "$fmt" --vectors 4194304 --build-dir build/bench
    run $KVPATH sim --simulator icarus --format "$fmt" --vectors 65536 --build-dir build/bench
done
for fmt in q8_0 q4_0 q4_1; do
    run $PY -m kvpath.hdl.synth --target quantizer --format "$fmt" --lanes 8 16 32
    run $PY -m kvpath.hdl.synth --target dequantizer --format "$fmt" --lanes 8 16 32
done
