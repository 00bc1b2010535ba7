#!/usr/bin/env bash
# Builds what the benchmark scripts run: the release binary, a copy built with the
# bench-no-ledger feature (billing turned off, for the ledger comparison) and the hello-world
# baseline.
#
# QUICK=1 builds them with a cheaper profile than the shipped one (no LTO, default codegen units,
# the aws-sdk-* crates at opt-level 1), for machines where the shipped fat-LTO build does not
# finish in the time at hand. Figures from it are not the shipped binary's; say so beside them.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/quick-profile.sh
cargo build "${QUICK_PROFILE[@]}" --release --locked --features bench-no-ledger --bin cloud-optimizer
cp target/release/cloud-optimizer target/release/cloud-optimizer-no-ledger
cargo build "${QUICK_PROFILE[@]}" --release --locked --bin cloud-optimizer --example hello
