#!/usr/bin/env bash
# The embedded default, end to end in simulation: generate the Verilog (datapaths, register block, top
# level, register map), then hold the quantizer and dequantizer of each format family -- ggml, OCP MX,
# static scales, FP16 and BF16 -- to the golden model bit for bit, and summarize.
set -euo pipefail
cd "$(dirname "$0")/.."
KVPATH=.venv/bin/kvpath
SIM=${KVPATH_DEMO_SIM:-verilator}
VECTORS=${KVPATH_DEMO_VECTORS:-262144}

echo "== kvpath generate (default configuration) =="
$KVPATH generate -o build/verilog
echo
summary=()
status=0
for case in q8_0:fp16 q4_0:fp16 q4_1:fp16 mxfp4:fp16 q8_0:bf16 int4_pc:bf16; do
    fmt=${case%%:*} elem=${case##*:}
    echo "== kvpath sim --format $fmt --input $elem --simulator $SIM --vectors $VECTORS =="
    if out=$($KVPATH sim --format "$fmt" --input "$elem" --simulator "$SIM" --vectors "$VECTORS"); then
        summary+=("$(tail -n 1 <<<"$out")")
    else
        summary+=("$(tail -n 1 <<<"$out") FAILED")
        status=1
    fi
    echo "$out"
    echo
done
echo "== summary (quantizer and dequantizer vs golden model, bit-exact) =="
printf '%s\n' "${summary[@]}"
exit $status
