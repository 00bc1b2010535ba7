#!/usr/bin/env bash
# Notification WebSockets: resident memory of one instance holding N idle sockets, and how long
# one event takes to reach all of them; optionally the same across two replicas through Redis.
# Needs: target/release/cloud-optimizer and target/release/examples/ws_load
# (cargo build --release --bin cloud-optimizer --example ws_load), PostgreSQL; Redis for REPLICAS=2.
# N=10000 EVENTS=5 REPLICAS=1 bench/ws_load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}; EVENTS=${EVENTS:-5}; REPLICAS=${REPLICAS:-1}; HOLD=${HOLD:-10}
PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
REDIS=${BENCH_REDIS:-redis://127.0.0.1:6379}
KEY=bench-bootstrap-key-0123456789abcdefghijklmnop
db=bench_ws_$$
ulimit -n $((N + 4096))
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
psql "$PG/postgres" -qc "CREATE DATABASE $db" >/dev/null
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null' EXIT

wait_ready() { for _ in $(seq 1 1500); do curl -fs "http://127.0.0.1:$1/health/ready" >/dev/null && return 0; sleep 0.02; done; echo "not ready: $1" >&2; exit 1; }
extra=()
[ "$REPLICAS" -gt 1 ] && extra=(REDIS_URL="$REDIS" REDIS_KEY_PREFIX="bench_ws_$$:")
ports=(); pids=()
for _ in $(seq 1 "$REPLICAS"); do
  p=$(port)
  env DATABASE_URL="$PG/$db?sslmode=disable" PORT="$p" METRICS_PORT=0 LOG_LEVEL=error BOOTSTRAP_ADMIN_API_KEY=$KEY \
      RATE_LIMIT_PER_MINUTE=100000000 RATE_LIMIT_IP_PER_MINUTE=100000000 NOTIFICATIONS_MAX_CONNECTIONS=$((N + 100)) \
      "${extra[@]}" target/release/cloud-optimizer serve &
  pids+=($!); ports+=("$p")
  wait_ready "$p"
done
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
for i in "${!pids[@]}"; do echo "replica $i idle RSS: $(( $(rss "${pids[$i]}") / 1024 )) MiB"; done
urls=()
for p in "${ports[@]}"; do urls+=(--url "ws://127.0.0.1:$p/api/v1/notifications/ws"); done
# Events are published on the first replica; with two, half the sockets are on the other one.
target/release/examples/ws_load "${urls[@]}" --key $KEY --connections "$N" --hold "$HOLD" \
  --publish "http://127.0.0.1:${ports[0]}" --events "$EVENTS" &
client=$!
# Memory once every socket is open and idle (sampled during the hold).
for _ in $(seq 1 600); do sleep 1; [ "$(ss -Htn state established "( sport = :${ports[0]} )" | wc -l)" -ge $((N / REPLICAS)) ] && break; done
sleep 3
for i in "${!pids[@]}"; do echo "replica $i RSS with sockets open: $(( $(rss "${pids[$i]}") / 1024 )) MiB ($(ss -Htn state established "( sport = :${ports[$i]} )" | wc -l) sockets)"; done
wait $client
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
