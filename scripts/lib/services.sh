# Sourced by scripts that need PostgreSQL and Redis (scripts/test, scripts/sqlx-prepare).
# Uses whatever already answers at TEST_DATABASE_URL / TEST_REDIS_URL (any OS, any way it was
# started). When nothing answers on a local address it starts the installed servers (Debian's
# pg_ctlcluster, redis-server), installing them first only when they are missing and apt-get can
# be used (root or sudo); otherwise it prints the one-line `docker run` that starts each.

export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"

# host and port of a URL (scheme://[user[:pass]@]host[:port][/…]), in bash alone: this must
# work on a machine that has nothing installed yet.
_url_host_port() {
  local rest=${1#*://}; rest=${rest%%/*}; rest=${rest##*@}
  local host=${rest%:*} port=$2
  [ "$host" != "$rest" ] && port=${rest##*:}
  echo "${host:-127.0.0.1} $port"
}
read -r _pg_host _pg_port < <(_url_host_port "$TEST_DATABASE_URL" 5432)
read -r _redis_host _redis_port < <(_url_host_port "$TEST_REDIS_URL" 6379)

# A TCP connect is enough to tell "something answers": no client tools are needed for it.
# (`timeout` bounds a connect to an address that drops packets; macOS has no `timeout`.)
_answers() {
  if command -v timeout >/dev/null; then
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
  else
    bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
  fi
}
pg_up() { _answers "$_pg_host" "$_pg_port"; }
redis_up() { _answers "$_redis_host" "$_redis_port"; }
_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
_local() { case "$1" in 127.*|localhost|::1) return 0;; *) return 1;; esac; }
_can_apt() { command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null; }; }

_start_postgres() {
  if ! command -v pg_ctlcluster >/dev/null; then
    _can_apt || return 1
    echo "installing PostgreSQL…"
    _as_root apt-get update -qq && _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || return 1
  fi
  echo "starting PostgreSQL…"
  local version hba
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  _as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  # The tests connect as postgres over TCP without a password, as on the dev machines.
  hba=/etc/postgresql/$version/main/pg_hba.conf
  if ! _as_root grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    _as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    _as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  fi
}

_start_redis() {
  if ! command -v redis-server >/dev/null; then
    _can_apt || return 1
    echo "installing Redis…"
    _as_root apt-get update -qq && _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null || return 1
  fi
  echo "starting Redis…"
  # Some tests start a second redis-server of their own on a free port.
  redis-server --daemonize yes --bind 127.0.0.1 --port "$_redis_port" --save "" --appendonly no >/dev/null
}

_wait_for() { for _ in $(seq 1 100); do "$1" && return 0; sleep 0.2; done; return 1; }

ensure_services() {
  local missing=0
  if ! pg_up; then
    if _local "$_pg_host" && _start_postgres; then _wait_for pg_up || true; fi
  fi
  if ! redis_up; then
    if _local "$_redis_host" && _start_redis; then _wait_for redis_up || true; fi
  fi
  if ! pg_up; then
    missing=1
    cat >&2 <<MSG
PostgreSQL does not answer at $_pg_host:$_pg_port (TEST_DATABASE_URL=$TEST_DATABASE_URL).
Start one (version 14 or later) that accepts user postgres without a password, for example:
  docker run -d --name co-test-pg -p $_pg_port:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16
or point TEST_DATABASE_URL at one you have.
MSG
  fi
  if ! redis_up; then
    missing=1
    cat >&2 <<MSG
Redis does not answer at $_redis_host:$_redis_port (TEST_REDIS_URL=$TEST_REDIS_URL).
Start one, for example:
  docker run -d --name co-test-redis -p $_redis_port:6379 redis:7
or point TEST_REDIS_URL at one you have.
MSG
  fi
  return $missing
}
