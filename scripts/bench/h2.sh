#!/usr/bin/env bash
# HTTP/2 benchmark, in one run on this machine against one backend: h2load
# (Debian's nghttp2-client) over TLS with ALPN h2 through the gateway and
# through nginx with HTTP/2 (as many workers as the gateway has threads,
# upstream keep-alive over HTTP/1.1), in alternating rounds; the ratio
# gateway / nginx per round and its median. Both use the same certificate
# (a throw-away one for localhost). Installs h2load, nginx and openssl from
# Debian's packages when missing. Everything listens on 127.0.0.1 and is
# stopped on exit.
#
# Knobs: REQUESTS (200000), CLIENTS (16), STREAMS (32 per connection), ROUNDS (3).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
export GATEWAY_AUTH=off GATEWAY_MAX_REQUESTS_PER_CLIENT=0 GATEWAY_MAX_REQUESTS_PER_USER=0 GATEWAY_MAX_STREAMS_PER_USER=0
export GATEWAY_ROUTE_MAX_POOL_PERCENT=100

REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-16}
STREAMS=${STREAMS:-32}
ROUNDS=${ROUNDS:-3}
THREADS=$(nproc)
BACKEND_PORT=19200 GATEWAY_PORT=18280 NGINX_PORT=18281

command -v h2load >/dev/null 2>&1 || apt_install nghttp2-client
command -v nginx >/dev/null 2>&1 || apt_install nginx-light
command -v openssl >/dev/null 2>&1 || apt_install openssl
require_rust
require_curl
TARGET=$(target_dir)
cargo build --release --locked -p gateway -p bench >/dev/null 2>&1 || cargo build --release --locked -p gateway -p bench

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/key.pem" \
  -out "$work/cert.pem" -days 2 -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null

"$TARGET"/release/dwp-bench backend $BACKEND_PORT & pids+=("$!")
RUST_LOG=warn SERVER_HOST=127.0.0.1 SERVER_PORT=$GATEWAY_PORT ADMIN_PORT=off GATEWAY_RECORDER_ENABLED=false \
  AURA_PLATFORM_URI=http://127.0.0.1:$BACKEND_PORT MAIN_SERVICE_URI=http://127.0.0.1:$BACKEND_PORT \
  GATEWAY_TLS_CERT_FILE="$work/cert.pem" GATEWAY_TLS_KEY_FILE="$work/key.pem" GATEWAY_H2_MAX_STREAMS=$STREAMS \
  "$TARGET"/release/gateway & gateway_pid=$!; pids+=("$gateway_pid")
cat >"$work/nginx.conf" <<NGINX
worker_processes $THREADS;
pid $work/nginx.pid;
error_log $work/error.log warn;
daemon off;
events { worker_connections 65536; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT ssl http2;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    http2_max_concurrent_streams $STREAMS;
    keepalive_requests 100000000;
$(nginx_proxy_location)
  }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work" & pids+=("$!")
wait_for "curl -fsS http://127.0.0.1:$BACKEND_PORT/main/bench" 20
wait_for "curl -fsS --cacert $work/cert.pem https://localhost:$GATEWAY_PORT/api/main/bench" 20
wait_for "curl -fsS --cacert $work/cert.pem https://localhost:$NGINX_PORT/api/main/bench" 20

run_h2load() { # name port -> req/s on stdout, the line on stderr
  local out rps
  out=$(h2load -n "$REQUESTS" -c "$CLIENTS" -m "$STREAMS" -t 1 "https://127.0.0.1:$2/api/main/bench" 2>&1)
  # Requests that succeeded per second (a proxy closing connections early
  # does not count the requests it never served).
  rps=$(awk '/^finished in/ {gsub("s,", "", $3); t = $3} /^requests:/ {ok = $8} END {printf "%.0f", ok / t}' <<<"$out")
  printf '%-8s %10s req/s   %s   %s\n' "$1" "$rps" "$(grep -E '^requests:' <<<"$out")" "$(grep -E 'TLS Protocol|Application protocol' <<<"$out" | tr '\n' ' ')" >&2
  echo "$rps"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "== HTTP/2 over TLS: h2load -n $REQUESTS -c $CLIENTS -m $STREAMS, GET of a small JSON body, $ROUNDS alternating rounds (cores: $THREADS)" >&2
h2load -n 20000 -c "$CLIENTS" -m "$STREAMS" "https://127.0.0.1:$NGINX_PORT/api/main/bench" >/dev/null 2>&1
h2load -n 20000 -c "$CLIENTS" -m "$STREAMS" "https://127.0.0.1:$GATEWAY_PORT/api/main/bench" >/dev/null 2>&1
: >"$work/ratios"
for ((round = 1; round <= ROUNDS; round++)); do
  n=$(run_h2load nginx $NGINX_PORT)
  g=$(run_h2load gateway $GATEWAY_PORT)
  awk -v g="$g" -v n="$n" 'BEGIN { printf "%.3f\n", g / n }' | tee -a "$work/ratios" | sed 's/^/round ratio gateway\/nginx /'
done
echo "median of the per-round ratios gateway/nginx (HTTP/2, TLS): $(median <"$work/ratios")"
