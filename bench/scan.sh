#!/usr/bin/env bash
# Scan benchmark: a moto account seeded with about RESOURCES resources in two regions
# (bench/scan_seed.py), one whole-account scan of both regions through the API; prints the
# scan's wall time, AWS calls, findings and the server's peak memory (VmHWM).
#   bash bench/scan.sh [RESOURCES]      (BIN=target/release/cloud-optimizer by default)
# With PROWLER=/path/to/prowler (PyPI `prowler` in a venv of its own), Prowler then runs the
# checks both tools have on the same moto account, and bench/scan_vs_prowler.py prints the
# verdict agreement; both wall times are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/services.sh
ensure_services
resources=${1:-2000}
bin=${BIN:-target/release/cloud-optimizer}
[ -x "$bin" ] || { echo "no $bin: run bash bench/build.sh (or set BIN)" >&2; exit 1; }
moto_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
db="co_bench_scan_$$"
key=bench-bootstrap-key-0123456789abcdefghijklmnop
MOTO_EC2_LOAD_DEFAULT_AMIS=false moto_server -H 127.0.0.1 -p "$moto_port" >/dev/null 2>&1 &
moto=$!
server=""
cleanup() { kill $moto ${server:-} 2>/dev/null || true; psql -q "${TEST_DATABASE_URL%/*}/postgres" -c "DROP DATABASE IF EXISTS $db" 2>/dev/null || true; }
trap cleanup EXIT
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
until curl -s "$AWS_ENDPOINT_URL" >/dev/null; do sleep 0.2; done
seeded=$(python3 bench/scan_seed.py "$resources")
psql -q "${TEST_DATABASE_URL%/*}/postgres" -c "CREATE DATABASE $db"
DATABASE_URL="${TEST_DATABASE_URL%/*}/$db" PORT=$port METRICS_PORT=0 BOOTSTRAP_ADMIN_API_KEY=$key \
  LOG_FORMAT=json RATE_LIMIT_PER_MINUTE=100000 "$bin" serve 2>/tmp/bench-scan-server.log &
server=$!
until curl -sf "localhost:$port/health/ready" >/dev/null; do sleep 0.2; done
id=$(curl -sf -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d '{"regions": ["us-east-1", "eu-west-1"]}' "localhost:$port/api/v1/scans" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
while curl -sf -H "Authorization: Bearer $key" "localhost:$port/api/v1/scans/$id" | grep -q '"status":"\(queued\|running\)"'; do sleep 0.5; done
peak=$(awk '/VmHWM/ {print $2 " " $3}' /proc/$server/status)
curl -sf -H "Authorization: Bearer $key" "localhost:$port/api/v1/scans/$id" | python3 -c "
import json, sys
s = json.load(sys.stdin)
print(json.dumps({'seeded': json.loads('''$seeded'''), 'status': s['status'], 'wall_seconds': s['duration_seconds'],
                  'aws_calls': s['aws_calls'], 'findings': s['counts'], 'units': s['progress']['total'],
                  'server_peak_rss': '$peak'}, indent=1))"
[ -n "${PROWLER:-}" ] || exit 0
out=$(mktemp -d)
curl -sf -H "Authorization: Bearer $key" "localhost:$port/api/v1/scans/$id/export?format=json" > "$out/ours.json"
"$PROWLER" aws --list-checks-json 2>/dev/null > "$out/prowler-checks.json"
checks=$(python3 - "$out/prowler-checks.json" <<'PY'
import glob, json, sys
have = set(json.load(open(sys.argv[1]))["aws"])
ours = set(json.load(open("tests/scans/whole_account.json")))
wanted = set()
for path in glob.glob("data/compliance/common/checks-*.json"):
    for check in json.load(open(path)):
        if check["id"] in ours:
            wanted |= set(check.get("refs", {}).get("prowler", [])) & have
print(" ".join(sorted(wanted)))
PY
)
started=$(date +%s.%N)
"$PROWLER" aws --region us-east-1 eu-west-1 --scan-unused-services --no-banner -c $checks \
  --output-formats json-ocsf --output-directory "$out" --output-filename prowler >"$out/prowler.log" 2>&1 || true
ended=$(date +%s.%N)
echo "prowler: $(echo "$checks" | wc -w) checks in $(python3 -c "print(round($ended - $started, 1))") s (log: $out/prowler.log)"
python3 bench/scan_vs_prowler.py "$out/ours.json" "$out/prowler.ocsf.json"
