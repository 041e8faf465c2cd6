#!/usr/bin/env bash
# User-space instructions per proxied request, gateway and nginx, counted by
# valgrind's callgrind: a figure that does not move with the machine's load
# (requests/s on two shared cores move by +-15 % from run to run).
#
# Each proxy runs with one worker under callgrind in front of the same
# backend; `dwp-bench sequential` sends N1, then (in a second run) N2 GETs on
# one keep-alive connection; (instructions(N2) - instructions(N1)) / (N2 - N1)
# is the cost of one request with start-up and shutdown cancelled out. The
# nginx configuration is the one of scripts/bench/gateway.sh (same header
# work), with keep-alive requests unlimited so that no reconnection is counted.
# Kernel work is not counted: see docs/PERFORMANCE.md for system calls.
#
# Installs valgrind and nginx from Debian's packages when missing. Knobs:
# N1 (2000), N2 (6000).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
# The benchmarks measure the proxy: no edge token check and no per-client
# per-user caps (no user); the per-address cap stays at its default (1024),
# so that its cost is counted.
export GATEWAY_AUTH=off GATEWAY_MAX_REQUESTS_PER_USER=0 GATEWAY_MAX_STREAMS_PER_USER=0

N1=${N1:-2000}
N2=${N2:-6000}
BACKEND_PORT=19200 PROXY_PORT=18200

command -v valgrind >/dev/null 2>&1 || apt_install valgrind
command -v nginx >/dev/null 2>&1 || apt_install nginx-light
require_rust
TARGET=$(target_dir)
require_curl
cargo build --release --locked -p gateway -p bench >/dev/null 2>&1 || cargo build --release --locked -p gateway -p bench

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$TARGET"/release/dwp-bench backend $BACKEND_PORT & pids+=($!)
wait_for "curl -fsS http://127.0.0.1:$BACKEND_PORT/main/bench" 20

cat >"$work/nginx.conf" <<NGINX
master_process off;
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$PROXY_PORT;
$(nginx_proxy_location)
  }
}
NGINX

# count NAME REQUESTS: runs the proxy NAME under callgrind for REQUESTS
# requests and prints the total instructions.
count() {
  local name=$1 requests=$2 out="$work/$1.$2.callgrind" pid
  case $name in
    gateway)
      RUST_LOG=warn SERVER_HOST=127.0.0.1 SERVER_PORT=$PROXY_PORT ADMIN_PORT=off GATEWAY_WORKER_THREADS=1 \
        GATEWAY_RECORDER_ENABLED=false \
        AURA_PLATFORM_URI=http://127.0.0.1:$BACKEND_PORT MAIN_SERVICE_URI=http://127.0.0.1:$BACKEND_PORT \
        valgrind --tool=callgrind --callgrind-out-file="$out" "$TARGET"/release/gateway >/dev/null 2>&1 &
      ;;
    nginx)
      valgrind --tool=callgrind --callgrind-out-file="$out" \
        nginx -c "$work/nginx.conf" -p "$work" >/dev/null 2>&1 &
      ;;
  esac
  pid=$!
  wait_for "curl -fsS http://127.0.0.1:$PROXY_PORT/api/main/bench" 60
  "$TARGET"/release/dwp-bench sequential "127.0.0.1:$PROXY_PORT" /api/main/bench "$requests"
  # SIGINT stops the gateway, SIGQUIT nginx; both exit and callgrind writes its file.
  kill -INT "$pid" 2>/dev/null || true
  if [ "$name" = nginx ]; then kill -QUIT "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

per_request() {
  local a b
  a=$(count "$1" "$N1")
  b=$(count "$1" "$N2")
  echo $(((b - a) / (N2 - N1)))
}

echo "== user-space instructions per proxied GET (callgrind, one worker, $N2 - $N1 requests on one keep-alive connection)"
gateway=$(per_request gateway)
nginx=$(per_request nginx)
echo "gateway  $gateway instructions/request"
echo "nginx    $nginx instructions/request"
awk -v g="$gateway" -v n="$nginx" 'BEGIN { printf "ratio gateway/nginx %.3f   (below 1: less user-space work per request than nginx)\n", g / n }'
