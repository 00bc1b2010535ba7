#!/usr/bin/env bash
# Builds the optimised analysers (Cargo.toml says why this crate exists) and times them with
# bench/documents_speed.py. Extra arguments go to the script (`--repeat 10`).
set -euo pipefail
cd "$(dirname "$0")"
cp -n ../../fuzz/Cargo.lock Cargo.lock 2>/dev/null || true
cargo build --release --quiet
cd ../..
exec python3 bench/documents_speed.py --binary bench/documents-release/target/release/analyse_document "$@"
