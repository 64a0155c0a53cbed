#!/usr/bin/env bash
# Rebuilds vendor/libduckdb-sys/duckdb.tar.gz: the DuckDB 2.0.0 sources of
# the crates.io release of libduckdb-sys 1.20000.1 with
# vendor/duckdb-2.0.0-duckflock.patch applied (see vendor/README.md).
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl -sSfL https://static.crates.io/crates/libduckdb-sys/libduckdb-sys-1.20000.1.crate -o "$work/crate.tgz"
tar xzf "$work/crate.tgz" -C "$work"
tar xzf "$work/libduckdb-sys-1.20000.1/duckdb.tar.gz" -C "$work"
(cd "$work/duckdb" && patch -p1 < "$OLDPWD/duckdb-2.0.0-duckflock.patch")
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2026-01-01 00:00:00' \
    -czf libduckdb-sys/duckdb.tar.gz -C "$work" duckdb
echo "wrote vendor/libduckdb-sys/duckdb.tar.gz; run: cargo clean --release -p libduckdb-sys"
