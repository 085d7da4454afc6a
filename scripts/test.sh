#!/usr/bin/env bash
# Runs every test of the workspace. Installs what it needs (the Rust crates, via cargo).
# Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found. Install Rust from your OS packages or rustup, then re-run." >&2
  exit 1
fi

# Build once (debug, shared by unit, integration and system tests), then run everything.
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cargo build --workspace --all-targets --locked
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}" 2>&1 | tee "$LOG"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1

# The official OpenAI Python client against the gateway (real processes). Installs the client in
# a virtualenv under target/ (PyPI).
VENV=target/py-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || { echo "error: python3 -m venv failed; install python3-venv" >&2; exit 1; }
fi
if ! "$VENV/bin/python" -c "import openai" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet "openai>=1.40" || { echo "error: could not install the openai Python package from PyPI (needed by tests/python)" >&2; exit 1; }
fi
GPUFLEET_BIN=target/debug/gpufleet "$VENV/bin/python" tests/python/test_openai_client.py | tee -a "$LOG"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1

# One closing line over every runner above.
awk '/test result:/ { p += $4; f += $6 } /^openai: [0-9]+ passed/ { p += $2; f += $4 } END { printf "total: %d passed, %d failed\n", p, f }' "$LOG"
