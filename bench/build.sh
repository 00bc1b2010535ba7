#!/usr/bin/env bash
# Builds what the benchmark scripts run: the release binary, a copy built with the
# bench-no-ledger feature (billing turned off, for the ledger comparison) and the hello-world
# baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --features bench-no-ledger --bin cloud-optimizer
cp target/release/cloud-optimizer target/release/cloud-optimizer-no-ledger
cargo build --release --locked --bin cloud-optimizer --example hello
