#!/usr/bin/env bash
# KB verify + load times and peak memory: the shipped KB, the product brief's size (5,500 entities,
# 12,500 relationships) and 100,000 / 250,000; plus the unchanged-KB check. Needs the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
BIN=target/release/cloud-optimizer
work=$(mktemp -d); db=bench_kb_$$
trap 'rm -rf "$work"; psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null' EXIT
measure() { # label cmd...
  /usr/bin/time -f "%e %M" -o "$work/time" "${@:2}" >/dev/null
  read -r secs kb < "$work/time"
  printf '%-44s %6.2f s  peak RSS %5.0f MB\n' "$1" "$secs" "$(echo "$kb/1024" | bc -l)"
}
run() { # label dir
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -qc "CREATE DATABASE $db" >/dev/null
  DATABASE_URL="$PG/$db?sslmode=disable" $BIN migrate >/dev/null 2>&1
  measure "$1: kb verify" $BIN kb verify "$2"
  measure "$1: kb load (verify + load)" env DATABASE_URL="$PG/$db?sslmode=disable" $BIN kb load "$2"
  measure "$1: kb load again (unchanged)" env DATABASE_URL="$PG/$db?sslmode=disable" $BIN kb load "$2"
}
run "shipped KB" data/compliance
python3 bench/gen_kb.py "$work/brief" 5500 12500 && $BIN kb manifest "$work/brief" >/dev/null
run "5,500 entities / 12,500 relationships" "$work/brief"
python3 bench/gen_kb.py "$work/large" 100000 250000 && $BIN kb manifest "$work/large" >/dev/null
run "100,000 entities / 250,000 relationships" "$work/large"
