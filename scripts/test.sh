#!/usr/bin/env bash
# Runs every test: Rust unit + integration tests (release profile, the one
# profile this project builds), then the Python client examples and tests
# against the real binary. Safe on a fresh machine: it creates what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

# The same target dir `cargo run --release -- serve` builds into (cargo's
# own ./target unless CARGO_TARGET_DIR is set; .ci/run sets it to a
# persistent cache), so DuckDB is compiled once for both README commands.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
mkdir -p "$target_dir"

# The vendored DuckDB (vendor/README.md): cargo judges a path dependency by
# file times, which a fresh clone sets to now. When the target dir was built
# from identical vendored files (same hash), give them their old times back
# so DuckDB is not compiled again.
vendor_sum=$(find vendor/libduckdb-sys -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
vendor_stamp="$target_dir/.vendor-$vendor_sum"
if [ -e "$vendor_stamp" ]; then
  find vendor/libduckdb-sys -exec touch -h -d '2026-01-01 00:00:00' {} +
fi

echo "== cargo build --release"
cargo build --release --all-targets
touch "$vendor_stamp"
echo "== cargo test --release"
cargo test --release -- --test-threads 4

# The status-page test drives Debian's Chromium, headless and offline.
if ! command -v chromium >/dev/null; then
  echo "== installing chromium (Debian) for the status-page test"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get install -y -q chromium >/dev/null || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
fi

# Python clients: a venv keyed by the requirements, reused across runs.
req=tests/python/requirements.txt
venv="$HOME/.cache/duckflock/venv-$(sha256sum "$req" | cut -c1-12)"
if [ ! -x "$venv/bin/pytest" ]; then
  echo "== creating Python venv $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
fi
export DUCKFLOCK_BIN="$target_dir/release/duckflock"

echo "== client examples (clients/)"
"$venv/bin/python" clients/run_examples.py

echo "== pytest (ADBC, pyarrow, polars, pandas vs in-process DuckDB)"
"$venv/bin/pytest" -q tests/python
