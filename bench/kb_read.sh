#!/usr/bin/env bash
# KB read latency at 50 clients: control detail and search, with the per-replica answer cache off
# (KB_CACHE_ENTRIES=0, every request goes to PostgreSQL) and on, in one run. Also control detail
# over every control of the shipped KB in turn (no two consecutive requests alike).
# Needs: target/release/cloud-optimizer (bench/build.sh or cargo build --release; BIN picks another,
# e.g. the binary copied out of the image), wrk, PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10s}; CONN=${CONN:-50}; THREADS=${THREADS:-2}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
KEY=bench-bootstrap-key-0123456789abcdefghijklmnop
db=bench_kbread_$$
lua=$(mktemp --suffix .lua)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
COLD=$(port); WARM=$(port)
psql "$PG/postgres" -qc "CREATE DATABASE $db" >/dev/null
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -f "$lua"; psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null' EXIT

wait_ready() { for _ in $(seq 1 500); do curl -fs "http://127.0.0.1:$1/health/ready" >/dev/null && return 0; sleep 0.02; done; echo "not ready: $1" >&2; exit 1; }
serve() { # port extra-env...
  env DATABASE_URL="$PG/$db?sslmode=disable" PORT="$1" METRICS_PORT=0 LOG_LEVEL=error DATABASE_MAX_CONNECTIONS=20 BOOTSTRAP_ADMIN_API_KEY=$KEY \
      RATE_LIMIT_PER_MINUTE=100000000 RATE_LIMIT_IP_PER_MINUTE=100000000 "${@:2}" ${BIN:-target/release/cloud-optimizer} serve &
  wait_ready "$1"
}
serve $COLD KB_CACHE_ENTRIES=0
serve $WARM
run_wrk() { # url [script]
  wrk -t"$THREADS" -c"$CONN" -d"$DUR" --latency -H "Authorization: Bearer $KEY" ${2:+-s "$2"} "$1" \
    | awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$NF} END {print rps, p99, (bad ? bad : 0)}'
}
# Every control id of the shipped KB, for a rotating control-detail load.
{
  echo 'local ids = {'
  psql "$PG/$db" -Atc "SELECT format('%L,', id) FROM kb_controls WHERE version_id = (SELECT id FROM kb_versions WHERE active) ORDER BY id" \
    | sed "s/''/\\\\'/g"
  echo '}'
  cat <<'LUA'
local n = 0
request = function()
  n = n + 1
  local id = ids[(n % #ids) + 1]:gsub("[^%w%-%._~:@]", function(c) return string.format("%%%02X", string.byte(c)) end)
  return wrk.format("GET", "/api/v1/kb/controls/" .. id)
end
LUA
} > "$lua"

echo "wrk -t$THREADS -c$CONN -d$DUR on loopback; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in "KB_CACHE_ENTRIES=0:$COLD" "cached answers:$WARM"; do
  label=${mode%%:*}; p=${mode##*:}
  for path in "/api/v1/kb/controls/pci-dss:8.4.2" "/api/v1/kb/search?q=encrypt%20s3%20buckets%20at%20rest" "/api/v1/kb/search?q=PCI%20DSS%208.4.2"; do
    curl -fs -H "Authorization: Bearer $KEY" "http://127.0.0.1:$p$path" >/dev/null
    read -r rps p99 bad < <(run_wrk "http://127.0.0.1:$p$path")
    printf '%-16s %-58s %9s req/s  p99 %9s  non-2xx %s\n' "$label" "$path" "$rps" "$p99" "$bad"
  done
  read -r rps p99 bad < <(run_wrk "http://127.0.0.1:$p" "$lua")
  printf '%-16s %-58s %9s req/s  p99 %9s  non-2xx %s\n' "$label" "/api/v1/kb/controls/{every control in turn}" "$rps" "$p99" "$bad"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
