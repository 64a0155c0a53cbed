#!/usr/bin/env bash
# Crash soak: the kill -9 test with many more kills (default 100), then the
# convergence test. Usage: scripts/soak.sh [rounds]. Needs a built binary
# and the test venv (run scripts/test.sh once).
set -euo pipefail
cd "$(dirname "$0")/.."
req=tests/python/requirements.txt
venv="$HOME/.cache/duckflock/venv-$(sha256sum "$req" | cut -c1-12)"
export DUCKFLOCK_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/duckflock"
export DUCKFLOCK_CRASH_ROUNDS="${1:-100}"
exec "$venv/bin/pytest" -q tests/python/test_replication.py -k "kill_9 or converge"
