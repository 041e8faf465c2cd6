#!/usr/bin/env bash
# Resumable streams benchmark, in one run on this machine against one backend
# (dwp-bench backend) and one gateway with its recorder and journal on the
# local Redis:
#   1. the live relay's added per-event latency on resumable streams
#      (X-DWP-Resumable: true) against non-resumable ones, both at once
#      through the same gateway (target: p99 within 0.5 ms);
#   2. resume latency with EVENTS events to replay: GET /api/streams/{id}
#      from the request to the first replayed byte, and to the end, against
#      a fresh stream's first byte as the reference;
#   3. resident memory per detached run (a resumable stream whose client
#      left), against an idle attached stream's.
# Everything it starts listens on 127.0.0.1 and is stopped on exit.
#
# Knobs: LATENCY_STREAMS (20), LATENCY_EVENTS (500), LATENCY_INTERVAL_MS (10),
#        EVENTS (1000), RESUMES (200), DETACHED (2000).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
export GATEWAY_AUTH=off GATEWAY_MAX_REQUESTS_PER_CLIENT=0 GATEWAY_MAX_REQUESTS_PER_USER=0 GATEWAY_MAX_STREAMS_PER_USER=0
export GATEWAY_ROUTE_MAX_POOL_PERCENT=100

LATENCY_STREAMS=${LATENCY_STREAMS:-20}
LATENCY_EVENTS=${LATENCY_EVENTS:-500}
LATENCY_INTERVAL_MS=${LATENCY_INTERVAL_MS:-10}
EVENTS=${EVENTS:-1000}
RESUMES=${RESUMES:-200}
DETACHED=${DETACHED:-2000}
BACKEND_PORT=19100 GATEWAY_PORT=18180

require_rust
require_curl
TARGET=$(target_dir)
cargo build --release --locked -p gateway -p bench >/dev/null 2>&1 || cargo build --release --locked -p gateway -p bench
bash scripts/services.sh >/dev/null

ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
pids=()
work=$(mktemp -d)
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$TARGET"/release/dwp-bench backend $BACKEND_PORT & pids+=("$!")
RUST_LOG=warn SERVER_HOST=127.0.0.1 SERVER_PORT=$GATEWAY_PORT ADMIN_HOST=127.0.0.1 ADMIN_PORT=$((GATEWAY_PORT + 1000)) \
  AURA_PLATFORM_URI=http://127.0.0.1:$BACKEND_PORT MAIN_SERVICE_URI=http://127.0.0.1:$BACKEND_PORT \
  GATEWAY_POOL_MAX_CONNECTIONS=$((DETACHED * 2 + 1000)) \
  "$TARGET"/release/gateway & gateway_pid=$!; pids+=("$gateway_pid")
wait_for "curl -fsS http://127.0.0.1:$BACKEND_PORT/main/bench" 20
wait_for "curl -fsS http://127.0.0.1:$GATEWAY_PORT/api/main/bench" 20
metric() { curl -fsS "http://127.0.0.1:$((GATEWAY_PORT + 1000))/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

echo "== live relay: $LATENCY_STREAMS resumable and $LATENCY_STREAMS plain streams at once, $LATENCY_EVENTS events every ${LATENCY_INTERVAL_MS} ms each"
path="/api/aura/test/stream?events=$LATENCY_EVENTS&interval_ms=$LATENCY_INTERVAL_MS"
BENCH_HEADER="X-DWP-Resumable: true" "$TARGET"/release/dwp-bench latency "127.0.0.1:$GATEWAY_PORT" "$path" "$LATENCY_STREAMS" >"$work/resumable.lat" &
job=$!
"$TARGET"/release/dwp-bench latency "127.0.0.1:$GATEWAY_PORT" "$path" "$LATENCY_STREAMS" >"$work/plain.lat"
wait $job
echo "plain       $(cat "$work/plain.lat")"
echo "resumable   $(cat "$work/resumable.lat")"
awk -v p="$(cat "$work/plain.lat")" -v r="$(cat "$work/resumable.lat")" 'BEGIN {
  split(p, a, " "); split(r, b, " ");
  printf "resumable minus plain: p50 %d us, p99 %d us   (target: p99 within 500 us)\n", b[4] - a[4], b[6] - a[6] }'

echo "== resume: $RESUMES resumes of a stream of $EVENTS events, each replaying all of them"
"$TARGET"/release/dwp-bench resume "127.0.0.1:$GATEWAY_PORT" "$EVENTS" "$RESUMES"

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
echo "== memory: $DETACHED idle streams attached, then $DETACHED resumable ones detached"
before=$(rss_kib "$gateway_pid")
"$TARGET"/release/dwp-bench streams "127.0.0.1:$GATEWAY_PORT" "/api/aura/test/stream?events=0" "$DETACHED" 6 >"$work/attached.out" &
job=$!
wait_for "grep -q '^open' $work/attached.out" 120
sleep 2
attached=$(rss_kib "$gateway_pid")
wait $job || true
sleep 2
base=$(rss_kib "$gateway_pid")
BENCH_HEADER="X-DWP-Resumable: true" "$TARGET"/release/dwp-bench streams "127.0.0.1:$GATEWAY_PORT" "/api/aura/test/stream?events=0" "$DETACHED" 1 >"$work/detached.out"
wait_for "[ \"\$(metric gateway_detached_runs)\" = \"$DETACHED\" ]" 60
sleep 2
detached=$(rss_kib "$gateway_pid")
awk -v b="$before" -v a="$attached" -v c="$base" -v d="$detached" -v n="$DETACHED" -v runs="$(metric gateway_detached_runs)" \
  'BEGIN { printf "attached idle stream %.1f KiB each (reference); detached run %.1f KiB each (%d detached runs held)   ratio %.2f\n", (a - b) / n, (d - c) / n, runs, ((d - c) / n) / ((a - b) / n) }'
