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
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-2}"
