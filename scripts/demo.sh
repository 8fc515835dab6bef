#!/usr/bin/env bash
# The embedded default, end to end in simulation: generate the Verilog, then hold the quantizer and
# dequantizer of every format to the golden model bit for bit, and summarize.
set -euo pipefail
cd "$(dirname "$0")/.."
KVPATH=.venv/bin/kvpath
SIM=${KVPATH_DEMO_SIM:-verilator}
VECTORS=${KVPATH_DEMO_VECTORS:-65536}

echo "== kvpath generate (default configuration) =="
$KVPATH generate -o build/verilog
echo
summary=()
status=0
for fmt in q8_0 q4_0 q4_1; do
    echo "== kvpath sim --format $fmt --simulator $SIM --vectors $VECTORS =="
    if line=$($KVPATH sim --format "$fmt" --simulator "$SIM" --vectors "$VECTORS" | tee /dev/stderr | tail -n 1); then
        summary+=("$line")
    else
        summary+=("${line:-format=$fmt FAILED}")
        status=1
    fi
    echo
done
echo "== summary (quantizer and dequantizer vs golden model, bit-exact) =="
printf '%s\n' "${summary[@]}"
exit $status
