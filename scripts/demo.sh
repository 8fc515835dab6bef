#!/usr/bin/env bash
# The embedded default, end to end in simulation: generate the Verilog (datapaths, register block, KV
# cache top, register map), then `kvpath demo`: the driver decodes a Gemma-3n-E4B-shaped workload
# through the simulated KV cache top (AXI4 masters into a RAM model, sink + window eviction), checks
# every read against the engine model and every DDR region against gguf, and dumps the regions so
# they can be checked with gguf alone.
set -euo pipefail
cd "$(dirname "$0")/.."
KVPATH=.venv/bin/kvpath
SIM=${KVPATH_DEMO_SIM:-verilator}

echo "== kvpath generate (default configuration) =="
$KVPATH generate -o build/verilog
echo
echo "== kvpath demo --simulator $SIM --dump build/demo/dump =="
$KVPATH demo --simulator "$SIM" --out build/demo --dump build/demo/dump "$@"
