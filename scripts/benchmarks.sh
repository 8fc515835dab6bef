#!/usr/bin/env bash
# Re-measure every figure of docs/benchmarks.md. Slow (tens of minutes): not part of `make test`.
# Each section prints the exact command it ran before its output.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
KVPATH=.venv/bin/kvpath
run() { echo; echo "\$ $*"; "$@"; }

run $KVPATH bench golden
for fmt in q8_0 q4_0 q4_1; do
    run $KVPATH sim --simulator verilator --format "$fmt" --vectors 4194304 --build-dir build/bench
    run $KVPATH sim --simulator icarus --format "$fmt" --vectors 65536 --build-dir build/bench
done
for fmt in q8_0 q4_0 q4_1; do
    run $KVPATH synth --target quantizer --format "$fmt" --lanes 8 16 32
    run $KVPATH synth --target dequantizer --format "$fmt" --lanes 8 16 32
done

# Issue 3: MX formats and BF16 input; SQNR of every format against gguf / gfloat.
run $KVPATH sqnr
for fmt in mxfp4 mxint8 mxfp8_e4m3; do
    for elem in fp16 bf16; do
        run $KVPATH sim --simulator verilator --format "$fmt" --input "$elem" --lanes 16 --read-lanes 32 --vectors 262144 --build-dir build/bench
    done
done
for fmt in q8_0 q4_0 q4_1; do
    run $KVPATH sim --simulator verilator --format "$fmt" --input bf16 --vectors 262144 --build-dir build/bench
done
for fmt in mxfp4 mxint8 mxfp8_e4m3 q8_0 q4_0 q4_1; do
    for elem in fp16 bf16; do
        run $KVPATH synth --target quantizer --format "$fmt" --input "$elem" --lanes 16
        run $KVPATH synth --target dequantizer --format "$fmt" --input "$elem" --lanes 16
    done
done

# Issue 4: static-scale formats, calibration, register block, top level.
run $KVPATH calibrate --data student-t
run $KVPATH calibrate --data channel-structured
for fmt in int4_pc int8_pc int4_ph int8_ph; do
    run $KVPATH sim --simulator verilator --format "$fmt" --vectors 262144 --build-dir build/bench
    run $KVPATH synth --target quantizer --format "$fmt" --lanes 16
    run $KVPATH synth --target dequantizer --format "$fmt" --lanes 16
done
run $KVPATH synth --target csr --format q8_0 --lanes 16
run $KVPATH synth --target top --format int4_pc --lanes 16
run $KVPATH synth --target top --format q8_0 --lanes 16
run $KVPATH bench movers
run $KVPATH bench engine
run $KVPATH synth --target kvcache --format q8_0 --lanes 16
