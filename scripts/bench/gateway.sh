#!/usr/bin/env bash
# Gateway benchmark, in one run on this machine against one backend:
#   1. requests/s and latency with wrk: direct to the backend, through nginx
#      (proxy_pass with upstream keep-alive, as many workers as the gateway
#      has threads) and through the gateway; the ratio gateway / nginx;
#   2. the per-event latency an SSE event gains through the gateway, measured
#      with direct streams, gateway streams with the stream recorder on (the
#      default; it writes to the local Redis) and a second gateway with it
#      off, all running at the same time;
#   3. resident memory per open SSE stream with STREAMS idle streams held
#      (last, so that freeing those streams does not disturb the others).
# Installs wrk and nginx from Debian's packages when missing. Everything it
# starts listens on 127.0.0.1 and is stopped on exit.
#
# Knobs: DURATION (10s), CONNECTIONS (64), ROUNDS (5), STREAMS (10000),
#        LATENCY_STREAMS (20), LATENCY_EVENTS (500), LATENCY_INTERVAL_MS (10).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
# The benchmarks measure the proxy: no edge token check and no per-client
# or per-user caps (every load client shares 127.0.0.1 and no user); the
# measured gateway keeps its per-address cap on, above the stream count, so
# that its cost is in the figures.
# Every route goes to the one backend here, so the routes share its pool:
# a route's share of it is not capped (deployed, the agent has a pool of its own).
export GATEWAY_AUTH=off GATEWAY_MAX_REQUESTS_PER_CLIENT=0 GATEWAY_MAX_REQUESTS_PER_USER=0 GATEWAY_MAX_STREAMS_PER_USER=0
export GATEWAY_ROUTE_MAX_POOL_PERCENT=100

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
ROUNDS=${ROUNDS:-5}
STREAMS=${STREAMS:-10000}
LATENCY_STREAMS=${LATENCY_STREAMS:-20}
LATENCY_EVENTS=${LATENCY_EVENTS:-500}
LATENCY_INTERVAL_MS=${LATENCY_INTERVAL_MS:-10}
THREADS=$(nproc)
BACKEND_PORT=19000 GATEWAY_PORT=18080 NGINX_PORT=18081 NOTEE_PORT=18082

command -v wrk >/dev/null 2>&1 || apt_install wrk
command -v nginx >/dev/null 2>&1 || apt_install nginx-light
require_rust
TARGET=$(target_dir)
require_curl
cargo build --release --locked -p gateway -p bench >/dev/null 2>&1 || cargo build --release --locked -p gateway -p bench

ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# The gateway holds two descriptors per stream (client and upstream side).
max_streams=$(( ($(ulimit -n) - 200) / 2 ))
if [ "$STREAMS" -gt "$max_streams" ]; then
  echo "note: open-file limit $(ulimit -n) (hard limit; raising it needs CAP_SYS_RESOURCE) allows $max_streams streams, not $STREAMS" >&2
  STREAMS=$max_streams
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$TARGET"/release/dwp-bench backend $BACKEND_PORT & backend_pid=$!; pids+=("$backend_pid")
RUST_LOG=warn SERVER_HOST=127.0.0.1 SERVER_PORT=$GATEWAY_PORT ADMIN_PORT=$((GATEWAY_PORT + 1000)) \
  AURA_PLATFORM_URI=http://127.0.0.1:$BACKEND_PORT MAIN_SERVICE_URI=http://127.0.0.1:$BACKEND_PORT \
  GATEWAY_POOL_MAX_CONNECTIONS=$((STREAMS + 1000)) GATEWAY_SSE_HEARTBEAT_SECS=15 \
  GATEWAY_MAX_REQUESTS_PER_CLIENT=$((STREAMS + 1000)) \
  "$TARGET"/release/gateway & gateway_pid=$!; pids+=("$gateway_pid")
RUST_LOG=warn SERVER_HOST=127.0.0.1 SERVER_PORT=$NOTEE_PORT ADMIN_PORT=off GATEWAY_RECORDER_ENABLED=false \
  AURA_PLATFORM_URI=http://127.0.0.1:$BACKEND_PORT MAIN_SERVICE_URI=http://127.0.0.1:$BACKEND_PORT \
  "$TARGET"/release/gateway & pids+=("$!")

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
    listen 127.0.0.1:$NGINX_PORT;
$(nginx_proxy_location)
  }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work" & nginx_pid=$!; pids+=("$nginx_pid")

wait_for "curl -fsS http://127.0.0.1:$BACKEND_PORT/main/bench" 20
wait_for "curl -fsS http://127.0.0.1:$GATEWAY_PORT/api/main/bench" 20
wait_for "curl -fsS http://127.0.0.1:$NOTEE_PORT/api/main/bench" 20
wait_for "curl -fsS http://127.0.0.1:$NGINX_PORT/api/main/bench" 20

# CPU time (user + system, clock ticks) of the given processes and their threads.
cpu_ticks() {
  local total=0 pid stat
  for pid in "$@"; do
    for stat in /proc/"$pid"/task/*/stat; do
      read -r -a f < <(sed 's/.*) //' "$stat")
      total=$((total + f[11] + f[12]))
    done
  done
  echo "$total"
}

run_wrk() { # name url pids... -> prints a line on stderr, the req/s on stdout
  local name=$1 url=$2; shift 2
  local c0 c1 out rps p50 p99 reqs cpu errors
  c0=$(cpu_ticks "$@")
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$url")
  c1=$(cpu_ticks "$@")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  cpu=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$reqs" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  printf '%-8s %12s req/s   p50 %8s   p99 %8s   CPU %5s us/request   %s\n' "$name" "$rps" "$p50" "$p99" "$cpu" "$errors" >&2
  echo "$rps $cpu"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "== HTTP: wrk -t$THREADS -c$CONNECTIONS -d$DURATION, GET of a small JSON body, $ROUNDS alternating rounds (cores: $THREADS)" >&2
nginx_pids=$(pgrep -P "$nginx_pid" | tr '\n' ' ')
direct=$(run_wrk direct "http://127.0.0.1:$BACKEND_PORT/main/bench" "$backend_pid" | cut -d' ' -f1)
# Warm-up, not counted: upstream connections opened, allocator arenas grown.
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$NGINX_PORT/api/main/bench" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$GATEWAY_PORT/api/main/bench" >/dev/null
: >"$work/nginx.rps"; : >"$work/gateway.rps"
for ((round = 1; round <= ROUNDS; round++)); do
  # shellcheck disable=SC2086
  run_wrk nginx "http://127.0.0.1:$NGINX_PORT/api/main/bench" $nginx_pids >>"$work/nginx.rps"
  run_wrk gateway "http://127.0.0.1:$GATEWAY_PORT/api/main/bench" "$gateway_pid" >>"$work/gateway.rps"
done
nginx_rps=$(cut -d' ' -f1 "$work/nginx.rps" | median)
gateway_rps=$(cut -d' ' -f1 "$work/gateway.rps" | median)
nginx_cpu=$(cut -d' ' -f2 "$work/nginx.rps" | median)
gateway_cpu=$(cut -d' ' -f2 "$work/gateway.rps" | median)
# Each gateway round with the nginx round just before it: the ratio of a
# pair is free of the machine's slow drift, which moves both alike.
pair_ratio=$(paste -d' ' "$work/nginx.rps" "$work/gateway.rps" | awk '{ print $3 / $1 }' | median)
awk -v g="$gateway_rps" -v n="$nginx_rps" -v d="$direct" -v gc="$gateway_cpu" -v nc="$nginx_cpu" -v p="$pair_ratio" \
  'BEGIN { printf "median req/s: nginx %.0f, gateway %.0f   ratio gateway/nginx %.2f   gateway/direct %.2f   (target: gateway/nginx >= 1.00)\nmedian of the per-round ratios (each gateway round / the nginx round before it): %.3f\nmedian CPU per request: nginx %.1f us, gateway %.1f us   ratio %.2f\n", n, g, g / n, g / d, p, nc, gc, gc / nc }'

echo "== SSE per-event latency: $LATENCY_STREAMS streams each direct, through the gateway (recorder on) and through a gateway with the recorder off, all at the same time, $LATENCY_EVENTS events every ${LATENCY_INTERVAL_MS} ms each"
path="/aura/test/stream?events=$LATENCY_EVENTS&interval_ms=$LATENCY_INTERVAL_MS"
"$TARGET"/release/dwp-bench latency "127.0.0.1:$BACKEND_PORT" "$path" "$LATENCY_STREAMS" >"$work/direct.lat" &
direct_job=$!
"$TARGET"/release/dwp-bench latency "127.0.0.1:$NOTEE_PORT" "/api$path" "$LATENCY_STREAMS" >"$work/notee.lat" &
notee_job=$!
"$TARGET"/release/dwp-bench latency "127.0.0.1:$GATEWAY_PORT" "/api$path" "$LATENCY_STREAMS" >"$work/gateway.lat"
wait $direct_job $notee_job
direct_lat=$(cat "$work/direct.lat")
gateway_lat=$(cat "$work/gateway.lat")
notee_lat=$(cat "$work/notee.lat")
recorded=$(curl -fsS "http://127.0.0.1:$((GATEWAY_PORT + 1000))/metrics" | awk '/^gateway_recorder_events_total / {print $2}')
dropped=$(curl -fsS "http://127.0.0.1:$((GATEWAY_PORT + 1000))/metrics" | awk '/^gateway_recorder_dropped_total / {print $2}')
echo "direct            $direct_lat"
echo "gateway           $gateway_lat   (recorder: $recorded events written, $dropped dropped)"
echo "gateway, no tee   $notee_lat"
awk -v d="$direct_lat" -v g="$gateway_lat" -v n="$notee_lat" 'BEGIN {
  split(d, a, " "); split(g, b, " "); split(n, c, " ");
  printf "added per-event latency: p50 %d us, p99 %d us   (target: p99 < 1000 us)\n", b[4] - a[4], b[6] - a[6];
  printf "recorder on vs off: p50 %d vs %d us, p99 %d vs %d us   (p50 ratio %.2f)\n", b[4], c[4], b[6], c[6], b[4] / c[4] }'

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo "== SSE memory: $STREAMS concurrent idle streams held through the gateway"
before=$(rss_kib $gateway_pid)
"$TARGET"/release/dwp-bench streams "127.0.0.1:$GATEWAY_PORT" "/api/aura/test/stream?events=0" "$STREAMS" 8 >"$work/streams.out" &
streams_pid=$!
wait_for "grep -q '^open' $work/streams.out" 120
sleep 2
during=$(rss_kib $gateway_pid)
open_line=$(cat "$work/streams.out")
open_gauge=$(curl -fsS "http://127.0.0.1:$((GATEWAY_PORT + 1000))/metrics" | awk '/^gateway_open_streams / {print $2}')
wait $streams_pid || true
awk -v b="$before" -v d="$during" -v n="$STREAMS" -v o="$open_line" -v g="$open_gauge" \
  'BEGIN { printf "%s   gateway open-stream gauge %s   RSS before %d KiB, with streams %d KiB   per stream %.1f KiB   (target <= 32 KiB)\n", o, g, b, d, (d - b) / n }'
