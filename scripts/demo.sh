#!/usr/bin/env bash
# The embedded default, end to end in simulation: generate the Verilog, then hold the quantizer and
# dequantizer of every format to the golden model bit for bit, and summarize.
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
for fmt in q8_0 q4_0 q4_1; do
    echo "== kvpath sim --format $fmt --simulator $SIM --vectors $VECTORS =="
    if out=$($KVPATH sim --format "$fmt" --simulator "$SIM" --vectors "$VECTORS"); then
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
