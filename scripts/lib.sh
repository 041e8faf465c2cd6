# shellcheck shell=bash
# Shared shell helpers for the project's scripts. Source it; do not run it.

# Runs a command as root (directly when we are root, else through sudo).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs Debian packages, refreshing the package index once if needed.
apt_install() {
  echo "==> installing $* (Debian packages)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
  }
}

# The highest version-named entry of directory $1 (empty when none), e.g.
# the newest PostgreSQL under /usr/lib/postgresql.
newest_in() {
  local entries=("$1"/*)
  [ -e "${entries[0]}" ] || return 0
  printf '%s\n' "${entries[@]##*/}" | sort -V | tail -n 1
}

# Waits up to $2 seconds (default 30) for the command in $1 to succeed.
wait_for() {
  local check=$1 limit=${2:-30} i
  for ((i = 0; i < limit * 10; i++)); do
    if eval "$check" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for: $check" >&2
  return 1
}

# Fails with a clear message when the Rust toolchain is missing or too old.
require_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: install Rust 1.94 or newer (https://rustup.rs) and retry." >&2
    exit 1
  fi
}

# Installs curl when missing (the scripts use it for health checks).
# Where cargo puts what it builds: CARGO_TARGET_DIR, build.target-dir in a
# cargo configuration, or ./target (cargo itself says which).
target_dir() {
  cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

require_curl() {
  command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
}

# Benchmarks run main-service against a database of their own, never the
# development one: bench_db_create NAME creates it and prints its URL,
# bench_db_drop NAME drops it. BENCH_PG_ADMIN is a role that may create
# databases (scripts/services.sh gives dwp_user CREATEDB).
BENCH_PG_ADMIN=${BENCH_PG_ADMIN:-postgres://dwp_user:dwp_password@127.0.0.1:5432/dwp_main}
bench_db_create() {
  psql -w "$BENCH_PG_ADMIN" -qc "CREATE DATABASE $1" >/dev/null
  echo "${BENCH_PG_ADMIN%/*}/$1"
}
bench_db_drop() {
  psql -w "$BENCH_PG_ADMIN" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null 2>&1 || true
}
# Removes a benchmark's consumer group from both streams main-service reads.
bench_groups_drop() {
  for stream in dwp:agent-task-events dwp:hitl-decisions; do
    redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" XGROUP DESTROY "$stream" "$1" >/dev/null 2>&1 || true
  done
}
# Waits until main-service's consumer group $1 exists on stream $2: a group
# that starts at `$` skips whatever is added before it is created.
wait_for_group() {
  wait_for "redis-cli -u ${REDIS_URL:-redis://127.0.0.1:6379} XINFO GROUPS $2 | grep -qx '$1'" 20
}

# The nginx reference's proxy location for the benchmarks: proxy_pass to the
# upstream block `backend` over kept-alive HTTP/1.1, with the same header work
# as the gateway (X-Forwarded-*, a request id sent upstream and returned).
nginx_proxy_location() {
  cat <<'NGINX'
    location /api/ {
      proxy_pass http://backend/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Prefix /api;
      proxy_set_header X-Request-ID $request_id;
      add_header X-Request-ID $request_id;
      proxy_buffering off;
    }
NGINX
}

# Fails when a server already answers on one of the given ports: a stale
# one would answer for the benchmark's own and spoil its figures.
require_free_ports() {
  local port
  for port in "$@"; do
    if curl -sS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then
      echo "port $port is taken by another server: stop it first" >&2
      exit 1
    fi
  done
}

# The HAProxy reference's configuration (Debian's haproxy 2.6): $1 the port
# it listens on, $2 the backend's port, $3 its threads. Upstream connections
# are kept and shared between clients (`http-reuse always`), and it does the
# header work nginx_proxy_location does: X-Forwarded-*, the /api prefix
# stripped, a request id sent upstream and returned.
haproxy_config() {
  cat <<HAPROXY
global
  nbthread $3
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  http-reuse always
frontend proxy
  bind 127.0.0.1:$1
  option forwardfor
  unique-id-format %[uuid()]
  unique-id-header X-Request-ID
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Prefix /api
  http-response set-header X-Request-ID %[unique-id]
  default_backend upstream
backend upstream
  http-request replace-path /api(/.*) \1
  server backend 127.0.0.1:$2
HAPROXY
}

# A backend nginx with one worker on port $1 answering every GET with a
# 1 KiB JSON body: the upstream of the throughput rounds, the same for every
# proxy. $2 is its working directory (pid and error log).
nginx_backend_config() {
  local body
  body=$(printf '{"ok":true,"pad":"%s"}' "$(printf 'x%.0s' $(seq 1 1004))")
  cat <<NGINX
worker_processes 1;
pid $2/backend.pid;
error_log $2/backend-error.log warn;
daemon off;
events { worker_connections 65536; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$1;
    default_type application/json;
    location / { return 200 '$body'; }
  }
}
NGINX
}
