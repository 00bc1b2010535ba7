#!/usr/bin/env bash
# Throughput and p99 of an authenticated small JSON endpoint (GET /api/v1/keys/self) as a ratio to
# a bare axum hello world, measured in the same run with wrk on loopback; in-process and
# Redis-backed rate limiting separately; then KB search and control-detail latency at 50 clients.
# Needs: the binaries from bench/build.sh, wrk, PostgreSQL, Redis. BIN picks the server binary
# (e.g. the one copied out of the image); without target/release/examples/hello or
# target/release/cloud-optimizer-no-ledger the comparisons that need them are skipped and said so.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10s}; CONN=${CONN:-50}; THREADS=${THREADS:-2}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
KEY=bench-bootstrap-key-0123456789abcdefghijklmnop
db=bench_tp_$$
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
HELLO=$(port); LOCAL=$(port); REDIS=$(port); COLD=$(port); NOLEDGER=$(port)
psql "$PG/postgres" -qc "CREATE DATABASE $db" >/dev/null
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null' EXIT

wait_ready() { for _ in $(seq 1 500); do curl -fs "http://127.0.0.1:$1$2" >/dev/null && return 0; sleep 0.02; done; echo "not ready: $1" >&2; exit 1; }
set -o pipefail
run_wrk() { # url [header]
  wrk -t"$THREADS" -c"$CONN" -d"$DUR" --latency ${2:+-H "$2"} "$1" \
    | awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} END {print rps, p99}'
}

HELLO_BIN=target/release/examples/hello; NOLEDGER_BIN=target/release/cloud-optimizer-no-ledger
[ -x "$HELLO_BIN" ] && { $HELLO_BIN 127.0.0.1:$HELLO & wait_ready $HELLO /hello; }
serve() { # port extra-env...
  env DATABASE_URL="$PG/$db?sslmode=disable" PORT="$1" METRICS_PORT=0 LOG_LEVEL=error DATABASE_MAX_CONNECTIONS=20 BOOTSTRAP_ADMIN_API_KEY=$KEY \
      RATE_LIMIT_PER_MINUTE=100000000 RATE_LIMIT_IP_PER_MINUTE=100000000 "${@:2}" ${BIN:-target/release/cloud-optimizer} serve &
  wait_ready "$1" /health/ready
}
serve $LOCAL
serve $COLD KB_CACHE_ENTRIES=0
[ -x "$NOLEDGER_BIN" ] && BIN=$NOLEDGER_BIN serve $NOLEDGER
serve $REDIS REDIS_URL=redis://127.0.0.1:6379 REDIS_KEY_PREFIX="bench$$:"

hello_rps=
[ -x "$HELLO_BIN" ] && read -r hello_rps hello_p99 < <(run_wrk http://127.0.0.1:$HELLO/hello)
read -r local_rps local_p99 < <(run_wrk http://127.0.0.1:$LOCAL/api/v1/keys/self "Authorization: Bearer $KEY")
read -r redis_rps redis_p99 < <(run_wrk http://127.0.0.1:$REDIS/api/v1/keys/self "Authorization: Bearer $KEY")
ratio() { if [ -n "$2" ]; then python3 -c "print(f'{$1/$2:.2f}')"; else echo "n/a (no hello binary)"; fi; }
echo "wrk -t$THREADS -c$CONN -d$DUR on loopback, server ${BIN:-target/release/cloud-optimizer}"
if [ -n "$hello_rps" ]; then
  echo "hello world (bare axum):                 $hello_rps req/s, p99 $hello_p99"
else
  echo "hello world (bare axum):                 skipped ($HELLO_BIN not built)"
fi
echo "GET /api/v1/keys/self, in-process limits: $local_rps req/s, p99 $local_p99, ratio $(ratio "$local_rps" "$hello_rps")"
echo "GET /api/v1/keys/self, Redis limits:      $redis_rps req/s, p99 $redis_p99, ratio $(ratio "$redis_rps" "$hello_rps"), Redis/in-process $(ratio "$redis_rps" "$local_rps")"
# Steady state: one request fills each cached answer first (the KB version does not change).
for path in "/api/v1/kb/search?q=encrypt%20s3%20buckets%20at%20rest" "/api/v1/kb/search?q=PCI%20DSS%208.4.2" "/api/v1/kb/controls/pci-dss:8.4.2"; do
  curl -fs -H "Authorization: Bearer $KEY" "http://127.0.0.1:$LOCAL$path" >/dev/null
done
read -r s_rps s_p99 < <(run_wrk "http://127.0.0.1:$LOCAL/api/v1/kb/search?q=encrypt%20s3%20buckets%20at%20rest" "Authorization: Bearer $KEY")
read -r i_rps i_p99 < <(run_wrk "http://127.0.0.1:$LOCAL/api/v1/kb/search?q=PCI%20DSS%208.4.2" "Authorization: Bearer $KEY")
read -r c_rps c_p99 < <(run_wrk "http://127.0.0.1:$LOCAL/api/v1/kb/controls/pci-dss:8.4.2" "Authorization: Bearer $KEY")
read -r s2_rps s2_p99 < <(run_wrk "http://127.0.0.1:$COLD/api/v1/kb/search?q=encrypt%20s3%20buckets%20at%20rest" "Authorization: Bearer $KEY")
read -r i2_rps i2_p99 < <(run_wrk "http://127.0.0.1:$COLD/api/v1/kb/search?q=PCI%20DSS%208.4.2" "Authorization: Bearer $KEY")
read -r c2_rps c2_p99 < <(run_wrk "http://127.0.0.1:$COLD/api/v1/kb/controls/pci-dss:8.4.2" "Authorization: Bearer $KEY")
echo "KB search (text), cached answers:        $s_rps req/s, p99 $s_p99"
echo "KB search (control id), cached answers:  $i_rps req/s, p99 $i_p99"
echo "KB control detail, cached answers:       $c_rps req/s, p99 $c_p99"
echo "KB search (text), KB_CACHE_ENTRIES=0:        $s2_rps req/s, p99 $s2_p99"
echo "KB search (control id), KB_CACHE_ENTRIES=0:  $i2_rps req/s, p99 $i2_p99"
echo "KB control detail, KB_CACHE_ENTRIES=0:       $c2_rps req/s, p99 $c2_p99"
# Billable actions through the ledger (action write + usage record in one transaction), and the
# same endpoint from the bench-no-ledger build (billing turned off), in the same run.
post() { # port
  wrk -t"$THREADS" -c"$CONN" -d"$DUR" --latency -s "/tmp/co_bench_post_$$.lua" -H "Authorization: Bearer $KEY" \
    "http://127.0.0.1:$1/api/v1/billable-actions" | awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} END {print rps, p99}'
}
cat > "/tmp/co_bench_post_$$.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"dimension": "ChatQuestions", "input": "benchmark question"}'
wrk.headers["Content-Type"] = "application/json"
LUA
read -r b_rps b_p99 < <(post "$LOCAL")
echo "POST /api/v1/billable-actions, ledger:      $b_rps req/s, p99 $b_p99"
if [ -x "$NOLEDGER_BIN" ]; then
  read -r n_rps n_p99 < <(post "$NOLEDGER")
  echo "POST /api/v1/billable-actions, billing off: $n_rps req/s, p99 $n_p99, ledger ratio $(ratio "$b_rps" "$n_rps")"
else
  echo "POST /api/v1/billable-actions, billing off: skipped ($NOLEDGER_BIN not built)"
fi
rm -f "/tmp/co_bench_post_$$.lua"
