#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's
# callgrind: a figure that does not move with the machine's load
# (requests/s on two shared cores move by +-15 % from run to run).
#
# Each proxy runs with one worker (one thread) under callgrind in front of
# the same backend (nginx, 1 KiB answers); `dwp-bench sequential` sends N1,
# then (in a second run) N2 GETs on one keep-alive connection, each with a
# valid token and the identity headers of one of USERS users in turn;
# (instructions(N2) - instructions(N1)) / (N2 - N1) is the cost of one
# request with start-up and shutdown cancelled out. Rows:
#   gateway          as deployed: token check, caps, trace context on;
#   gateway, new tokens  the same, but every request's token is one it has
#                    not seen (the cost of a token's first verification);
#   proxy only       the token check and the caps off;
#   nginx, haproxy   the references of scripts/bench/gateway.sh (same header
#                    work), with keep-alive requests unlimited so that no
#                    reconnection is counted.
# Kernel work is not counted: see docs/PERFORMANCE.md for system calls.
#
# Installs valgrind, nginx and haproxy from Debian's packages when missing.
# Knobs: N1 (2000), N2 (6000), USERS (100).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

N1=${N1:-2000}
N2=${N2:-6000}
USERS=${USERS:-100}
BACKEND_PORT=19200 PROXY_PORT=18200
JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export JWT_SECRET

command -v valgrind >/dev/null 2>&1 || apt_install valgrind
command -v nginx >/dev/null 2>&1 || apt_install nginx-light
command -v haproxy >/dev/null 2>&1 || apt_install haproxy
require_rust
TARGET=$(target_dir)
require_curl
cargo build --release --locked -p gateway -p bench >/dev/null 2>&1 || cargo build --release --locked -p gateway -p bench

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -f "$work/backend.pid" ]; then kill "$(cat "$work/backend.pid" 2>/dev/null)" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$TARGET"/release/dwp-bench tokens "$JWT_SECRET" "$USERS" >"$work/users"
"$TARGET"/release/dwp-bench tokens "$JWT_SECRET" "$N2" >"$work/fresh"
require_free_ports $BACKEND_PORT $PROXY_PORT
nginx_backend_config $BACKEND_PORT "$work" >"$work/backend.conf"
nginx -c "$work/backend.conf" -p "$work" & pids+=($!)
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
haproxy_config $PROXY_PORT $BACKEND_PORT 1 >"$work/haproxy.cfg"

# count NAME REQUESTS: runs the proxy NAME under callgrind for REQUESTS
# requests and prints the total instructions.
count() {
  local name=$1 requests=$2 out="$work/$1.$2.callgrind" pid tokens=$work/users
  local gw_env=(env RUST_LOG=warn SERVER_HOST=127.0.0.1 "SERVER_PORT=$PROXY_PORT" ADMIN_PORT=off
    GATEWAY_WORKER_THREADS=1 GATEWAY_RECORDER_ENABLED=false
    "AURA_PLATFORM_URI=http://127.0.0.1:$BACKEND_PORT" "MAIN_SERVICE_URI=http://127.0.0.1:$BACKEND_PORT")
  local plain_env=(GATEWAY_AUTH=off GATEWAY_MAX_REQUESTS_PER_CLIENT=0 GATEWAY_MAX_REQUESTS_PER_USER=0
    GATEWAY_MAX_STREAMS_PER_USER=0)
  local callgrind=(valgrind --tool=callgrind --callgrind-out-file="$out")
  case $name in
    gateway) "${gw_env[@]}" "${callgrind[@]}" "$TARGET"/release/gateway >/dev/null 2>&1 & ;;
    fresh)
      tokens=$work/fresh
      "${gw_env[@]}" "${callgrind[@]}" "$TARGET"/release/gateway >/dev/null 2>&1 &
      ;;
    plain) "${gw_env[@]}" "${plain_env[@]}" "${callgrind[@]}" "$TARGET"/release/gateway >/dev/null 2>&1 & ;;
    nginx) "${callgrind[@]}" nginx -c "$work/nginx.conf" -p "$work" >/dev/null 2>&1 & ;;
    haproxy) "${callgrind[@]}" haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>&1 & ;;
  esac
  pid=$!
  wait_for "curl -sS -o /dev/null http://127.0.0.1:$PROXY_PORT/api/main/bench" 60
  BENCH_TOKENS=$tokens "$TARGET"/release/dwp-bench sequential "127.0.0.1:$PROXY_PORT" /api/main/bench "$requests"
  # SIGINT stops the gateway, SIGQUIT nginx, SIGUSR1 haproxy (soft stop);
  # each exits and callgrind writes its file.
  case $name in
    nginx) kill -QUIT "$pid" 2>/dev/null || true ;;
    haproxy) kill -USR1 "$pid" 2>/dev/null || true ;;
    *) kill -INT "$pid" 2>/dev/null || true ;;
  esac
  wait "$pid" 2>/dev/null || true
  awk '/^(summary|totals):/ {print $2; exit}' "$out"
}

per_request() {
  local a b
  a=$(count "$1" "$N1")
  b=$(count "$1" "$N2")
  echo $(((b - a) / (N2 - N1)))
}

echo "== user-space instructions per proxied GET (callgrind, one worker, $N2 - $N1 requests on one keep-alive connection, tokens of $USERS users in turn)"
gateway=$(per_request gateway)
fresh=$(per_request fresh)
plain=$(per_request plain)
nginx=$(per_request nginx)
haproxy=$(per_request haproxy)
echo "gateway              $gateway instructions/request   (token check, caps, trace context: as deployed)"
echo "gateway, new tokens  $fresh instructions/request   (every token verified for the first time)"
echo "proxy only           $plain instructions/request   (no token check, no caps)"
echo "nginx                $nginx instructions/request"
echo "haproxy              $haproxy instructions/request"
awk -v g="$gateway" -v f="$fresh" -v p="$plain" -v n="$nginx" -v h="$haproxy" 'BEGIN {
  printf "ratio gateway/nginx %.3f   gateway/haproxy %.3f   (target: gateway/nginx <= 0.80)\n", g / n, g / h
  printf "new tokens/nginx %.3f   proxy only/nginx %.3f\n", f / n, p / n }'
