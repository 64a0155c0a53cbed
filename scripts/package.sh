#!/usr/bin/env bash
# A lean release binary: dist/duckflock without its debug info (symbols
# kept, so a panic's backtrace still names every function), and
# dist/duckflock.debug beside it with the line tables, which Rust's
# backtraces find through the binary's .gnu_debuglink (file:line when the
# .debug file sits next to the binary). Usage: scripts/package.sh [out-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --bin duckflock
mkdir -p "$out"
bin="$target_dir/release/duckflock"
cp "$bin" "$out/duckflock.tmp"
objcopy --only-keep-debug "$out/duckflock.tmp" "$out/duckflock.debug"
strip --strip-debug "$out/duckflock.tmp"
(cd "$out" && objcopy --add-gnu-debuglink=duckflock.debug duckflock.tmp)
mv "$out/duckflock.tmp" "$out/duckflock"
ls -l "$bin" "$out/duckflock" "$out/duckflock.debug" | awk '{printf "%6.1f MB  %s\n", $5 / 1e6, $NF}'
