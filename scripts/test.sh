#!/usr/bin/env bash
# Runs every test of the workspace. Installs what it needs (the Rust crates, via cargo).
# Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found. Install Rust from your OS packages or rustup, then re-run." >&2
  exit 1
fi

# The distributed-mode suites talk to real servers: Redis on 127.0.0.1:6379 and PostgreSQL on
# 127.0.0.1:5432 (database `test`, trust auth); GPUFLEET_TEST_REDIS_URL / GPUFLEET_TEST_POSTGRES_URL
# point elsewhere. A missing server fails the run here, with the command that starts it.
up() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
hostport() { local r=${1#*://}; r=${r##*@}; r=${r%%/*}; echo "${r%%:*} ${r##*:}"; }
missing=0
read -r RH RP <<<"$(hostport "${GPUFLEET_TEST_REDIS_URL:-redis://127.0.0.1:6379}")"
if ! up "$RH" "$RP"; then
  echo "error: Redis is not reachable at $RH:$RP (needed by the Redis broker suites). Start it with:" >&2
  echo "  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no" >&2
  missing=1
fi
read -r PH PP <<<"$(hostport "${GPUFLEET_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}")"
if ! up "$PH" "$PP"; then
  echo "error: PostgreSQL is not reachable at $PH:$PP (needed by the PostgreSQL suites). Start it with:" >&2
  echo "  pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start   (or: bash .ci/run)" >&2
  missing=1
fi
[ "$missing" -eq 0 ] || exit 1

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
